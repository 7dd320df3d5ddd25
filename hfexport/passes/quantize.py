"""Lower precision. The recipe says `int8`, `int4` or `fp16`; the target decides how.

- onnxruntime targets: dynamic or static QDQ int8, flavoured by the target's ISA preset
  (`_quantize_ort.py`); with `weights_only: true`, MatMulNBits int8/int4 weight blocks with float
  activations, the LLM path (`_weight_only.py`); with `int4_top1_target` as well, int4 only for the
  matrices a measured sensitivity search on calibration text allows, int8 for the rest (`_int4_search.py`).
- openvino targets: NNCF post-training int8 (`mode: static`) or weight compression to int8/int4
  (`mode: dynamic` / `weights_only: true`) (`_quantize_nncf.py`).

- `fp16` (targets that list it, e.g. cuda): every float weight and operator in half precision, graph
  inputs and outputs kept fp32 (`_float16.py`, ONNX Runtime's converter run after the fusions, as its GPU
  recipe does). No calibration; no quantiser options.

`weights_only` means the same on both: weights in low bits, activations stay float. Options that only
one backend has are rejected on the other by the planner, naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hfexport.artifacts import Artifact, OnnxModel, OpenVINOModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes.base import Pass, PassConfig
from hfexport.tasks import TASKS

# Fields that mean something to one backend's quantiser only; the other backend rejects them when set.
_ORT_ONLY = ("per_channel", "reduce_range", "op_types", "calibration_method", "accuracy_level", "int4_top1_target")
_OPENVINO_ONLY = ("smooth_quant_alpha", "ratio")
# Fields that apply to weight-only quantisation only (MatMulNBits on onnxruntime, NNCF compress_weights);
# int4_top1_target is held to weights_only by QuantizeConfig's own validator.
_WEIGHT_ONLY = ("lm_head_precision", "embedding_precision", "accuracy_level")
# The int4_top1_target search: calibration windows of this many tokens (fewer if the model's context is shorter).
_SEARCH_WINDOWS, _SEARCH_TOKENS = 16, 64


class QuantizeConfig(PassConfig):
    precision: Literal["int8", "int4", "fp16"] = "int8"
    mode: Literal["dynamic", "static"] = "dynamic"
    weights_only: bool = Field(False, description="low-bit weights, float activations (LLMs; no calibration)")
    group_size: Literal[32, 64, 128] | None = Field(None, description="weights_only: weights per scale (128)")
    # -- openvino (NNCF) ----------------------------------------------------------------------------
    ratio: float = Field(1.0, gt=0, le=1, description="openvino int4: share of layers in int4, the rest int8")
    # NOTE: NNCF's default for transformers is 0.95. On all-MiniLM-L6-v2 (256 held-out texts) 0.95 gave
    # min cosine 0.9867; 0.7 / 0.75 / 0.8 / 0.85 / 0.9 gave 0.9892 / 0.9910 / 0.9909 / 0.9887 / 0.9874
    # at the same mean (0.9975-0.9979); 0.5 fell to 0.9680. The openvino default recipe sets 0.8.
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1, description=(
        "openvino, mode static: SmoothQuant strength on MatMul; null = NNCF's default, 0 = off"))
    # -- onnxruntime ----------------------------------------------------------------------------------
    per_channel: bool | None = Field(None, description="default: the target's ISA preset")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: the target's ISA preset")
    # NOTE: MatMul only by default. On all-MiniLM-L6-v2 (320 held-out texts), quantising every op
    # (fused Attention and EmbedLayerNorm too) ran 1.4x faster than MatMul-only but dropped min cosine
    # to 0.973; MatMul-only kept 0.9944 mean / 0.9781 min. Add "Attention" here to trade fidelity for speed.
    op_types: list[str] = Field(default_factory=lambda: ["MatMul"], min_length=1,
                                description="operator types to quantise")
    exclude_nodes: list[str] = Field(default_factory=list, description="node names kept in float")
    # NOTE: minmax only: onnxruntime 1.32's entropy and percentile calibrators failed on the fused BERT
    # graph ("Histogram has not been collected"), so they are not offered until that works.
    calibration_method: Literal["minmax"] = "minmax"
    calibration_samples: int = Field(100, ge=1, description="static mode: calibration texts used")
    symmetric_activations: bool = False
    # -- both, weights_only: the two largest matrices of a small LLM ----------------------------------------
    # NOTE: unset, each backend keeps its own default: fp32 on onnxruntime; on openvino NNCF's, int8 for
    # both (it keeps the first and last weighted layers at int8 when the rest is int4).
    lm_head_precision: Literal["fp32", "int8", "int4"] | None = Field(
        None, description="weights_only: the LM head; default fp32 (onnxruntime), int8 (openvino)")
    embedding_precision: Literal["fp32", "int8", "int4"] | None = Field(
        None, description="weights_only: the token embedding table; default fp32 (onnxruntime), int8 (openvino); "
                          "onnxruntime reads uint8 or int4 tables (GatherBlockQuantized)")
    # NOTE: measured on the bench model (scripts/bench_generation.py, int4 group 32, 2 threads, one process):
    # accuracy_level 4 decoded 971 tokens/s and 0 only 22 (TTFT 3.6 vs 49 ms), with the same top-1
    # agreement (0.494 / 0.490); a loaded machine gave 218 vs 14.
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="weights_only: MatMulNBits compute type, 4 = int8 inside the kernel (fastest on "
                          "CPU), 0 = float; default 4")
    # NOTE: why a measured int4/int8 split (numbers on the bench model, scripts/bench_generation.py: random
    # Llama 4 x 512, vocab 32000; top-1 agreement with PyTorch fp32 on the bench's evaluation windows):
    # - its logits have std 0.45 and a median top-1/top-2 margin of 0.082 (10th percentile 0.012); int4 RTN
    #   group 32 adds rms logit noise 0.125 (int8 group 32: 0.009), so int4 everywhere agrees on 0.48-0.51.
    # - fp32 weights plus Gaussian noise of int4's size (rms 0.081 of each weight's std) agree on 0.51-0.57:
    #   the flips are noise against a small margin, not a bug. 0.9 needs a relative error near 0.012, over 6
    #   bits a weight at the rate-distortion bound for Gaussian weights (2^-bits), so no 4-bit rounding gets
    #   there. Blocks alone in int4: RTN g32 0.53 (g64 / g128 lower, symmetric no better, accuracy_level 0 = 4),
    #   HQQ 0.55 (6% less noise), GPTQ on all the calibration text 0.66 (22% less).
    # - one matrix alone in int4 (the rest fp32): q/k_proj 0.98-1.00, v/o_proj 0.78-0.91, gate/up/down
    #   0.87-0.96, LM head 0.83, embedding 0.79; layer 0 is 5-10x as sensitive as layer 3.
    # So int4 can hold only the least sensitive matrices of such a model: this option measures which (see
    # _int4_search.py) and puts the rest in int8.
    int4_top1_target: float | None = Field(None, gt=0, le=1, description=(
        "weights_only int4: keep a matrix in int4 only while top-1 next-token agreement with the float graph on "
        "calibration text stays >= this; the most sensitive (measured) fall back to int8. Text generation only"))

    @model_validator(mode="after")
    def _check(self) -> QuantizeConfig:
        if self.precision == "fp16":
            stray = sorted(self.model_fields_set - {"precision", "exclude_nodes"})
            if stray:
                raise ValueError(f"precision fp16 converts the whole graph and takes no quantiser options "
                                 f"(remove {', '.join(stray)})")
            return self
        if self.precision == "int4" and not self.weights_only:
            raise ValueError("precision int4 quantises weights only: add weights_only: true")
        if self.weights_only and self.mode == "static":
            raise ValueError("weights_only needs no calibration: drop mode: static")
        if self.group_size is not None and not self.weights_only:
            raise ValueError("group_size applies to weights_only quantisation")
        if self.precision != "int4" and self.ratio != 1.0:
            raise ValueError("ratio (share of layers in int4) applies to precision int4 only")
        if self.smooth_quant_alpha is not None and (self.weights_only or self.mode != "static"):
            raise ValueError("smooth_quant_alpha applies to mode: static (post-training quantisation) only")
        if self.int4_top1_target is not None and (self.precision != "int4" or not self.weights_only):
            raise ValueError("int4_top1_target chooses int4 or int8 per weight matrix: it needs precision: int4 "
                             "with weights_only: true")
        return self

    def weight_only_settings(self) -> dict:
        """MatMulNBits settings, defaults filled in."""
        return {"bits": 4 if self.precision == "int4" else 8, "group_size": self.group_size or 128,
                "lm_head_precision": self.lm_head_precision or "fp32",
                "embedding_precision": self.embedding_precision or "fp32",
                "accuracy_level": 4 if self.accuracy_level is None else self.accuracy_level}


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    summary = "int8, int4 or fp16, done the target's way: ONNX Runtime (int8, MatMulNBits, fp16) or NNCF"
    consumes = (OnnxModel, OpenVINOModel)
    produces = None
    config_class = QuantizeConfig

    def describe(self) -> str:
        if self.config.precision == "fp16":
            return "quantize(fp16)"
        if self.config.weights_only:
            split = (f", int8 where top-1 < {self.config.int4_top1_target:g}"
                     if self.config.int4_top1_target is not None else "")
            return f"quantize({self.config.precision}, weights only, group {self.config.group_size or 128}{split})"
        return f"quantize({self.config.precision}, {self.config.mode})"

    def check(self, plan: PlanContext) -> None:
        target, config = plan.target, self.config
        allowed = target.weight_only_precisions if config.weights_only else target.precisions
        if config.precision not in allowed:
            listing = "weight_only_precisions" if config.weights_only else "precisions"
            raise PlanError(f"precision {config.precision!r}{' with weights_only' if config.weights_only else ''} "
                            f"is not supported by target {target.name!r} ({listing}: {', '.join(allowed) or 'none'})")
        if config.precision == "fp16" and target.backend != "onnxruntime":
            raise PlanError(f"precision fp16 converts ONNX graphs; OpenVINO chooses f16 when it compiles "
                            f"(set openvino.inference_precision: f16 in target {target.name!r})")
        if target.backend == "onnxruntime":
            foreign = [name for name in _OPENVINO_ONLY if name in config.model_fields_set]
            if foreign:
                raise PlanError(f"{foreign[0]}: an NNCF option for openvino targets (remove it)")
        elif target.backend == "openvino":
            foreign = [name for name in _ORT_ONLY if name in config.model_fields_set]
            if foreign:
                raise PlanError(f"{foreign[0]}: an ONNX Runtime quantiser option; NNCF on target "
                                f"{target.name!r} decides it (remove {foreign[0]})")
            int4_parts = "int4" in (config.precision, config.lm_head_precision, config.embedding_precision)
            if config.group_size is not None and not int4_parts:
                raise PlanError("group_size: NNCF compresses int8 weights per channel; groups are for int4")
        else:
            raise PlanError(f"no quantiser for backend {target.backend}")
        stray = [name for name in _WEIGHT_ONLY if name in config.model_fields_set]
        if stray and not config.weights_only:
            raise PlanError(f"{stray[0]} applies to weight-only quantisation; add weights_only: true or remove it")
        if TASKS[plan.source.task].generative and config.mode == "static":
            # Calibration feeds carry no KV cache; the generation graphs need one.
            raise PlanError(f"mode: static does not calibrate {plan.source.task} graphs; use weights_only: true")
        if config.mode == "static" and not plan.has_calibration_data:
            raise PlanError("mode: static needs calibration data (--calibration-data)")
        if config.int4_top1_target is not None:
            if not TASKS[plan.source.task].generative:
                raise PlanError(f"int4_top1_target measures next-token agreement, so it needs a text-generation "
                                f"model (this one is {plan.source.task}); remove it")
            if not plan.has_calibration_data:
                raise PlanError("int4_top1_target measures on calibration text: give --calibration-data")

    def run(self, artifact: Artifact, ctx: BuildContext) -> Artifact:
        out_dir = ctx.stage_dir(self.name)
        if self.config.precision == "fp16":
            from hfexport.passes._float16 import convert_float16

            out = out_dir / "model.onnx"
            stats = convert_float16(artifact.path, out, keep_nodes=self.config.exclude_nodes)
            return OnnxModel(out, artifact.inputs, artifact.outputs, stats=stats)
        if isinstance(artifact, OpenVINOModel):
            from hfexport.passes._quantize_nncf import quantize_openvino

            return quantize_openvino(self.config, artifact, ctx, out_dir)
        if self.config.weights_only:
            from hfexport.passes._weight_only import quantize_weights_only

            out = out_dir / "model.onnx"
            stats = quantize_weights_only(artifact.path, out, exclude_nodes=self.config.exclude_nodes,
                                          search=self._search_settings(ctx), **self.config.weight_only_settings())
            return OnnxModel(out, artifact.inputs, artifact.outputs, stats=stats)
        from hfexport.passes._quantize_ort import quantize_onnx

        return quantize_onnx(self.config, artifact, ctx, out_dir)

    def _search_settings(self, ctx: BuildContext):
        if self.config.int4_top1_target is None:
            return None
        from hfexport import host
        from hfexport.data import token_windows
        from hfexport.passes._int4_search import SearchSettings

        length = min(_SEARCH_TOKENS, ctx.source.max_length)
        windows = token_windows(ctx.hf_tokenizer(), ctx.calibration_texts, _SEARCH_WINDOWS, length)
        ctx.progress.info(f"int4/int8 split: sensitivity of each int4 matrix on {len(windows)} calibration windows "
                          f"of {length} tokens, target top-1 {self.config.int4_top1_target:g}")
        return SearchSettings(windows, self.config.int4_top1_target,
                              ctx.target.session.intra_op_threads or host.physical_cores())
