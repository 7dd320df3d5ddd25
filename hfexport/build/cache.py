"""The stage cache: finished pass outputs stored under a key made of everything that decides them.

The key of stage i hashes the key of stage i-1 (stage 0: the model files' sha256, the task, the target,
the tool versions and hfexport's own code), the pass's name and config, and the texts it reads. The same
key therefore means the same inputs through the same code, and the stored folder can stand in for a run.

An entry is a folder `<key>/` holding `stage/` (a copy of the pass's stage folder) and `entry.json` (how to
rebuild the artifact value). It is written under a temporary name and renamed into place, so a folder
named by a key is always complete. Entries are read-only inputs; their mtime is the last use, and the
least recently used go first when the cache grows past its size bound.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import stat
import time
import uuid
from functools import lru_cache
from pathlib import Path

from hfexport.artifacts import ARTIFACT_KINDS, Artifact
from hfexport.build.bundle import tool_versions
from hfexport.errors import ConfigError

# Bump when the key recipe or the entry layout changes: old entries are then never matched.
CACHE_FORMAT = 1
DEFAULT_SIZE = "20GB"
_ENTRY = "entry.json"
_STALE_TEMP_S = 24 * 3600  # a temporary folder this old belongs to a build that died


def cache_root() -> Path:
    """$HFEXPORT_CACHE_DIR, else hfexport's folder in the user's cache dir (XDG_CACHE_HOME respected)."""
    if os.environ.get("HFEXPORT_CACHE_DIR"):
        return Path(os.environ["HFEXPORT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hfexport"


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}  # fmt: skip


def parse_size(text: str, variable: str = "HFEXPORT_CACHE_SIZE") -> int:
    """'20GB', '500MB', '1.5GiB', '0' -> bytes; anything else is one ConfigError naming the variable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise ConfigError(f"{variable}={text!r} is not a size: use e.g. 20GB, 500MB or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def texts_digest(texts: list[str] | None) -> str | None:
    if texts is None:
        return None
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of hfexport's own Python files: a pass changed in a checkout (same version) misses."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class StageCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.folder = root / "stages"
        self.max_bytes = max_bytes
        self.writable = True

    @classmethod
    def from_env(cls) -> StageCache:
        """The user's cache; a bad HFEXPORT_CACHE_SIZE fails here, before any work."""
        return cls(cache_root(), parse_size(os.environ.get("HFEXPORT_CACHE_SIZE") or DEFAULT_SIZE))

    # -- keys ----------------------------------------------------------------------------------------

    def model_files(self, folder: Path) -> dict[str, str]:
        """Relative path -> sha256 of every file of the model folder (hidden ones aside). Hashes are
        remembered by (path, size, mtime), so a multi-GB checkpoint is read once, not at every build."""
        memo_file = self.root / "file-hashes.json"
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        found, changed = {}, False
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            real = path.resolve()
            info = real.stat()
            seen = memo.get(str(real))
            if seen and seen[:2] == [info.st_size, info.st_mtime_ns]:
                found[relative.as_posix()] = seen[2]
            else:
                found[relative.as_posix()] = _file_sha256(real)
                memo[str(real)], changed = [info.st_size, info.st_mtime_ns, found[relative.as_posix()]], True
        if changed and self.writable:
            try:
                memo = {k: v for k, v in memo.items() if Path(k).exists()}
                self.root.mkdir(parents=True, exist_ok=True)
                temp = memo_file.with_name(f".{memo_file.name}.{uuid.uuid4().hex[:8]}")
                temp.write_text(json.dumps(memo))
                os.replace(temp, memo_file)
            except OSError:
                pass  # the memo only saves time
        return found

    def source_key(self, ctx) -> str:
        """Stage 0's input: the model, what it is built for, and the code and libraries that build it."""
        return _digest({
            "format": CACHE_FORMAT, "model_files": self.model_files(ctx.source.local_dir),
            "task": ctx.source.task, "trust_remote_code": ctx.source.trust_remote_code,
            "target": ctx.target.model_dump(mode="json"), "isa": ctx.target.effective_isa(),
            "tools": tool_versions(), "code": code_fingerprint(),
        })  # fmt: skip

    def preprocessing_key(self, source) -> str:
        """The key of the build's tokenizer folder: the model files, and the code and libraries that save it."""
        return _digest({"format": CACHE_FORMAT, "step": "tokenizer", "model_files": self.model_files(source.local_dir),
                        "trust_remote_code": source.trust_remote_code, "tools": tool_versions(),
                        "code": code_fingerprint()})

    @staticmethod
    def stage_key(previous: str, step, data: dict[str, str | None]) -> str | None:
        """The key of one pass on the previous stage; None when the pass's code cannot be pinned."""
        cls = type(step)
        code = None
        if not cls.__module__.startswith("hfexport."):  # a third-party or test pass: hash its own file
            try:
                code = _file_sha256(Path(inspect.getsourcefile(cls)))
            except (TypeError, OSError):
                return None
        return _digest({"previous": previous, "pass": step.name, "class": cls.__qualname__,
                        "code": code, "config": step.config.model_dump(mode="json"),
                        "data": {name: data.get(name) for name in sorted(step.data_inputs)}})

    # -- entries -------------------------------------------------------------------------------------

    def lookup(self, key: str) -> tuple[Artifact, dict] | None:
        """The stored artifact and its entry, or None; a damaged entry is a miss (and is removed)."""
        found = self._entry(key, lambda entry, stage: _rebuild(entry, stage))
        return None if found is None else (found[0], found[1])

    def lookup_folder(self, key: str) -> tuple[Path, dict] | None:
        """A stored plain folder (store_folder) and the facts stored with it, or None."""
        found = self._entry(key, lambda entry, stage: stage)
        return None if found is None else (found[0], found[1].get("facts", {}))

    def store(self, key: str, name: str, artifact: Artifact, stage_dir: Path, seconds: float) -> bool:
        """Copy a finished stage into the cache; False when this artifact cannot be stored faithfully."""
        entry = _describe(artifact, stage_dir)
        if entry is None:
            return False
        self._write(key, name, entry, stage_dir, seconds)
        return True

    def store_folder(self, key: str, name: str, folder: Path, facts: dict, seconds: float) -> None:
        """Keep a folder that is not a model (the build's tokenizer) with a few JSON facts about it."""
        self._write(key, name, {"kind": "folder", "facts": facts}, folder, seconds)

    def _entry(self, key: str, open_stage):
        entry_dir = self.folder / key
        if not entry_dir.is_dir():
            return None
        try:
            entry = json.loads((entry_dir / _ENTRY).read_text())
            stage = entry_dir / "stage"
            if entry.get("format") != CACHE_FORMAT or any(
                    (stage / name).stat().st_size != size for name, size in entry["files"].items()):
                raise ValueError("entry does not match its files")
            value = open_stage(entry, stage)
        except (OSError, ValueError, KeyError, TypeError):
            self._remove(entry_dir)
            return None
        try:
            os.utime(entry_dir)  # the last use, for eviction
        except OSError:
            pass
        return value, entry

    def _write(self, key: str, name: str, entry: dict, stage_dir: Path, seconds: float) -> None:
        if (self.folder / key).exists():
            return
        temp = self.folder / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copytree(stage_dir, temp / "stage", symlinks=False)
            files = {p.relative_to(temp / "stage").as_posix(): p.stat().st_size
                     for p in sorted((temp / "stage").rglob("*")) if p.is_file()}
            entry.update(format=CACHE_FORMAT, key=key, name=name, files=files, size_bytes=sum(files.values()),
                         seconds=round(seconds, 3), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
            (temp / _ENTRY).write_text(json.dumps(entry, indent=1))
            for path in (temp / "stage").rglob("*"):
                if path.is_file():  # read-only: passes never write their inputs, and this says so
                    path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            os.rename(temp, self.folder / key)
        except OSError:
            self._remove(temp)
            if not (self.folder / key).is_dir():  # not a lost race with a parallel build: a real failure
                raise

    def evict(self) -> list[str]:
        """Remove least recently used entries until the cache fits its size bound; return their keys."""
        if not self.folder.is_dir():
            return []
        entries, now = [], time.time()
        for path in self.folder.iterdir():
            try:  # a parallel build may add or remove entries meanwhile
                if path.name.startswith(".tmp-") and now - path.stat().st_mtime > _STALE_TEMP_S:
                    self._remove(path)
                elif path.name.startswith(".trash-"):
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_dir() and not path.name.startswith("."):
                    entries.append((path.stat().st_mtime, path.name, _entry_size(path)))
            except OSError:
                continue
        total, removed = sum(size for _, _, size in entries), []
        for _, key, size in sorted(entries):
            if total <= self.max_bytes:
                break
            self._remove(self.folder / key)
            total -= size
            removed.append(key)
        return removed

    def _remove(self, path: Path) -> None:
        # Renamed away first, so no reader ever sees a half-deleted entry under its key.
        trash = path.with_name(f".trash-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _entry_size(path: Path) -> int:
    try:
        return int(json.loads((path / _ENTRY).read_text())["size_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _describe(artifact: Artifact, stage_dir: Path) -> dict | None:
    """entry.json's artifact part, or None when the JSON would not rebuild exactly this artifact (files
    outside the stage folder, stats that are not plain JSON)."""
    stage = stage_dir.resolve()
    if not artifact.path.resolve().is_relative_to(stage) or not all(
            f.resolve().is_relative_to(stage) for f in artifact.files()):
        return None
    fields = {f.name: getattr(artifact, f.name) for f in dataclasses.fields(artifact) if f.name != "path"}
    try:
        entry = json.loads(json.dumps({"kind": artifact.kind, "path": artifact.path.resolve().relative_to(stage)
                                       .as_posix(), "fields": fields}))
        rebuilt = _rebuild(entry, stage_dir)
    except (TypeError, ValueError, KeyError):
        return None
    same = all(getattr(rebuilt, name) == value for name, value in fields.items())
    return entry if same and rebuilt.path.resolve() == artifact.path.resolve() else None


def _rebuild(entry: dict, stage: Path) -> Artifact:
    cls = ARTIFACT_KINDS[entry["kind"]]
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in entry["fields"]:
            value = entry["fields"][f.name]
            values[f.name] = tuple(value) if isinstance(f.default, tuple) and isinstance(value, list) else value
    return cls(stage / entry["path"], **values)
