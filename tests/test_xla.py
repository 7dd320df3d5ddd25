"""The tpu target (backend xla): jax.export modules for every encoder task, the torch-free jax runtime
(buckets, thread safety, device choice), bf16, the manifest's export facts, the planner's refusals, and a
compile-only TPU check when libtpu is installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hfexport.errors import HfExportError, PlanError
from hfexport.progress import Progress
from hfexport.runtime import load
from hfexport.runtime.manifest import TensorSpec, read_manifest
from tests.conftest import TORCH_BLOCKER, assert_thread_safe
from tests.test_build import TEXTS, _torch_outputs

pytest.importorskip("jax")
pytest.importorskip("torchax")

FP32 = [{"type": "export"}]
BF16 = [{"type": "export", "precision": "bf16"}]
QA_PAIR = ("Who wrote the first program?", "Ada Lovelace wrote the first program for the Analytical Engine.")


@pytest.fixture(scope="session")
def xla_bundle(tiny_model, fast_recipe, tmp_path_factory):
    """xla_bundle(arch, task, passes=FP32, gates=None) -> a tpu bundle folder; one build per request."""
    from hfexport.api import build

    cache: dict = {}

    def factory(arch="bert", task="feature-extraction", passes=None, gates=None) -> Path:
        key = (arch, task, json.dumps(passes), json.dumps(gates))
        if key not in cache:
            out = tmp_path_factory.mktemp("xla-bundles") / f"{arch}-{task}"
            build(str(tiny_model(arch, task)), task=task, target="tpu",
                  recipe=str(fast_recipe(passes or FP32, gates)), output=out, progress=Progress("quiet"))
            cache[key] = out
        return cache[key]

    return factory


@pytest.mark.parametrize("arch, task", [
    ("bert", "feature-extraction"), ("bert", "text-classification"), ("bert", "token-classification"),
    ("bert", "question-answering"), ("bert", "fill-mask"),
    pytest.param("roberta", "feature-extraction", marks=pytest.mark.slow),
    pytest.param("distilbert", "feature-extraction", marks=pytest.mark.slow),
])  # fmt: skip
def test_xla_build_matches_torch_outputs(xla_bundle, tiny_model, arch, task):
    predictor = load(xla_bundle(arch, task))
    inputs = [QA_PAIR] if task == "question-answering" else TEXTS
    got = predictor.forward(predictor.encode(inputs))
    want, mask = _torch_outputs(tiny_model(arch, task), task, inputs)
    assert predictor.backend.backend == "xla"
    for name in predictor.backend.output_names:
        g, w = got[name], want[name]
        assert g.shape == w.shape, name  # padded to the buckets inside, cut back outside
        if g.ndim == 3:
            g, w = g[mask == 1], w[mask == 1]
        np.testing.assert_allclose(g, w, atol=1e-4, err_msg=name)


def test_xla_task_results_through_the_predictor(xla_bundle):
    labels = load(xla_bundle("bert", "text-classification"))(TEXTS)
    assert {r["label"] for r in labels} <= {"negative", "positive"}
    answer = load(xla_bundle("bert", "question-answering"))(question=QA_PAIR[0], context=QA_PAIR[1])[0]
    assert QA_PAIR[1][answer["start"]:answer["end"]] == answer["answer"]
    masks = load(xla_bundle("bert", "fill-mask"))(["The capital of France is [MASK]."], top_k=3)
    assert len(masks[0]) == 3


def test_xla_bundle_manifest_records_the_export(xla_bundle):
    bundle = xla_bundle("bert", "feature-extraction")
    manifest = read_manifest(bundle)
    assert manifest.model_file == "model.jax" and manifest.model_files == ["model.jax", "weights.safetensors"]
    assert {"model.jax", "weights.safetensors", "tokenizer/tokenizer.json"} <= set(manifest.files)
    target = manifest.target
    assert target.backend == "xla" and target.precision == "fp32"
    xla = target.session["xla"]
    assert xla["platforms"] == ["tpu", "cuda", "cpu"] and xla["sequence_buckets"] == [128, 256, 512]
    inputs = {i.name: i for i in manifest.signature.inputs}
    assert inputs["input_ids"] == TensorSpec(name="input_ids", dtype="int32", shape=["batch", "sequence"])
    assert manifest.signature.outputs[0].shape == ["batch", "sequence", 32]
    stats = manifest.passes[0].stats
    assert stats["max_abs_diff_vs_torch"] < 1e-3 and stats["platforms"] == ["tpu", "cuda", "cpu"]
    assert stats["jax"] and stats["exported"] and stats["module_bytes"] < 200_000
    assert manifest.validation.passed


def test_xla_bf16_bundle_passes_the_gates_in_half_the_bytes(xla_bundle):
    fp32 = read_manifest(xla_bundle("bert", "feature-extraction"))
    bundle = xla_bundle("bert", "feature-extraction", BF16)
    manifest = read_manifest(bundle)
    assert manifest.target.precision == "bf16" and manifest.passes[0].stats["precision"] == "bf16"
    assert manifest.files["weights.safetensors"].bytes < 0.55 * fp32.files["weights.safetensors"].bytes
    assert manifest.validation.passed
    # Outputs stay fp32 whatever the compute precision.
    assert manifest.signature.outputs[0].dtype == "float32"
    assert load(bundle)(TEXTS).dtype == np.float32


# -- the runtime backend ---------------------------------------------------------------------------

_ISOLATED = TORCH_BLOCKER + """
from hfexport.runtime import load
model = load(sys.argv[1])
result = model(["first sentence", "second one"])
print(json.dumps({"shape": list(result.shape), "backend": model.backend.backend, "heavy": sorted(
      m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "nncf", "torchax"))}))
