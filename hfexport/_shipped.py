"""Find the shipped targets/ and recipes/ folders in a wheel install or a source checkout."""

from __future__ import annotations

from pathlib import Path

from hfexport.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """`kind` is "targets" or "recipes". A wheel has them under hfexport/_shipped/; a checkout at its top."""
    for candidate in (_PACKAGE / "_shipped" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"the shipped {kind}/ folder is missing from this install ({_PACKAGE})")


def resolve_named_yaml(kind: str, name_or_path: str) -> Path:
    """A bare name (`cpu`) looks in the shipped folder; anything with a suffix or slash is a path."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{kind[:-1]} file not found: {name_or_path}")
        return path
    folder = shipped_dir(kind)
    path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown {kind[:-1]} {name_or_path!r}{did_you_mean(name_or_path, names)} "
                          f"(known: {', '.join(names)}; or pass a path to a YAML file)")
    return path


def did_you_mean(name: str, known) -> str:
    """"; did you mean 'cpu'?" for a near miss of one of `known`, else ""."""
    import difflib

    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def list_shipped(kind: str) -> list[Path]:
    return sorted(shipped_dir(kind).glob("*.yaml"))
