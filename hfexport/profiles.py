"""Target profiles: typed, validated descriptions of where a bundle will run (targets/*.yaml)."""

from __future__ import annotations

import operator
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hfexport import host
from hfexport._shipped import list_shipped, resolve_named_yaml
from hfexport._yaml import load_model_file

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
Isa = Literal["amx", "avx512_vnni", "avx512", "avx2", "arm64", "generic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantPreset(_Strict):
    """How int8 is done for one ISA, like ORT's avx512_vnni / avx2 / arm64 presets."""

    isa: Isa
    weight_type: Literal["int8", "uint8"] = "int8"
    activation_type: Literal["int8", "uint8"] = "uint8"
    per_channel: bool = True
    # Without VNNI, u8*s8 multiply-adds saturate in 16 bits; 7-bit weights avoid the overflow.
    reduce_range: bool = False


class SessionOptions(_Strict):
    intra_op_threads: int = Field(0, ge=0, description="0 = one per physical core")
    inter_op_threads: int = Field(1, ge=0)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    # ONNX Runtime's session config entries (SessionOptions.add_session_config_entry); a build adds the ones its
    # graph needs (float weights stored in int8: session.disable_quant_qdq).
    config_entries: dict[str, str] = Field(default_factory=dict)
    # ONNX Runtime graph transformers the session must not run (InferenceSession's disabled_optimizers); a build
    # adds the ones that would undo its graph (cpu: SkipLayerNormFusion, docs/decisions/0195-...).
    disabled_optimizers: list[str] = Field(default_factory=list)


InferencePrecision = Literal["f32", "bf16", "f16", "auto"]


class OpenVINOOptions(_Strict):
    """How the OpenVINO runtime compiles a bundle (passed to `Core.compile_model` as properties)."""

    device: Literal["CPU", "GPU", "NPU", "AUTO"] = "CPU"
    # LATENCY: one stream using every thread, for batch-1 calls. THROUGHPUT: several streams; the
    # runtime splits a batch across them so each stream runs part of it in parallel.
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    # NOTE: always set. Left unset, OpenVINO picks bf16 on CPUs with AVX512-BF16 (and f16 on GPUs)
    # without saying so; the profile decides and the report records what the runtime actually used.
    # auto: bf16 on a CPU that computes bf16 natively (AVX512-BF16, AMX), f32 on other CPUs, the device's own
    # default elsewhere; resolved by the runtime on each machine (docs/decisions/0197). A quantize step
    # may set it for the bundle it makes (the openvino target's int4 LLMs: auto).
    inference_precision: InferencePrecision = "f32"
    # NOTE: always set, for the same reason: OpenVINO's own default on x86 is a u8 cache
    # (docs/decisions/0049-openvino-f32-inference-and-kv-cache.md).
    kv_cache_precision: Literal["f32", "bf16", "f16", "u8"] = "f32"
    streams: int | Literal["AUTO"] | None = Field(None, description="null = what the hint picks")
    cache_dir: str | None = Field(None, description="compiled-blob cache (saves GPU/NPU compile time); ~ expands")

    @model_validator(mode="after")
    def _check(self) -> OpenVINOOptions:
        if isinstance(self.streams, int) and self.streams < 1:
            raise ValueError("streams must be at least 1 (or AUTO, or null)")
        return self


class XlaOptions(_Strict):
    """How the xla backend exports and the runtime runs a bundle (jax.export; static shapes on a TPU)."""

    platforms: list[Literal["tpu", "cuda", "rocm", "cpu"]] = Field(
        default_factory=lambda: ["tpu", "cuda", "cpu"], min_length=1, description="jax.export lowers for each")
    device: Literal["tpu", "gpu", "cpu"] = Field("cpu", description="where the runtime runs it by default; "
                                                                     "hfexport.runtime.load(path, device=...) overrides")
    # NOTE: recorded, not applied to fp32 exports: jax's default matmul precision is one bf16 pass on a TPU.
    matmul_precision: Literal["default", "high", "highest"] = "default"
    # TPUs want static shapes: the runtime pads each batch up to the next bucket (and compiles each shape once).
    sequence_buckets: list[int] = Field(default_factory=lambda: [128, 256, 512])
    batch_buckets: list[int] = Field(default_factory=lambda: [1, 8, 32])
    # Text generation: the static KV cache holds this many tokens (at most the model's max length).
    cache_length: int = Field(1024, ge=8)
    # Compile-only TPU check at build time, when libtpu is installed (no TPU needed): topology names.
    compile_check: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> XlaOptions:
        for name in ("sequence_buckets", "batch_buckets"):
            values = getattr(self, name)
            if values != sorted(set(values)) or any(v < 1 for v in values):
                raise ValueError(f"{name} must be positive and increasing")
        return self


# -- `quantize:`: how the target runs a recipe's quantize step, one section type per backend -----------------
# A recipe's quantize step says the intent (precision, weights_only, group_size); each field below is the
# target's default for an option the recipe leaves unset, named as in the quantize pass's config.

WeightPrecision = Literal["fp32", "int8", "int4"]


class _QuantizeSection(_Strict):
    # int8 defaults that calibrate and so belong to static mode only (dynamic NNCF compresses weights only)
    _static_only: ClassVar[tuple[str, ...]] = ("smooth_quant_alpha", "calibration_samples")
    int8: BaseModel  # precision int8 on encoder models (weights and activations)
    weights_only: dict  # weights_only on encoder models, per precision
    llm: dict  # weights_only on text-generation (KV-cache) models, per precision

    def defaults(self, precision: str, weights_only: bool, generative: bool, explicit: dict[str, Any]) -> dict:
        """The options this target fills in for a quantize step; `explicit` holds what the recipe set."""
        if weights_only:
            table = self.llm if generative else self.weights_only
            chosen = table.get(precision)
            return chosen.model_dump(exclude_none=True) if chosen else {}
        if precision != "int8" or generative:
            return {}
        values = self.int8.model_dump(exclude_none=True)
        if explicit.get("mode", values.get("mode", "dynamic")) != "static":
            # The calibration settings belong to static mode only.
            for name in self._static_only:
                values.pop(name, None)
        else:  # and the storage of float weights to dynamic mode (a static graph's QDQ fusions need it off)
            values.pop("float_weight_storage", None)
            values.pop("attention_int8", None)
        return values


class OrtInt8Defaults(_Strict):
    mode: Literal["dynamic", "static"] | None = None
    op_types: list[str] | None = Field(None, min_length=1)
    calibration_samples: int | None = Field(None, ge=1)
    float_weight_storage: Literal["fp32", "int8"] | None = None  # mode dynamic
    attention_int8: Literal["auto"] | bool | None = None  # mode dynamic
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1)  # either mode (smooth.py)


