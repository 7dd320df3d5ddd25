"""Paths never leave a bundle: every name a manifest or model file gives resolves inside the bundle folder.

A manifest names files (the model, its weights, the tokenizer, the report); an ONNX model names its
external-data files. Each must be a relative path without `..` that resolves inside the bundle, through
no symbolic link: a bundle holds no links at all, so none can point a loader at /etc/passwd or at the
weights of another bundle. Checked before anything is opened.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from hfexport.errors import BundleIntegrityError


def confined(root: Path, name: object, what: str) -> Path:
    """root/name, or BundleIntegrityError unless `name` is a relative path that stays inside root."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise BundleIntegrityError(f"{root}: {what} is not a file name: {name!r}")
    posix = PurePosixPath(name)
    if (posix.is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
            or ".." in posix.parts or ".." in PureWindowsPath(name).parts):
        raise BundleIntegrityError(f"{root}: {what} {name!r} points outside the bundle; a bundle names its "
                                   "files by relative paths inside its folder")
    current = root
    for part in posix.parts:
        current = current / part
        if current.is_symlink():
            raise BundleIntegrityError(f"{root}: {what} {name!r} goes through a symbolic link "
                                       f"({current.relative_to(root).as_posix()!r}); a bundle holds plain files only")
    try:
        inside = (root / name).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError) as exc:
        raise BundleIntegrityError(f"{root}: {what} {name!r} cannot be resolved ({exc})") from None
    if not inside:
        raise BundleIntegrityError(f"{root}: {what} {name!r} resolves outside the bundle")
    return root / name


def _printable(name: str) -> str:
    return name if name.isprintable() else repr(name)


def refuse_links(root: Path) -> None:
    """BundleIntegrityError if anything inside the bundle folder is a symbolic link."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                rel = _printable(path.relative_to(root).as_posix())
                raise BundleIntegrityError(f"{root}: {rel} is a symbolic link; a bundle holds plain files only "
                                           "(copy the file in instead)")


def check_bundle_paths(root: Path, manifest) -> None:
    """Every path the manifest names stays inside the bundle, and the bundle holds no links."""
    refuse_links(root)
    confined(root, manifest.model_file, "model_file")
    for name in manifest.model_files:
        confined(root, name, "model_files entry")
    if manifest.tokenizer is not None:
        confined(root, manifest.tokenizer.file, "tokenizer.file")
    if manifest.processor is not None:
        confined(root, manifest.processor.file, "processor.file")
    for name in manifest.files:
        confined(root, name, "files entry")
    if manifest.validation is not None:
        confined(root, manifest.validation.report, "validation.report")


# -- ONNX external data ---------------------------------------------------------------------------------
# The ONNX protobuf fields that hold tensors, read with the wire format alone (the runtime does not
# depend on the onnx package): message -> {field number: the message type it holds}.
_MESSAGES = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "function": {7: "node", 11: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
}
_MAX_DEPTH = 64


class _Malformed(ValueError):
    pass


def _varint(data, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _walk(data, start: int, end: int, kind: str, depth: int, found: list[str]) -> dict[int, bytes]:
    """Fields of one message; nested messages of interest are walked, external-data locations collected."""
    if depth > _MAX_DEPTH:
        raise _Malformed("nested too deep")
    wanted, strings, pos = _MESSAGES[kind], {}, start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Malformed("truncated field")
            if number in wanted:
                fields = _walk(data, pos, pos + length, wanted[number], depth + 1, found)
                if wanted[number] == "entry" and fields.get(1) == b"location":
                    found.append(fields.get(2, b"").decode("utf-8", "replace"))
            elif kind == "entry":
                strings[number] = bytes(data[pos:pos + length])
            pos += length
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("truncated field")
    return strings


def external_data_locations(model_path: Path) -> list[str]:
    """The `location` of every external-data tensor of an ONNX model file (BundleIntegrityError if unreadable)."""
    found: list[str] = []
    try:
        with open(model_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise _Malformed("empty file")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _walk(data, 0, size, "model", 0, found)
    except _Malformed as exc:
        raise BundleIntegrityError(f"{model_path}: not a valid ONNX model ({exc}; truncated or corrupt); "
                                   "rebuild the bundle") from None
    except OSError as exc:
        raise BundleIntegrityError(f"{model_path}: unreadable model file ({exc})") from None
    return found


def check_external_data(model_path: Path, root: Path | None = None) -> None:
    """Every external-data file of an ONNX model resolves inside `root` (default: the model's folder)."""
    root = root or model_path.parent
    base = model_path.parent.relative_to(root).as_posix() if model_path.parent != root else ""
    for location in external_data_locations(model_path):
        name = f"{base}/{location}" if base and location and not location.startswith(("/", "\\")) else location
        path = confined(root, name, f"{model_path.name}'s external data")
        if not path.is_file():
            raise BundleIntegrityError(f"{root}: {model_path.name}'s external data {location!r} is missing")


def second_graph(manifest, what: str, beside: str) -> str:
    """The bundle's other graph (an encoder-decoder's decoder, a dual encoder's text tower): the one name of
    model_files besides model_file with the same suffix; BundleIntegrityError naming `what` otherwise."""
    suffix = Path(manifest.model_file).suffix
    others = [n for n in manifest.model_files if n != manifest.model_file and Path(n).suffix == suffix]
    if len(others) != 1:
        raise BundleIntegrityError(f"manifest model_files should name one {what} ({suffix}) beside the {beside} "
                                   f"{manifest.model_file!r}, found {others or 'none'}: rebuild the bundle")
    return others[0]
