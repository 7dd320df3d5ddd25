"""Facts about the host CPU, read without third-party packages (the runtime uses this too)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# Named ISA levels hfexport knows, from the most capable down. Profiles refer to these names.
ISA_LEVELS = ("amx", "avx512_vnni", "avx512", "avx2", "arm64", "generic")

_FLAG_RULES = {
    "amx": ("amx_int8", "amx_tile"),
    "avx512_vnni": ("avx512_vnni",),
    "avx512": ("avx512f", "avx512bw"),
    "avx2": ("avx2", "fma"),
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def host_isas() -> frozenset[str]:
    """Every ISA level this host supports (e.g. {"avx512_vnni", "avx512", "avx2", "generic"})."""
    found = {"generic"}
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        found.add("arm64")
    flags = cpu_flags()
    for level, needed in _FLAG_RULES.items():
        if all(flag in flags for flag in needed):
            found.add(level)
    return frozenset(found)


def best_isa(candidates: list[str] | tuple[str, ...] | None = None) -> str:
    """The most capable ISA level this host has, among `candidates` if given."""
    have = host_isas()
    for level in ISA_LEVELS:
        if level in have and (candidates is None or level in candidates):
            return level
    return "generic"


def physical_cores() -> int:
    try:
        import psutil  # optional: present in build installs

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def host_summary() -> dict:
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "isas": sorted(host_isas(), key=ISA_LEVELS.index),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
