"""Last-position LM head in prefill: the decoder graphs take `logits_to_keep` (traced ONNX, OpenVINO) or
`logits_index` (the fused ONNX graph, decision 0199) and compute the LM head for the positions asked for only;
graphs exported without the input (bundles built before it) keep working through the same runtime decoders."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_generation import FP32_PASSES

OV_FP32 = [{"type": "export_openvino_generation"}]


def _prompt(length: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.random.default_rng(0).integers(3, 300, (1, length)).astype(np.int64)
    return ids, np.ones_like(ids), np.arange(length, dtype=np.int64)[None]


def _ort_prefill(path, keep: int | None = None, index: list[int] | None = None) -> np.ndarray:
    """A raw onnxruntime session over the bundle's graph: what the graph itself returns for `logits_to_keep` =
    `keep` (a traced graph) or the positions `index` (a fused graph's `logits_index`; None: every one)."""
    import onnxruntime as ort

    from hfexport.runtime.backends.onnxruntime import fused_feeds

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask, positions = _prompt()
    known = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
             "logits_to_keep": np.array(keep or 0, np.int64), **fused_feeds(mask, ids.shape[1], all_logits=True)}
    if index is not None:
        known["logits_index"] = np.array(index, np.int64)[None, :, None]
    feeds = {}
    for value in session.get_inputs():  # a fused graph has no mask nor position_ids (decision 0199)
        if value.name.startswith("past_key_values."):
            feeds[value.name] = np.zeros((1, value.shape[1], 0, value.shape[3]), np.float32)
        else:
            feeds[value.name] = known[value.name]
    return session.run(["logits"], feeds)[0]


def test_onnx_traced_prefill_graph_computes_only_the_kept_positions(build_llm):
    """`logits_to_keep` k keeps the last k positions (0: every one), as transformers' forward."""
    bundle, _ = build_llm("llama", [{"type": "export_onnx_generation", "graph": "traced"}])
    every, last, three = (_ort_prefill(bundle / "model.onnx", keep=k) for k in (0, 1, 3))
    assert every.shape[:2] == (1, 9) and last.shape == (1, 1, every.shape[2])
    np.testing.assert_allclose(last[:, 0], every[:, -1], atol=1e-5)
    np.testing.assert_allclose(three, every[:, -3:], atol=1e-5)
    _runtime_prefill_is_the_last_row(bundle, every, keeps=True)


def test_onnx_fused_prefill_graph_computes_only_the_named_positions(build_llm):
    """A fused graph (decisions 0191, 0199) computes the LM head for the positions `logits_index` names."""
    bundle, _ = build_llm("llama", [{"type": "export_onnx_generation", "graph": "fused"}])
    every, last, some = (_ort_prefill(bundle / "model.onnx", index=i) for i in (None, [8], [2, 5, 8]))
    assert every.shape[:2] == (1, 9) and last.shape == (1, 1, every.shape[2])
    np.testing.assert_allclose(last[:, 0], every[:, -1], atol=1e-5)
    np.testing.assert_allclose(some, every[:, [2, 5, 8]], atol=1e-5)
    _runtime_prefill_is_the_last_row(bundle, every, keeps=False)


def _runtime_prefill_is_the_last_row(bundle, every: np.ndarray, keeps: bool) -> None:
    from hfexport.runtime.backends.onnxruntime import open_session

    decoder = open_session(bundle / "model.onnx", {"intra_op_threads": 1}).decoder()
    assert decoder.keeps_logits is keeps and decoder.fed is not keeps
    logits, _ = decoder.step(*_prompt(), decoder.empty_cache(1))
    assert logits.shape == (1, every.shape[2])
    np.testing.assert_allclose(logits, every[:, -1], atol=1e-5)


def test_openvino_prefill_graph_computes_only_the_last_position(build_llm):
    ov = pytest.importorskip("openvino")
    from hfexport.runtime.backends.openvino import open_session

    bundle, _ = build_llm("llama", OV_FP32, None, "openvino")
    compiled = ov.Core().compile_model(str(bundle / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ids, mask, positions = _prompt()
    got = {}
    for keep in (0, 1):  # a fresh request each: the cache lives in the request's variables
        request = compiled.create_infer_request()
        request.infer({"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                       "logits_to_keep": np.array(keep, np.int64), "beam_idx": np.zeros(1, np.int32)})
        got[keep] = request.get_tensor("logits").data.copy()
    assert got[0].shape[:2] == (1, 9) and got[1].shape == (1, 1, got[0].shape[2])
    np.testing.assert_allclose(got[1][:, 0], got[0][:, -1], atol=1e-5)
    decoder = open_session(bundle / "model.xml", {"openvino": {"inference_precision": "f32"}}).decoder()
    assert decoder.keeps_logits
    logits, _ = decoder.step(ids, mask, positions, decoder.empty_cache(1))
    np.testing.assert_allclose(logits, got[0][:, -1], atol=1e-5)


def _export_without_keep(tiny_llm, tmp_path, monkeypatch, target: str):
    """The export pass as it was before `logits_to_keep`: the graph of an older bundle."""
    from hfexport.artifacts import TorchModel
    from hfexport.backends._onnx import export as onnx_export
    from hfexport.backends._openvino import export as ov_export
    from hfexport.context import BuildContext
    from hfexport.loading import resolve_model
    from hfexport.passes import export_aliases
    from hfexport.profiles import load_target
    from hfexport.recipes import Recipe

    module = onnx_export if target == "cpu" else ov_export
    monkeypatch.setattr(module, "keeps_logits", lambda model: False)
    passes = FP32_PASSES if target == "cpu" else OV_FP32
    source = resolve_model(str(tiny_llm("llama")))
    ctx = BuildContext(load_target(target), Recipe(name="t", passes=passes), source, tmp_path, source.local_dir, [])
    if target == "cpu":  # bundles before logits_to_keep were all traced
        step = export_aliases.ExportOnnxGenerationPass(export_aliases.ExportOnnxGenerationConfig(graph="traced"))
    else:
        step = export_aliases.ExportOpenVINOGenerationPass(export_aliases.ExportOpenVINOGenerationConfig())
    return step.run(TorchModel(source.local_dir), ctx)


@pytest.mark.parametrize("target", ["cpu", "openvino"])
def test_graph_without_logits_to_keep_still_generates_like_pytorch(tiny_llm, tmp_path, monkeypatch, target):
    """An older bundle's graph (no `logits_to_keep` input) passes the export's greedy check through the runtime
    decoder, and its prefill's last position equals its every-position logits' last row."""
    if target == "openvino":
        pytest.importorskip("openvino")
        from hfexport.runtime.backends.openvino import open_session
    else:
        from hfexport.runtime.backends.onnxruntime import open_session

    out = _export_without_keep(tiny_llm, tmp_path, monkeypatch, target)
    assert "logits_to_keep" not in out.inputs
    assert out.stats["greedy_tokens_checked"] == 8  # equal to PyTorch's generate, or the export raises
    decoder = open_session(out.path, {"intra_op_threads": 1, "openvino": {"inference_precision": "f32"}}).decoder()
    assert not decoder.keeps_logits
    every, _ = decoder.step(*_prompt(), decoder.empty_cache(1), all_logits=True)
    last, _ = decoder.step(*_prompt(), decoder.empty_cache(1))
    assert every.shape[:2] == (1, 9) and last.shape == (1, every.shape[2])
    np.testing.assert_allclose(last, every[:, -1], atol=1e-6)
