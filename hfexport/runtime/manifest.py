"""The bundle manifest, read back typed: its sections as dataclasses, format versions, file checksums.

Standard library only: a production app loads bundles with numpy, tokenizers and one backend.

The bundle format is ONE JSON Schema, `manifest.schema.json` beside this module, generated from the
build side's pydantic model (hfexport/build/manifest.py: `python -m hfexport.build.manifest`).
tests/test_manifest.py checks these dataclasses against it field by field (names, types, required).
Any change to the schema bumps FORMAT_VERSION; `read_manifest` converts every older format it knows
and refuses newer ones with a line that says to upgrade (docs/decisions/0080-typed-versioned-manifest.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfexport.errors import BundleIntegrityError

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
# Files never listed in the manifest's checksums: the manifest itself.
_UNLISTED = {MANIFEST_NAME}


class _Section:
    """Dict-style reads (`manifest["model"]["task"]`, `.get("pooling")`) as format 1's plain dicts allowed;
    kept for one release so apps written against the dicts keep working, with a DeprecationWarning."""

    def __getitem__(self, key: str):
        if key not in _field_names(type(self)):
            raise KeyError(key)
        warnings.warn(f"manifest[{key!r}] is deprecated: the manifest is typed, read it as .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key)

    def get(self, key: str, default=None):
        if key not in _field_names(type(self)):
            return default
        warnings.warn(f"manifest.get({key!r}) is deprecated: the manifest is typed, read it as .{key}",
                      DeprecationWarning, stacklevel=2)
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in _field_names(type(self))


_section = dataclass(frozen=True, kw_only=True)


@_section
class Pooling(_Section):
    mode: str  # cls, mean, max, last or mean_sqrt_len
    normalize: bool = False


@_section
class ModelInfo(_Section):
    """The source model, and the fields its task needs at runtime (labels, pooling, mask token)."""

    id: str
    revision: str | None
    task: str
    model_type: str | None
    max_length: int
    pooling: Pooling | None = None
    id2label: dict[str, str] | None = None
    problem_type: str | None = None
    mask_token: str | None = None
    mask_token_id: int | None = None
    task_fields: dict[str, Any] = field(default_factory=dict)  # a task's fields beyond the typed ones


@_section
class TargetInfo(_Section):
    name: str
    backend: str
    device: str
    execution_providers: list[str]
    isa: str | None
    precision: str
    session: dict[str, Any]  # the backend's session / compile options, as the target profile set them
    runtime_packages: list[str]


@_section
class RecipeInfo(_Section):
    name: str
    gates: dict[str, float | None]
    evaluation: dict[str, Any]


@_section
class PassRecord(_Section):
    name: str
    params: dict[str, Any]
    seconds: float
    size_bytes: int
    stats: dict[str, Any]
    cached: bool = False  # the stage came from the stage cache (seconds: the cache lookup)


@_section
class TokenizerInfo(_Section):
    file: str
    pad_token: str | None
    pad_token_id: int | None
    padding_side: str


@_section
class ProcessorInfo(_Section):
    """How a non-text bundle turns its inputs into the graph's (format 3): images -> pixel_values."""

    kind: str  # image or audio
    file: str  # the processor's settings inside the bundle (processor/preprocessor_config.json)
    input_name: str  # the graph input it makes (pixel_values)
    image_size: list[int] | None = None  # [height, width] of every preprocessed image


@_section
class TensorSpec(_Section):
    name: str
    dtype: str
    shape: list[int | str]  # symbolic dimensions by name ("batch", "sequence")


@_section
class Signature(_Section):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@_section
class BuildHost(_Section):
    cpu: str
    machine: str
    isas: list[str]
    logical_cpus: int | None
    python: str
    platform: str


@_section
class GateResult(_Section):
    metric: str
    value: float
    threshold: float
    passed: bool


@_section
class ValidationInfo(_Section):
    passed: bool
    summary: dict[str, float]
    gates: list[GateResult]
    report: str  # the report's path inside the bundle
    timing_warnings: list[str] = field(default_factory=list)  # why the speed figures are not results


@_section
class FileEntry(_Section):
    sha256: str
    bytes: int


@_section
class Manifest(_Section):
    """A bundle's manifest.json, typed. `format_version` is the format the bundle was written in; every
    other field has the current format's shape (older formats are converted on reading)."""

    format_version: int
    hfexport_version: str
    created: str
    model: ModelInfo
    target: TargetInfo
    recipe: RecipeInfo
    passes: list[PassRecord]
    model_file: str
    model_files: list[str]
    tokenizer: TokenizerInfo | None = None  # text bundles
    processor: ProcessorInfo | None = None  # image bundles (format 3)
    signature: Signature
    tools: dict[str, str]
    build_host: BuildHost
    validation: ValidationInfo | None = None
    files: dict[str, FileEntry]

    def model_bytes(self) -> int:
        """Size of the model's own files (weights and graph), without tokenizer, configs and report."""
        return sum(self.files[name].bytes for name in self.model_files)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- reading ----------------------------------------------------------------------------------------------