class OrtWeightOnlyDefaults(_Strict):
    group_size: Literal[32, 64, 128] | None = None
    lm_head_precision: WeightPrecision | None = None
    embedding_precision: WeightPrecision | None = None
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = None
    int4_top1_target: float | None = Field(None, gt=0, le=1)
    symmetric_weights: bool | None = None


class OnnxRuntimeQuantize(_QuantizeSection):
    """ONNX Runtime's quantisers: int8 QDQ/dynamic (flavoured by `quant_presets`), MatMulNBits, fp16."""

    _static_only: ClassVar[tuple[str, ...]] = ("calibration_samples",)  # smoothing calibrates in both modes
    backend: Literal["onnxruntime"] = Field("onnxruntime", exclude=True)
    int8: OrtInt8Defaults = Field(default_factory=OrtInt8Defaults)
    weights_only: dict[Literal["int8", "int4"], OrtWeightOnlyDefaults] = Field(default_factory=dict)
    llm: dict[Literal["int8", "int4"], OrtWeightOnlyDefaults] = Field(default_factory=dict)


class NNCFInt8Defaults(_Strict):
    mode: Literal["dynamic", "static"] | None = None  # static: nncf.quantize; dynamic: weight compression
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1)
    calibration_samples: int | None = Field(None, ge=1)


