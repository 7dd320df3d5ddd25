"""`attention_int8`: the fused Attention's Q/K/V projection in int8 (QAttention), always or where measured gates
allow; and the option refused where it has no meaning."""

from __future__ import annotations

import json

import onnx
import pytest

from hfexport.backends.options import QuantizeConfig


def _int8(**options):
    return [{"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize", "precision": "int8", **options}]


def _quantize_stats(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    return next(s for s in manifest["passes"] if s["name"] == "quantize")["stats"]


def _ops(bundle) -> list[str]:
    return [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node]


def test_attention_int8_true_quantises_every_fused_attention(built_bundle):
    plain, every = built_bundle(passes=_int8(attention_int8=False)), built_bundle(passes=_int8(attention_int8=True))
    assert "Attention" in _ops(plain) and "QAttention" not in _ops(plain)
    ops = _ops(every)
    assert ops.count("QAttention") == _ops(plain).count("Attention") >= 2 and "Attention" not in ops
    assert ops.count("MatMulInteger") == _ops(plain).count("MatMulInteger")  # the MatMuls as before


@pytest.mark.parametrize(("gates", "expected"), [({"cosine_min": 0.0, "cosine_mean": 0.0}, "all"),
                                                 ({"cosine_min": 0.995, "cosine_mean": 0.0}, "none")])
def test_auto_keeps_the_attention_the_measured_gates_allow(built_bundle, gates, expected):
    bundle = built_bundle(passes=_int8(attention_int8="auto"), gates=gates)
    stats = _quantize_stats(bundle)
    chosen, floated, trials = stats["attention_int8"], stats["attention_float"], stats["attention_trials"]
    total = len(chosen) + len(floated)
    assert total >= 2 and _ops(bundle).count("QAttention") == len(chosen)
    assert all({"attention_float", "passed", "cosine_min", "cosine_mean"} <= set(t) for t in trials)
    assert all(-1.0 <= t["cosine_min"] <= t["cosine_mean"] <= 1.0 + 1e-6 for t in trials)
    if expected == "all":  # the first candidate (every Attention in int8) passes
        assert len(chosen) == total and trials == trials[:1] and trials[0]["passed"]
    else:  # a minimum's gate needs 0.01 to spare: 0.995 + 0.01 > 1, refused whatever is measured
        assert not chosen and [t["attention_float"] for t in trials] == [0, total // 2]
        assert not any(t["passed"] for t in trials)
        assert "QAttention" not in _ops(bundle)


def test_auto_ranks_attention_by_its_measured_int8_error(built_bundle):
    stats = _quantize_stats(built_bundle(passes=_int8(attention_int8="auto"),
                                         gates={"cosine_min": 0.995, "cosine_mean": 0.0}))
    names = {n.name for n in onnx.load(str(built_bundle(passes=_int8(attention_int8=False)) / "model.onnx")).graph.node
             if n.op_type == "Attention"}
    assert set(stats["attention_float"]) == names  # every one back in float, in ranked order


def test_auto_keeps_attention_float_for_a_task_it_cannot_measure(built_bundle):
    bundle = built_bundle("bert", "fill-mask", passes=_int8(attention_int8="auto"))
    assert _quantize_stats(bundle)["attention_int8"].startswith("not measured")
    assert "QAttention" not in _ops(bundle)


def test_attention_int8_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="attention_int8 applies to int8 with mode: dynamic"):
        QuantizeConfig(precision="int8", mode="static", attention_int8=True)
    with pytest.raises(ValueError, match="attention_int8 applies to int8 with mode: dynamic"):
        QuantizeConfig(precision="int4", weights_only=True, attention_int8="auto")
    assert QuantizeConfig(precision="int8", mode="static", attention_int8=False).attention_int8 is False


@pytest.mark.parametrize(("task", "gates"), [("text-classification", {"top1_agreement": 0.0}),
                                             ("token-classification", {"token_agreement": 0.0})])
def test_auto_measures_classifiers_with_their_own_agreement(built_bundle, task, gates):
    stats = _quantize_stats(built_bundle("bert", task, passes=_int8(attention_int8="auto"), gates=gates))
    metric = next(iter(gates))
    assert stats["attention_float"] == [] and len(stats["attention_int8"]) >= 2
    assert stats["attention_trials"][0]["passed"] and 0.0 <= stats["attention_trials"][0][metric] <= 1.0
