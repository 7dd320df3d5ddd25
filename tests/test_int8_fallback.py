"""`float_fallback`: the int8 MatMuls with the largest measured error stay in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hfexport.backends._onnx.int8_fallback import rank_matmuls
from hfexport.backends.options import QuantizeConfig
from hfexport.errors import PlanError


def _two_matmuls(path, outlier: float):
    """x -> MatMul(w_plain) -> Relu -> MatMul(w_outlier) -> y, 16 wide; one weight of w_outlier is `outlier`."""
    rng = np.random.default_rng(0)
    plain = rng.normal(0, 0.1, (16, 16)).astype(np.float32)
    spiky = rng.normal(0, 0.1, (16, 16)).astype(np.float32)
    spiky[3, 5] = outlier
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_plain"], ["h"], name="plain"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w_spiky"], ["y"], name="spiky")],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        [numpy_helper.from_array(plain, "w_plain"), numpy_helper.from_array(spiky, "w_spiky")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _items(count=8):
    rng = np.random.default_rng(1)
    return [rng.normal(0, 1, (4, 16)).astype(np.float32) for _ in range(count)]


def test_the_matmul_whose_weights_have_an_outlier_ranks_first(tmp_path):
    model = _two_matmuls(tmp_path / "m.onnx", outlier=40.0)
    ranked = rank_matmuls(model, _items(), lambda x: {"x": x}, per_channel=False, reduce_range=True)
    assert [name for name, _ in ranked] == ["spiky", "plain"]
    errors = dict(ranked)
    assert errors["spiky"] > 5 * errors["plain"] > 0
    # per-channel scales confine the outlier to its column: the error falls
    per_column = dict(rank_matmuls(model, _items(), lambda x: {"x": x}, per_channel=True, reduce_range=True))
    assert per_column["spiky"] < errors["spiky"]
    assert not list(tmp_path.glob("tmp*.onnx"))  # the probe graph is gone


def test_quantize_int8_keeps_the_ranked_matmuls_in_float(tmp_path):
    from hfexport.backends._onnx.int8 import Int8Settings, quantize_int8

    model = _two_matmuls(tmp_path / "m.onnx", outlier=40.0)
    settings = Int8Settings(mode="dynamic", op_types=("MatMul",), per_channel=False, reduce_range=True,
                            weight_type="int8", activation_type="uint8", isa="avx2", float_fallback=1)
    stats = quantize_int8(settings, model, tmp_path / "q.onnx", _items(), lambda x: {"x": x})
    assert [name for name, _ in stats["float_fallback"]] == ["spiky"]
    nodes = {n.name: n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert nodes["spiky"] == "MatMul"  # kept in float
    assert "MatMulInteger" in nodes.values()  # the other one is int8


def test_build_records_the_float_matmuls(built_bundle):
    import json

    bundle = built_bundle(passes=[{"type": "export_onnx"}, {"type": "optimize"},
                                  {"type": "quantize", "precision": "int8", "float_fallback": 2}])
    manifest = json.loads((bundle / "manifest.json").read_text())
    quantize = next(s for s in manifest["passes"] if s["name"] == "quantize")
    kept = [name for name, _ in quantize["stats"]["float_fallback"]]
    assert len(kept) == 2
    graph = onnx.load(str(bundle / "model.onnx")).graph
    ops = {n.name: n.op_type for n in graph.node}
    assert all(ops[name] == "MatMul" for name in kept)
    assert sum(op == "MatMulInteger" for op in ops.values()) >= 1


def test_float_fallback_is_refused_where_it_has_no_meaning(tiny_model, tiny_llm):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.passes.quantize import QuantizePass
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    with pytest.raises(ValueError, match="float_fallback ranks int8 MatMuls"):
        QuantizeConfig(precision="int4", weights_only=True, float_fallback=2)

    def check(model, target):
        recipe = load_recipe("default")
        source = resolve_model(str(model), log=lambda _m: None)
        step = QuantizePass(QuantizeConfig(precision="int8", float_fallback=2))
        step.check(PlanContext(load_target(target), recipe, source, has_calibration_data=True))

    with pytest.raises(PlanError, match="float_fallback: an ONNX Runtime quantiser option"):
        check(tiny_model("bert", "feature-extraction"), "openvino")
    with pytest.raises(PlanError, match="float_fallback ranks MatMuls on encoder inputs"):
        check(tiny_llm("llama"), "cpu")
