"""The bundle manifest: its format version, file checksums and verification. Standard library only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hfexport.errors import BundleIntegrityError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Files never listed in the manifest's checksums: the manifest itself.
_UNLISTED = {MANIFEST_NAME}


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


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise BundleIntegrityError(f"bundle folder not found: {bundle}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleIntegrityError(f"{bundle} is not an hfexport bundle (no {MANIFEST_NAME})") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"{path}: unreadable manifest ({exc})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleIntegrityError(
            f"{path}: bundle format {version!r} is not supported by this runtime (expects {FORMAT_VERSION})"
        )
    return manifest


def verify_files(bundle: Path, manifest: dict, *, only: list[str] | None = None) -> None:
    """Raise BundleIntegrityError if a listed file is missing or its sha256 differs."""
    files = manifest.get("files") or {}
    if not files:
        raise BundleIntegrityError(f"{bundle}: manifest lists no files")
    for rel, entry in files.items():
        if only is not None and rel not in only:
            continue
        path = bundle / rel
        if not path.is_file():
            raise BundleIntegrityError(f"{bundle}: {rel} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleIntegrityError(f"{bundle}: {rel} does not match its checksum (modified or corrupt)")