def read_manifest(bundle: Path) -> Manifest:
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise BundleIntegrityError(f"bundle folder not found: {bundle}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleIntegrityError(f"{bundle} is not an hfexport bundle (no {MANIFEST_NAME})") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleIntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    return parse_manifest(data, source=str(path))


def parse_manifest(data: Any, source: str = MANIFEST_NAME) -> Manifest:
    """A manifest's JSON content -> Manifest; BundleIntegrityError (one line) for what cannot be read."""
    if not isinstance(data, dict):
        raise BundleIntegrityError(f"{source}: unreadable manifest (not a JSON object)")
    version = data.get("format_version")
    if version not in READABLE_FORMATS or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise BundleIntegrityError(
            f"{source}: bundle format {version!r} is not supported by this hfexport (reads formats "
            f"{READABLE_FORMATS[0]}-{READABLE_FORMATS[-1]})"
            + ("; upgrade hfexport to load it: pip install -U hfexport" if newer else "")
        )
    if version == 1:
        data = _from_format_1(data)
    if version in (1, 2) and isinstance(data, dict) and "tokenizer" not in data:
        raise BundleIntegrityError(f"{source}: invalid manifest: tokenizer is missing")
    try:
        return _typed(Manifest, data, "")
    except _Invalid as exc:
        raise BundleIntegrityError(f"{source}: invalid manifest: {exc}") from None


def _from_format_1(data: dict) -> dict:
    """Format 1 (hfexport 0.1, untyped): the same sections, less strictly kept. Bundles written before
    multi-file models (OpenVINO) name one `model_file` and no `model_files`; no pass is `cached`."""
    data = dict(data)
    if "model_files" not in data and isinstance(data.get("model_file"), str):
        data["model_files"] = [data["model_file"]]
    return data


class _Invalid(ValueError):
    pass


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _typed(hint: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) checked against the annotation `hint` and turned into dataclasses."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(option, value, where)
            except _Invalid:
                continue
        raise _Invalid(f"{where or 'manifest'} has an unexpected value {_short(value)}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Invalid(f"{where or 'manifest'} should be an object, got {_short(value)}")
        hints = _hints(hint)
        values = {}
        for item in dataclasses.fields(hint):
            at = f"{where}.{item.name}" if where else item.name
            if item.name in value:
                values[item.name] = _typed(hints[item.name], value[item.name], at)
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise _Invalid(f"{at} is missing")
        return hint(**values)  # keys this reader does not know are ignored
    if origin is list:
        if not isinstance(value, list):
            raise _Invalid(f"{where} should be a list, got {_short(value)}")
        return [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(f"{where} should be an object, got {_short(value)}")
        return {k: _typed(args[1], v, f"{where}.{_printable(k)}") for k, v in value.items()}
    ok = (isinstance(value, hint) and not (hint is int and isinstance(value, bool))
          or hint is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise _Invalid(f"{where} should be {_JSON_NAMES.get(hint, hint)}, got {_short(value)}")
    return float(value) if hint is float else value


def _printable(name: str) -> str:
    """A name from the manifest as it goes into a one-line error: quoted and escaped unless plainly printable."""
    return name if name.isprintable() and name.strip() == name and name else repr(name)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(item.name for item in dataclasses.fields(cls))


# -- checksums ----------------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path) -> dict[str, dict]:
    """sha256 and size of every file under root, keyed by POSIX relative path."""
    table = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in _UNLISTED:
            rel = path.relative_to(root).as_posix()
            table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def verify_files(bundle: Path, manifest: Manifest, *, only: list[str] | None = None) -> None:
    """Raise BundleIntegrityError if a listed file is missing or its sha256 differs."""
    if not manifest.files:
        raise BundleIntegrityError(f"{bundle}: manifest lists no files")
    for rel, entry in manifest.files.items():
        if only is not None and rel not in only:
            continue
        path, name = bundle / rel, _printable(rel)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleIntegrityError(f"{bundle}: manifest lists a file outside the bundle: {name}")
        if not path.is_file():
            raise BundleIntegrityError(f"{bundle}: {name} is missing")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise BundleIntegrityError(f"{bundle}: {name} does not match its checksum (modified or corrupt)")
