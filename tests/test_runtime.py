"""The runtime: torch-free in a fresh process, thread-safe, and strict about bundle integrity."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hfexport.errors import BundleIntegrityError
from hfexport.runtime import load
from tests.conftest import TORCH_BLOCKER, assert_thread_safe

# Blocks torch and transformers outright, so an import anywhere in the runtime fails the test.
_ISOLATED = TORCH_BLOCKER + """
from hfexport.runtime import load
model = load(sys.argv[1])
result = model(["first sentence", "second one"])
print(json.dumps({"shape": list(result.shape), "heavy": sorted(m for m in sys.modules
      if m.split(".")[0] in ("torch", "transformers", "optimum"))}))
"""


def test_runtime_loads_and_runs_without_torch_or_transformers(built_bundle):
    bundle = built_bundle("bert", "feature-extraction")
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload == {"shape": [2, 32], "heavy": []}


def test_runtime_thread_safe_concurrent_calls(built_bundle):
    assert_thread_safe(load(built_bundle("bert", "feature-extraction")), count=64)


def test_runtime_truncates_to_model_max_length(built_bundle):
    model = load(built_bundle("bert", "feature-extraction"))
    batch = model.encode(["word " * 1000, "short"])
    assert batch.input_ids.shape == (2, model.manifest.model.max_length)
    assert batch.attention_mask[1].sum() < batch.attention_mask[0].sum()
    assert model(["word " * 1000]).shape == (1, 32)


def test_runtime_padding_does_not_change_results(built_bundle):
    model = load(built_bundle("bert", "feature-extraction"))
    alone = model(["a short one"])
    padded = model(["a short one", "a much longer sentence that forces padding of the first one"])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_runtime_rejects_missing_manifest(tmp_path):
    with pytest.raises(BundleIntegrityError, match="not an hfexport bundle"):
        load(tmp_path)


def test_runtime_rejects_newer_format(built_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_bundle("bert", "feature-extraction"), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="format 99 is not supported"):
        load(copy)


def test_runtime_rejects_deleted_file(built_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_bundle("bert", "feature-extraction"), copy)
    (copy / "config.json").unlink()
    with pytest.raises(BundleIntegrityError, match="config.json is missing"):
        load(copy)


def test_runtime_bad_input_types(built_bundle):
    model = load(built_bundle("bert", "feature-extraction"))
    with pytest.raises(ValueError, match="string or a list of strings"):
        model([1, 2])
    qa = load(built_bundle("bert", "question-answering"))
    with pytest.raises(ValueError, match="question answering"):
        qa(["just text"])