class NNCFWeightDefaults(_Strict):
    group_size: Literal[32, 64, 128] | None = None
    ratio: float | None = Field(None, gt=0, le=1)
    lm_head_precision: WeightPrecision | None = None
    embedding_precision: WeightPrecision | None = None
    int4_top1_target: float | None = Field(None, gt=0, le=1)  # text generation: int4 LM head / embedding check
    inference_precision: InferencePrecision | None = None  # the bundle's, over openvino.inference_precision


class OpenVINOQuantize(_QuantizeSection):
    """NNCF: post-training int8 (static) and weight compression (int8 per channel, int4 in groups)."""

    backend: Literal["openvino"] = Field("openvino", exclude=True)
    int8: NNCFInt8Defaults = Field(default_factory=NNCFInt8Defaults)
    weights_only: dict[Literal["int8", "int4"], NNCFWeightDefaults] = Field(default_factory=dict)
    llm: dict[Literal["int8", "int4"], NNCFWeightDefaults] = Field(default_factory=dict)


class BackendProfile(NamedTuple):
    artifact: str  # the artifact kind its targets deploy
    quantize: type[_QuantizeSection] | None  # the type of its targets' `quantize:` section


# Every backend a target may name. Adding one: an entry here (and its build and runtime modules).
BACKEND_PROFILES: dict[str, BackendProfile] = {
    "onnxruntime": BackendProfile("onnx", OnnxRuntimeQuantize),
    "openvino": BackendProfile("openvino", OpenVINOQuantize),
    "xla": BackendProfile("stablehlo", None),
}
QUANTIZE_SECTIONS = {name: entry.quantize for name, entry in BACKEND_PROFILES.items() if entry.quantize}
BackendName = Literal[tuple(BACKEND_PROFILES)]
ArtifactKind = Literal[tuple(dict.fromkeys(entry.artifact for entry in BACKEND_PROFILES.values()))]
QuantizeSection = Annotated[reduce(operator.or_, QUANTIZE_SECTIONS.values()), Field(discriminator="backend")]


class HostRequirements(_Strict):
    isa_any: list[Isa] = Field(default_factory=list, description="host must have at least one of these")
    devices: list[str] = Field(default_factory=list, description="e.g. cuda; checked by the backend")


