"""Two cpu graph rewrites: SkipLayerNormalization written back as Add + LayerNormalization (and kept so when the
session loads), and SmoothQuant before dynamic int8 (exact in float, recorded in the manifest)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from hfexport.backends._onnx.skip_layer_norm import FUSION


def _passes(**quantize):
    return [{"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize", "precision": "int8", **quantize}]


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _stats(bundle, name) -> dict:
    return next(s for s in _manifest(bundle)["passes"] if s["name"] == name)["stats"]


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _session_ops(path, disabled) -> list[str]:
    """The operators ONNX Runtime runs after its own load-time rewrites, with `disabled` transformers off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_name(f"loaded-{len(disabled)}.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    return _ops(options.optimized_model_filepath)


def test_cpu_fusion_keeps_residual_layer_norm_standard_and_the_session_keeps_it(built_bundle, tmp_path):
    bundle = built_bundle(passes=[{"type": "export_onnx"}, {"type": "optimize"}])
    ops = _ops(bundle / "model.onnx")
    assert "Attention" in ops and "SkipLayerNormalization" not in ops  # the other fusions as before
    assert ops.count("LayerNormalization") == _stats(bundle, "optimize")["skip_layer_norm_unfused"] >= 2
    assert _manifest(bundle)["target"]["session"]["disabled_optimizers"] == [FUSION]
    copy = tmp_path / "model.onnx"
    copy.write_bytes((bundle / "model.onnx").read_bytes())
    # ONNX Runtime would fuse them again when the session opens; the bundle's setting stops exactly that
    assert "SkipLayerNormalization" in _session_ops(copy, [])
    assert "SkipLayerNormalization" not in _session_ops(copy, [FUSION])


def test_unfused_layer_norm_computes_what_the_fused_op_did(built_bundle, tmp_path):
    import onnxruntime as ort

    from hfexport.backends._onnx.skip_layer_norm import unfuse_skip_layer_norm

    bundle = built_bundle(passes=[{"type": "export_onnx"}, {"type": "optimize"}])
    model = onnx.load(str(bundle / "model.onnx"))
    fused = tmp_path / "fused.onnx"
    onnx.save(model, str(fused))  # SkipLayerNormalization back, by ONNX Runtime's own fusion at load
    session = {"fused": ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"]),
               "unfused": ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"],
                                               disabled_optimizers=[FUSION])}
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 90, size=(3, 11))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {i.name: feeds[i.name] for i in session["fused"].get_inputs()}
    a, b = (s.run(None, feeds)[0] for s in session.values())
    assert np.abs(a - b).max() < 1e-4
    assert unfuse_skip_layer_norm(model) == 0  # nothing left to rewrite


def test_smoothing_is_exact_in_float_and_balances_inputs_and_weights(built_bundle, tmp_path):
    import onnxruntime as ort
    from onnx import numpy_helper

    from hfexport.backends._onnx.smooth import channel_absmax, smooth_graph, smoothable

    graph = built_bundle(passes=[{"type": "export_onnx"}, {"type": "optimize"}]) / "model.onnx"
    rng = np.random.default_rng(1)
    fixed = []
    for length in (5, 9, 14):
        ids = rng.integers(5, 90, size=(1, length))
        fixed.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    out = tmp_path / "smoothed.onnx"
    stats = smooth_graph(graph, out, lambda: iter(fixed), 0.5, ["MatMul", "Attention"])
    targets = smoothable(onnx.load(str(graph)), ["MatMul", "Attention"])
    assert stats["smoothed_inputs"] == len(targets) >= 2 and stats["residual_muls"] >= 1
    # alpha 0.5: each channel's input maximum and its weight rows' maximum meet at their geometric mean
    smoothed = onnx.load(str(out))
    weights = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    after = channel_absmax(smoothed, list(targets), fixed)
    for name, (_, readers) in targets.items():
        rows = np.max([np.abs(weights[w]).max(axis=1) for _, w in readers], axis=0)
        np.testing.assert_allclose(after[name], rows, rtol=1e-3)
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, fixed[1])[0]
            for p in (graph, out))
    assert np.abs(a - b).max() < 1e-4


def test_int8_with_smoothing_records_it_and_keeps_fidelity(built_bundle):
    bundle = built_bundle(passes=_passes(smooth_quant_alpha=0.5, attention_int8=True),
                          gates={"cosine_mean": 0.9, "cosine_min": 0.0})
    stats = _stats(bundle, "quantize")
    assert stats["smooth_quant_alpha"] == 0.5 and stats["smoothed_inputs"] >= 2
    ops = _ops(bundle / "model.onnx")
    assert "QAttention" in ops and ops.count("Mul") >= stats["residual_muls"]
    assert _manifest(bundle)["validation"]["summary"]["cosine_mean"] >= 0.9


def test_smoothing_is_refused_where_it_has_no_meaning():
    from hfexport.errors import ConfigError
    from hfexport.recipes import PassSpec, pass_config

    with pytest.raises(ConfigError, match="smooth_quant_alpha applies to int8 activations"):
        pass_config(PassSpec(type="quantize", precision="int4", weights_only=True, smooth_quant_alpha=0.5))