"""


def test_xla_bundle_loads_and_runs_without_torch(xla_bundle):
    out = subprocess.run([sys.executable, "-c", _ISOLATED, str(xla_bundle("bert", "feature-extraction", BF16))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [2, 32], "backend": "xla", "heavy": []}


def test_xla_runtime_thread_safe_concurrent_calls(xla_bundle):
    assert_thread_safe(load(xla_bundle("bert", "feature-extraction")))


def test_xla_runtime_pads_to_buckets_and_compiles_each_once(xla_bundle):
    model = load(xla_bundle("bert", "feature-extraction"))
    backend = model.backend
    one = model(["a"])
    many = model([f"text {i}" for i in range(5)])
    assert one.shape == (1, 32) and many.shape == (5, 32)
    assert {shape for shape, _ in backend._compiled} == {(1, 128), (8, 128)}
    model([f"other {i}" for i in range(7)])  # 7 rows -> the 8 bucket again: no new shape
    assert {shape for shape, _ in backend._compiled} == {(1, 128), (8, 128)}
    np.testing.assert_allclose(model(["text 3"])[0], many[3], atol=1e-5)


_SPREAD = """
import json, sys
import numpy as np
from hfexport.runtime import load
model = load(sys.argv[1], threads=2)
texts = [f"text number {i}" for i in range(5)]
many = model(texts)
one_by_one = np.stack([model([t])[0] for t in texts])
print(json.dumps({"devices": len(model.backend.spread), "compiled": sorted(map(list, model.backend._compiled)),
                  "diff": float(np.abs(many - one_by_one).max())}))
