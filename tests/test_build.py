"""End-to-end builds on tiny random-init models: export, fuse, quantise, bundle, load, compare to PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from hfexport.errors import BundleIntegrityError, FidelityError, OutputExistsError
from hfexport.progress import Progress
from hfexport.runtime import load
from hfexport.runtime.manifest import FORMAT_VERSION, read_manifest
from tests.conftest import INT8_PASSES

TEXTS = ["The weather in Paris was lovely today.", "Ada Lovelace wrote the first program.", "ok"]


def _torch_outputs(folder, task, inputs):
    import torch
    import transformers

    from tests.conftest import TASK_CLASSES

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = getattr(transformers, TASK_CLASSES[task]).from_pretrained(str(folder)).eval()
    if isinstance(inputs[0], tuple):
        enc = tokenizer([q for q, _ in inputs], [c for _, c in inputs], padding=True, return_tensors="pt")
    else:
        enc = tokenizer(inputs, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)
    return {k: v.numpy() for k, v in out.items()}, enc["attention_mask"].numpy()


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_build_feature_extraction_matches_torch_mean_pooling(built_bundle, tiny_model, arch):
    bundle = built_bundle(arch, "feature-extraction")
    vectors = load(bundle)(TEXTS)
    outputs, mask = _torch_outputs(tiny_model(arch, "feature-extraction"), "feature-extraction", TEXTS)
    hidden = outputs["last_hidden_state"]
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_build_text_classification_labels_and_scores(built_bundle, tiny_model, arch):
    bundle = built_bundle(arch, "text-classification")
    results = load(bundle)(TEXTS, top_k=None)
    outputs, _ = _torch_outputs(tiny_model(arch, "text-classification"), "text-classification", TEXTS)
    probs = np.exp(outputs["logits"]) / np.exp(outputs["logits"]).sum(-1, keepdims=True)
    for ranked, row in zip(results, probs):
        assert {r["label"] for r in ranked} == {"negative", "positive"}
        by_label = {r["label"]: r["score"] for r in ranked}
        np.testing.assert_allclose([by_label["negative"], by_label["positive"]], row, atol=1e-4)


def test_build_token_classification_returns_entities_with_offsets(built_bundle):
    results = load(built_bundle("bert", "token-classification"))(TEXTS, aggregation="none")
    assert len(results) == len(TEXTS)
    for text, tokens in zip(TEXTS, results):
        for token in tokens:
            assert token["entity"] in {"B-PER", "I-PER", "B-LOC", "I-LOC"}
            assert text[token["start"]:token["end"]] == token["word"]
            assert 0 <= token["score"] <= 1


def test_build_question_answering_span_lies_in_context(built_bundle, tiny_model):
    predictor = load(built_bundle("bert", "question-answering"))
    context = "Ada Lovelace wrote the first program for the Analytical Engine in 1843."
    answer = predictor(question="Who wrote the first program?", context=context)[0]
    assert context[answer["start"]:answer["end"]] == answer["answer"]
    assert 0 < answer["score"] <= 1
    # The span is the argmax of PyTorch's own logits over context tokens.
    outputs, _ = _torch_outputs(tiny_model("bert", "question-answering"), "question-answering",
                                [("Who wrote the first program?", context)])
    batch = predictor.encode([("Who wrote the first program?", context)])
    np.testing.assert_allclose(predictor.forward(batch)["start_logits"], outputs["start_logits"], atol=1e-4)


def test_build_fill_mask_top_k(built_bundle):
    predictor = load(built_bundle("bert", "fill-mask"))
    results = predictor(["The capital of France is [MASK]."], top_k=3)
    assert len(results[0]) == 3
    assert results[0][0]["score"] >= results[0][1]["score"] >= results[0][2]["score"]
    assert all("[MASK]" not in r["sequence"] for r in results[0])


def test_build_manifest_records_passes_checksums_and_signature(built_bundle):
    bundle = built_bundle("bert", "feature-extraction", passes=INT8_PASSES, gates={"cosine_min": 0.5})
    manifest = read_manifest(bundle)
    assert manifest.format_version == FORMAT_VERSION == 3
    assert [p.name for p in manifest.passes] == ["export_onnx", "optimize", "quantize"]
    assert all(p.seconds > 0 for p in manifest.passes)
    assert manifest.passes[1].stats["fused_operators"].get("Attention") == 2
    assert manifest.passes[2].stats["quantized_nodes"] > 0
    assert manifest.target.precision == "int8"
    assert {"model.onnx", "tokenizer/tokenizer.json", "report/report.json", "report/report.html"} <= set(manifest.files)
    assert all(len(entry.sha256) == 64 for entry in manifest.files.values())
    inputs = {i.name: i for i in manifest.signature.inputs}
    assert inputs["input_ids"].shape == ["batch", "sequence"]
    assert manifest.tools["onnxruntime"] and manifest.tools["torch"]
    assert manifest.validation.passed is True


def test_build_unfused_projections_put_qkv_into_int8(built_bundle):
    import onnx

    passes = [{"type": "export_onnx"}, {"type": "optimize", "attention": "unfused_projections"},
              {"type": "quantize", "precision": "int8", "op_types": ["MatMul"]}]
    bundle = built_bundle("bert", "feature-extraction", passes=passes, gates={"cosine_min": 0.5})
    fused = read_manifest(bundle).passes[1].stats["fused_operators"]
    assert fused.get("MultiHeadAttention") == 2 and not fused.get("Attention")
    ops = [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node]
    # q, k, v, attention output, FFN in and out: six int8 MatMuls per layer, two layers
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger") >= 12
    assert load(bundle)(["hello world"]).shape == (1, 32)


def test_build_bundle_holds_no_pickles(built_bundle):
    bundle = built_bundle("bert", "feature-extraction")
    for path in bundle.rglob("*"):
        if path.is_file():
            assert path.suffix not in {".bin", ".pkl", ".pt", ".pth", ".pickle"}
            assert not path.read_bytes()[:2] == b"\x80\x04", f"{path} looks like a pickle"


def test_load_refuses_tampered_bundle(built_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built_bundle("bert", "feature-extraction"), copy)
    with open(copy / "model.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleIntegrityError, match="model.onnx does not match its checksum"):
        load(copy)


def test_build_refuses_existing_output_without_force(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        build(str(tiny_model()), recipe=str(fast_recipe()), output=out, progress=Progress("quiet"))
    assert (out / "keep.txt").read_text() == "mine"


def test_build_gate_failure_installs_no_bundle_and_keeps_report(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    out = tmp_path / "strict"
    # int8 cannot reach a cosine of exactly 1.0: the gate must stop the build.
    recipe = fast_recipe(INT8_PASSES, gates={"cosine_min": 1.0})
    with pytest.raises(FidelityError, match="cosine_min") as caught:
        build(str(tiny_model()), recipe=str(recipe), output=out, progress=Progress("quiet"))
    assert caught.value.failures[0]["metric"] == "cosine_min"
    assert not out.exists()
    assert (tmp_path / "strict.failed-report" / "report.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strict")], "temporary folder left behind"


def test_build_no_gates_writes_bundle_that_failed(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    out = tmp_path / "forced"
    result = build(str(tiny_model()), recipe=str(fast_recipe(INT8_PASSES, gates={"cosine_min": 1.0})),
                   output=out, gates=False, progress=Progress("quiet"))
    assert result.report.passed is False
    assert read_manifest(out).validation.passed is False


def test_build_interrupted_leaves_nothing_behind(tiny_model, fast_recipe, tmp_path, monkeypatch):
    from hfexport.api import build
    from hfexport.passes import optimize

    def interrupt(self, artifact, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(optimize.OptimizePass, "run", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(str(tiny_model()), recipe=str(fast_recipe()), output=tmp_path / "out", progress=Progress("quiet"))
    assert list(tmp_path.iterdir()) == []


def test_build_static_int8_with_calibration_file(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    texts = tmp_path / "calib.txt"
    texts.write_text("\n".join(f"calibration sentence number {i} about trains and rivers" for i in range(20)))
    passes = [{"type": "export_onnx"}, {"type": "optimize"},
              {"type": "quantize", "mode": "static", "calibration_samples": 10}]
    result = build(str(tiny_model()), recipe=str(fast_recipe(passes, gates={"cosine_min": 0.5})),
                   calibration_data=texts, output=tmp_path / "static", progress=Progress("quiet"))
    stats = result.manifest.passes[2].stats
    assert stats["mode"] == "static" and stats["calibration_samples"] == 10
    assert result.report.stages[-1].fidelity["cosine_mean"] > 0.9


def test_build_dynamo_exporter_matches_torch(tiny_model, fast_recipe, tmp_path):
    from hfexport.api import build

    result = build(str(tiny_model()), recipe=str(fast_recipe([{"type": "export_onnx", "exporter": "dynamo"}])),
                   output=tmp_path / "dynamo", progress=Progress("quiet"))
    assert result.report.stages[-1].fidelity["cosine_min"] > 0.9999
