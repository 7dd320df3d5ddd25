"""The bundle manifest as the build writes it: one pydantic model, the source of the shipped JSON Schema.

`Manifest.model_json_schema()` is hfexport/runtime/manifest.schema.json (regenerate it with
`python -m hfexport.build.manifest`; tests/test_manifest.py fails while the two differ), and the runtime's
stdlib reader (hfexport/runtime/manifest.py) is tested field by field against that file. Any change here
is a new format: bump FORMAT_VERSION there and teach its reader to convert the old one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hfexport import host
from hfexport._version import __version__
from hfexport.runtime.manifest import SCHEMA_PATH
from hfexport.tasks import get_task


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pooling(_Section):
    mode: Literal["cls", "mean", "max", "last", "mean_sqrt_len"]
    normalize: bool = False


class ModelInfo(_Section):
    """The source model, and the fields its task needs at runtime (labels, pooling, mask token)."""

    id: str = Field(description="hub id or local folder the bundle was built from")
    revision: str | None = Field(description="hub commit, or the packaged model's version")
    task: str
    model_type: str | None = Field(description="transformers model_type, e.g. bert")
    max_length: int = Field(description="tokens per text at most; longer texts are truncated")
    pooling: Pooling | None = Field(None, description="feature-extraction: how token vectors become one")
    id2label: dict[str, str] | None = Field(None, description="classifiers: label names by class index")
    problem_type: str | None = None
    mask_token: str | None = None
    mask_token_id: int | None = None
    # NOTE: a new task's own fields go here (JSON values its runtime module reads), so adding a task needs
    # no schema change; a field every task shares is promoted to a typed one in a format bump.
    task_fields: dict[str, Any] = Field(default_factory=dict, description="a task's fields beyond the typed ones")


class TargetInfo(_Section):
    name: str
    backend: str = Field(description="the runtime backend that opens the model: onnxruntime, openvino, ...")
    device: str
    execution_providers: list[str]
    isa: str | None
    precision: str = Field(description="fp32, fp16, int8 or int4: the last quantize pass's, else fp32")
    session: dict[str, Any] = Field(description="the backend's session / compile options from the target")
    runtime_packages: list[str]


class RecipeInfo(_Section):
    name: str
    gates: dict[str, float | None]
    evaluation: dict[str, Any]


class PassRecord(_Section):
    name: str
    params: dict[str, Any]
    seconds: float
    size_bytes: int
    stats: dict[str, Any] = Field(description="facts the pass recorded (node counts, kept layers, ...)")
    cached: bool = Field(False, description="the stage came from the stage cache")


class TokenizerInfo(_Section):
    file: str
    pad_token: str | None
    pad_token_id: int | None
    padding_side: str


class ProcessorInfo(_Section):
    """How a non-text bundle turns its inputs into the graph's: images -> pixel_values, audio -> input_values."""

    kind: Literal["image", "audio"]
    file: str = Field(description="the processor's settings inside the bundle")
    input_name: str = Field(description="the graph input the processor makes, e.g. pixel_values")
    image_size: list[int] | None = Field(None, description="[height, width] of every preprocessed image")


class TensorSpec(_Section):
    name: str
    dtype: str
    shape: list[int | str] = Field(description="symbolic dimensions by name (batch, sequence)")


class Signature(_Section):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class BuildHost(_Section):
    cpu: str
    machine: str
    isas: list[str]
    logical_cpus: int | None
    python: str
    platform: str


class GateResult(_Section):
    metric: str
    value: float
    threshold: float
    passed: bool


class ValidationInfo(_Section):
    passed: bool
    summary: dict[str, float]
    gates: list[GateResult]
    report: str = Field(description="the validation report's path inside the bundle")
    timing_warnings: list[str] = Field(default_factory=list, description="why the speed figures are not results")