"""


def test_xla_cpu_batch_is_split_over_one_device_per_thread(xla_bundle):
    # A fresh process: jax's CPU device count is set before its CPU client starts.
    out = subprocess.run([sys.executable, "-c", _SPREAD, str(xla_bundle("bert", "feature-extraction"))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    # 5 rows -> the 8 bucket, 4 rows on each device; batch 1 stays on the first
    assert result["compiled"] == [[[1, 128], 0], [[4, 128], 0], [[4, 128], 1]]
    assert result["diff"] < 1e-5


def test_xla_runtime_device_choice_is_checked(xla_bundle):
    bundle = xla_bundle("bert", "feature-extraction")
    assert load(bundle, device="cpu").backend.effective["device"] == "cpu"
    with pytest.raises(HfExportError, match="tpu, gpu or cpu"):
        load(bundle, device="NPU")
    with pytest.raises(HfExportError, match="providers"):
        load(bundle, providers=["CPUExecutionProvider"])


# -- planning ------------------------------------------------------------------------------------------


def test_xla_plan_leaves_optimize_out_and_refuses_quantize(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    model = str(tiny_model("bert", "feature-extraction"))
    recipe = fast_recipe([{"type": "export"}, {"type": "quantize", "precision": "int8"}])
    with pytest.raises(PlanError, match="not supported by target 'tpu'"):
        build(model, task="feature-extraction", target="tpu", recipe=str(recipe), output=tmp_path / "b",
              progress=Progress("quiet"))
    onnx_only = fast_recipe([{"type": "export", "exporter": "dynamo"}])
    with pytest.raises(PlanError, match="exporter"):
        build(model, task="feature-extraction", target="tpu", recipe=str(onnx_only), output=tmp_path / "c",
              progress=Progress("quiet"))


def test_xla_backend_refuses_quantize_at_plan_time():
    from hfexport.backends import get_backend
    from hfexport.backends.options import QuantizeConfig

    class Plan:
        target = type("T", (), {"name": "tpu"})()

    with pytest.raises(PlanError, match="has no quantiser"):
        get_backend("xla").check_quantize(QuantizeConfig(precision="fp16"), Plan())


def test_tpu_target_profile():
    from hfexport.profiles import load_target

    target = load_target("tpu")
    assert target.backend == "xla" and target.artifact == "stablehlo" and target.preferred_precision == "bf16"
    assert target.default_recipe == "bf16"
    assert target.session_options()["xla"]["batch_buckets"] == [1, 8, 32]


# -- compile-only TPU check (libtpu) -------------------------------------------------------------------


@pytest.mark.slow
def test_xla_tpu_compile_check_for_v5e_and_v6e(xla_bundle):
    from hfexport.backends._xla.compile_check import libtpu_available, summary, tpu_compile_check

    if not libtpu_available():
        pytest.skip("libtpu is not installed (pip install 'jax[tpu]')")
    bundle = xla_bundle("bert", "feature-extraction")
    check = tpu_compile_check(bundle / "model.jax", ["v5e:2x2", "v6e:2x2"], [1, 8], [128])
    assert check["note"].startswith("compile-only")
    assert [(r["topology"], r["batch"]) for r in check["rows"]] == [("v5e:2x2", 1), ("v5e:2x2", 8),
                                                                     ("v6e:2x2", 1), ("v6e:2x2", 8)]
    assert all(r["compiled"] and r["flops"] > 0 and r["memory_bytes"] > 0 for r in check["rows"])
    assert "4/4 shapes compiled" in summary(check)


def test_xla_inspect_says_when_a_bundle_needs_re_export(xla_bundle):
    import datetime

    from hfexport.runtime.backends.xla import reexport_note

    manifest = read_manifest(xla_bundle("bert", "feature-extraction"))
    exported = datetime.date.fromisoformat(manifest.passes[0].stats["exported"])
    assert reexport_note(manifest, today=exported) is None
    note = reexport_note(manifest, today=exported + datetime.timedelta(days=200))
    assert "re-export" in note and "200 days" in note


# -- text generation: one function over a static KV cache ----------------------------------------------

_GENERATE = TORCH_BLOCKER + """
from hfexport.runtime import load
model = load(sys.argv[1])
text = model("hello there", max_new_tokens=6)
print(json.dumps({"text": isinstance(text, str), "backend": model.backend.backend, "heavy": sorted(
      m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "nncf", "torchax"))}))
"""


@pytest.mark.parametrize("arch", ["llama", pytest.param("qwen2", marks=pytest.mark.slow)])
def test_xla_text_generation_greedy_parity_with_a_static_cache(build_llm, arch):
    bundle, result = build_llm(arch, [{"type": "export"}], target="tpu")
    manifest = read_manifest(bundle)
    stats = manifest.passes[0].stats
    assert stats["greedy_tokens_checked"] == 8 and stats["cache_length"] == 256  # the tiny models' max length
    assert stats["layers"] == 2 and stats["kv_heads"] == 2
    assert manifest.validation.passed and manifest.validation.summary["greedy_agreement"] == 1.0
    out = subprocess.run([sys.executable, "-c", _GENERATE, str(bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"text": True, "backend": "xla", "heavy": []}


def test_xla_decoder_refuses_past_its_static_cache(build_llm):
    bundle, _ = build_llm("llama", [{"type": "export"}], target="tpu")
    decoder = load(bundle).decoder
    ids = np.ones((1, 1), np.int64)
    with pytest.raises(HfExportError, match="static KV cache holds 256"):
        decoder.step(ids, np.ones((1, 257), np.int64), ids, decoder.empty_cache(1))


def test_xla_text_generation_in_bf16_keeps_a_bf16_cache_and_is_judged_by_the_gates(build_llm):
    """bf16 text generation (issue 15): weights, compute and KV cache in bf16, logits fp32; the export records how
    many greedy tokens equal PyTorch's on the same bf16 weights, the gates judge against PyTorch fp32."""
    bundle, _ = build_llm("llama", [{"type": "export", "precision": "bf16"}], gates={"top1_agreement": 0.5},
                          target="tpu")
    manifest = read_manifest(bundle)
    stats = manifest.passes[0].stats
    assert stats["precision"] == "bf16" and 0 <= stats["greedy_tokens_equal"] <= stats["greedy_tokens_checked"]
    decoder = load(bundle).decoder
    assert [str(c.dtype) for c in decoder.empty_cache(1)[:1]] == ["bfloat16"]
    assert manifest.validation.passed
    assert manifest.validation.summary["top1_agreement"] >= 0.5
    out = subprocess.run([sys.executable, "-c", _GENERATE, str(bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"text": True, "backend": "xla", "heavy": []}
