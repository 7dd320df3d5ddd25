"""Lint as a test: ruff's rules, including the banned-api rule that keeps torch out of the runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.importorskip("ruff")
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_passes():
    out = subprocess.run([*_ruff(), "check", "hfexport", "tests", "scripts"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_runtime_banned_imports_are_caught(tmp_path):
    """The banned-api rule fires for torch inside hfexport/runtime/ and nowhere else."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "hfexport" / "runtime").mkdir(parents=True)
    (tmp_path / "hfexport" / "runtime" / "probe.py").write_text("import torch\n")
    (tmp_path / "hfexport" / "build_side.py").write_text("import torch\n")
    out = subprocess.run([*_ruff(), "check", "--select", "TID251", "."], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "must stay torch-free" in out.stdout
    assert "runtime/probe.py" in out.stdout and "build_side.py" not in out.stdout