class FileEntry(_Section):
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Section):
    """manifest.json of an hfexport bundle."""

    model_config = ConfigDict(extra="forbid", title="hfexport bundle manifest",
                              json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"})

    format_version: Literal[3] = Field(description="the bundle format; readers refuse formats newer than theirs")
    hfexport_version: str
    created: str = Field(description="UTC, ISO 8601")
    model: ModelInfo
    target: TargetInfo
    recipe: RecipeInfo
    passes: list[PassRecord]
    model_file: str = Field(description="the file the runtime opens (model.onnx, model.xml)")
    model_files: list[str] = Field(description="every file of the model itself (e.g. model.xml and model.bin)")
    tokenizer: TokenizerInfo | None = Field(
        None, description="text bundles and dual encoders: the tokenizer the runtime uses")
    processor: ProcessorInfo | None = Field(
        None, description="image, audio and dual-encoder bundles: their preprocessing")
    signature: Signature
    tools: dict[str, str] = Field(description="versions of the packages that built the bundle")
    build_host: BuildHost
    validation: ValidationInfo | None = Field(None, description="absent only while the build validates")
    files: dict[str, FileEntry] = Field(description="sha256 and size of every file but manifest.json")


def _session(profile, records) -> dict:
    """The target's session options, plus the config entries, disabled optimizers and OpenVINO compute precision
    a pass recorded for its graph (any graph of it)."""
    session = profile.session_options()

    def recorded(stats, key: str):
        """Every value a pass recorded under `key`, at any depth (an encoder-decoder records per graph)."""
        if isinstance(stats, dict):
            if stats.get(key):
                yield stats[key]
            for value in stats.values():
                yield from recorded(value, key)

    def everywhere(key: str) -> list:
        return [value for record in records for value in recorded(record["stats"], key)]

    entries = {k: v for found in everywhere("session_config_entries") for k, v in found.items()}
    if entries:
        session["config_entries"] = {**session.get("config_entries", {}), **entries}
    # ONNX Runtime rewrites a pass undid on purpose (skip_layer_norm.py), kept off when the session loads
    disabled = [name for found in everywhere("session_disabled_optimizers") for name in found]
    if disabled:
        session["disabled_optimizers"] = sorted({*session.get("disabled_optimizers", []), *disabled})
    # OpenVINO: the compute precision a quantize step chose for its bundle (nncf.py), over the target's
    precision = everywhere("session_inference_precision")
    if precision and "openvino" in session:
        session["openvino"]["inference_precision"] = precision[-1]
    return session


def model_info(source, tokenizer, records=()) -> ModelInfo:
    """The manifest's `model` section: what the runtime (and a task's comparable) needs to read outputs."""
    spec = get_task(source.task)
    fields = spec.manifest_fields(source.config, tokenizer, source.pooling)
    if records and hasattr(spec, "recorded_fields"):  # values a pass read from the weights (logit_scale)
        fields.update(spec.recorded_fields(records))
    typed = {k: v for k, v in fields.items() if k in ModelInfo.model_fields}
    return ModelInfo(id=source.model_id, revision=source.revision, task=source.task, model_type=source.model_type,
                     max_length=source.max_length, **typed,
                     task_fields={k: v for k, v in fields.items() if k not in typed})


def manifest_body(source, profile, recipe, records, artifact, model_files, tokenizer, precision) -> dict:
    """Every section but the header and the file table, typed (write_manifest adds those and validates
    the whole); `validation` is added once the bundle has been validated."""
    return {
        "model": model_info(source, tokenizer, records),
        "target": TargetInfo(name=profile.name, backend=profile.backend, device=profile.device,
                             execution_providers=profile.execution_providers, isa=profile.effective_isa(),
                             precision=precision, session=_session(profile, records),
                             runtime_packages=profile.runtime_packages),
        "recipe": RecipeInfo(name=recipe.name, gates=recipe.gates.model_dump(mode="json"),
                             evaluation=recipe.evaluation.model_dump(mode="json")),
        "passes": [PassRecord(**record) for record in records],
        "model_file": model_files[0],
        "model_files": model_files,
        **_preprocessing(source.task, tokenizer, source),
        "signature": Signature(**artifact.signature()),
        "tools": tool_versions(),
        "build_host": BuildHost(**host.host_summary()),
    }


def _preprocessing(task: str, processor, source=None) -> dict:
    """The manifest sections that name the bundle's preprocessing: the tokenizer, or an image processor, or both
    (a dual encoder reads images and text)."""
    modality = getattr(get_task(task), "modality", "text")
    if modality == "audio":
        from hfexport.runtime.audio import PROCESSOR_FILE as AUDIO_FILE

        speech = get_task(task)
        text = getattr(speech, "text_tokenizer", None)  # Whisper: log-mel features in, text decoded by its tokenizer
        audio = {"processor": ProcessorInfo(kind="audio", file=AUDIO_FILE,
                                            input_name="input_features" if text else "input_values")}
        return audio if text is None or source is None else {**audio, **_tokenizer_section(text(source))}
    if modality == "image":
        from hfexport.runtime.image import PROCESSOR_FILE, explicit_config, settings_from_config

        size = settings_from_config(explicit_config(processor)).output_size
        image = {"processor": ProcessorInfo(kind="image", file=PROCESSOR_FILE, input_name="pixel_values",
                                            image_size=list(size) if size else None)}
        text = getattr(get_task(task), "text_tokenizer", None)
        return image if text is None or source is None else {**image, **_tokenizer_section(text(source))}
    return _tokenizer_section(processor)


def _tokenizer_section(tokenizer) -> dict:
    return {"tokenizer": TokenizerInfo(file="tokenizer/tokenizer.json", pad_token=tokenizer.pad_token,
                                       pad_token_id=tokenizer.pad_token_id, padding_side=tokenizer.padding_side)}


def tool_versions() -> dict[str, str]:
    import importlib.metadata
    import platform

    versions = {"hfexport": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "optimum", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf",
                    "jax", "jaxlib", "torchax", "tokenizers", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def json_schema() -> dict:
    return Manifest.model_json_schema()


def write_json_schema(path: Path = SCHEMA_PATH) -> None:
    path.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":  # python -m hfexport.build.manifest: regenerate the shipped schema
    write_json_schema()
    print(f"wrote {SCHEMA_PATH}")