class TargetProfile(_Strict):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    backend: BackendName
    device: str = "cpu"
    execution_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    artifact: ArtifactKind = "onnx"
    precisions: list[Precision] = Field(min_length=1)
    preferred_precision: Precision = "fp32"
    # NOTE: apart from `precisions` because weight-only kernels (int4 weights, float activations) exist
    # on targets whose int8 activation path does not, and the reverse.
    weight_only_precisions: list[Literal["int8", "int4"]] = Field(default_factory=list)
    opset: int = Field(17, ge=13, le=23)
    isa: Isa | Literal["auto"] = "auto"
    quant_presets: list[QuantPreset] = Field(default_factory=list)
    session: SessionOptions = Field(default_factory=SessionOptions)
    # Backend-specific compile options; only for `backend: openvino`, where it defaults to OpenVINOOptions().
    openvino: OpenVINOOptions | None = None
    # Only for `backend: xla`, where it defaults to XlaOptions().
    xla: XlaOptions | None = None
    # How `quantize` runs here: the section type follows `backend` (unset: that backend's defaults).
    quantize: QuantizeSection | None = None
    requires: HostRequirements = Field(default_factory=HostRequirements)
    default_recipe: str = "default"
    # Per-task defaults where the general one does not fit, e.g. {text-generation: llm-int4}.
    task_recipes: dict[str, str] = Field(default_factory=dict)
    runtime_packages: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _backend_sections(cls, data: Any) -> Any:
        """Tag the `quantize:` section with the profile's backend, which picks its type."""
        if not isinstance(data, dict):
            return data
        backend = data.get("backend")
        if data.get("openvino") is not None and backend != "openvino":
            raise ValueError(f"openvino: options are for backend openvino, not {backend}")
        if data.get("xla") is not None and backend != "xla":
            raise ValueError(f"xla: options are for backend xla, not {backend}")
        section = data.get("quantize")
        if isinstance(section, dict) or (section is None and backend in QUANTIZE_SECTIONS):
            if backend not in QUANTIZE_SECTIONS:
                raise ValueError(f"quantize: backend {backend} has no quantiser options")
            data = {**data, "quantize": {**(section or {}), "backend": backend}}
        return data

    @model_validator(mode="after")
    def _check(self) -> TargetProfile:
        if self.preferred_precision not in self.precisions:
            raise ValueError(f"preferred_precision {self.preferred_precision!r} is not in precisions")
        isas = [p.isa for p in self.quant_presets]
        if len(isas) != len(set(isas)):
            raise ValueError("quant_presets lists an ISA twice")
        if self.quantize is not None and self.quantize.backend != self.backend:
            raise ValueError(f"quantize: options are for backend {self.quantize.backend}, not {self.backend}")
        deploys = BACKEND_PROFILES[self.backend].artifact
        if self.artifact != deploys:
            raise ValueError(f"artifact {self.artifact!r}: backend {self.backend} deploys {deploys!r}")
        return self

    def session_options(self) -> dict:
        """What the runtime backend receives (through the manifest's `target.session`)."""
        options = self.session.model_dump(mode="json")
        if self.backend == "openvino":
            options["openvino"] = (self.openvino or OpenVINOOptions()).model_dump(mode="json")
        if self.backend == "xla":
            options["xla"] = self.xla_options().model_dump(mode="json")
        return options

    def xla_options(self) -> XlaOptions:
        return self.xla or XlaOptions()

    # -- derived facts -------------------------------------------------------------------------

    def recipe_for(self, task: str) -> str:
        return self.task_recipes.get(task, self.default_recipe)

    def effective_isa(self) -> str:
        """The ISA the bundle is built for: the profile's, or this host's best when `auto`."""
        if self.isa != "auto":
            return self.isa
        return host.best_isa([p.isa for p in self.quant_presets] or None)

    def quant_preset(self) -> QuantPreset:
        isa = self.effective_isa()
        for preset in self.quant_presets:
            if preset.isa == isa:
                return preset
        # A host with none of the listed ISAs gets the most conservative choice.
        return QuantPreset(isa="generic", weight_type="int8", reduce_range=True)

    def host_fit(self) -> tuple[bool, str]:
        """Whether this host can run bundles for the target, and why not."""
        if self.requires.isa_any:
            have = host.host_isas()
            if not any(isa in have for isa in self.requires.isa_any):
                return False, f"needs one of {', '.join(self.requires.isa_any)}"
        if self.backend == "onnxruntime":
            try:
                import onnxruntime

                available = set(onnxruntime.get_available_providers())
            except ImportError:
                return False, "onnxruntime is not installed"
            missing = [p for p in self.execution_providers if p not in available]
            if missing:
                return False, f"onnxruntime lacks {', '.join(missing)}"
        if self.backend == "openvino":
            try:
                import openvino
            except ImportError:
                return False, "openvino is not installed"
            device = (self.openvino or OpenVINOOptions()).device
            available = openvino.Core().available_devices
            if device != "AUTO" and not any(d.split(".")[0] == device for d in available):
                return False, f"OpenVINO has no {device} device here (has: {', '.join(available)})"
        if self.backend == "xla":
            try:
                import jax
            except ImportError:
                return False, "jax is not installed"
            device = self.xla_options().device
            try:
                jax.devices(device)
            except RuntimeError:
                return False, f"jax has no {device} device here"
        return True, f"ok ({self.effective_isa()})"


def load_target(name_or_path: str | Path) -> TargetProfile:
    return load_model_file(resolve_named_yaml("targets", str(name_or_path)), TargetProfile)


def list_targets() -> list[TargetProfile]:
    return [load_model_file(path, TargetProfile) for path in list_shipped("targets")]
