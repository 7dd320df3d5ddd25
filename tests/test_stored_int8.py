"""float_weight_storage: int8 — the weights an int8 graph leaves in float, stored in int8 and folded at load."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hfexport.backends._onnx.stored_int8 import SESSION_ENTRIES, store_float_weights_int8
from hfexport.backends.options import QuantizeConfig
from hfexport.errors import BundleIntegrityError, PlanError

_INT8 = [{"type": "export_onnx"}, {"type": "optimize"}, {"type": "quantize", "precision": "int8"}]


def _table_and_gemm(path):
    """ids -> Gather(table [64, 128]) -> Gemm(w [32, 128], transB) -> y; a shared bias stays float."""
    rng = np.random.default_rng(0)
    table = rng.normal(0, 1, (64, 128)).astype(np.float32)
    table[7] *= 50  # one row far larger than the rest: per-row scales keep the others exact to 1/127
    weight = rng.normal(0, 0.1, (32, 128)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
         helper.make_node("Gemm", ["rows", "w", "bias"], ["y"], name="gemm", transB=1)],
        "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(np.zeros(32, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _run(path, entries=None, optimized=None):
    options = ort.SessionOptions()
    for key, value in (entries or {}).items():
        options.add_session_config_entry(key, value)
    if optimized:
        options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": np.arange(64, dtype=np.int64)})[0]


def test_tables_by_row_and_weights_by_column_shrink_fourfold_and_stay_close(tmp_path):
    path = _table_and_gemm(tmp_path / "m.onnx")
    before_bytes, before = path.stat().st_size, _run(path)
    stats = store_float_weights_int8(path)
    assert stats["tensors"] == 2 and stats["session_config_entries"] == SESSION_ENTRIES
    assert stats["bytes_after"] < 0.27 * stats["bytes_before"]
    assert path.stat().st_size < 0.3 * before_bytes
    graph = onnx.load(str(path)).graph
    axes = {n.input[0]: n.attribute[0].i for n in graph.node if n.op_type == "DequantizeLinear"}
    assert axes == {"table_int8": 0, "w_int8": 0}  # Gemm with transB: the output column is w's row
    assert {i.name: i.data_type for i in graph.initializer}["bias"] == TensorProto.FLOAT  # too small to store
    after = _run(path, SESSION_ENTRIES)
    rows = slice(0, 7)  # rows beside the outlier row keep their own scale
    assert np.abs(after[rows] - before[rows]).max() < 0.02 * np.abs(before[rows]).max()


def test_onnx_runtime_folds_the_dequantize_only_with_the_recorded_entry(tmp_path):
    path = _table_and_gemm(tmp_path / "m.onnx")
    store_float_weights_int8(path)
    kept = [n.op_type for n in onnx.load(str(_opt(path, {}, tmp_path / "a.onnx"))).graph.node]
    folded = [n.op_type for n in onnx.load(str(_opt(path, SESSION_ENTRIES, tmp_path / "b.onnx"))).graph.node]
    assert kept.count("DequantizeLinear") == 2  # without it: dequantised on every call
    assert folded.count("DequantizeLinear") == 0  # with it: float initialisers once, at load
    np.testing.assert_allclose(_run(path, SESSION_ENTRIES), _run(path), rtol=1e-6, atol=1e-6)


def _opt(path, entries, out):
    _run(path, entries, optimized=out)
    return out


def test_a_default_cpu_bundle_stores_its_embedding_in_int8_and_says_how_to_load_it(built_bundle):
    from hfexport.runtime import load

    stored = built_bundle(passes=_INT8)
    plain = built_bundle(passes=[*_INT8[:2], {**_INT8[2], "float_weight_storage": "fp32"}])
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["target"]["session"]["config_entries"] == SESSION_ENTRIES
    quantize = next(p for p in manifest["passes"] if p["name"] == "quantize")
    assert quantize["params"]["float_weight_storage"] == "int8"
    assert quantize["stats"]["float_weights_stored_int8"]["tensors"] >= 1
    assert not json.loads((plain / "manifest.json").read_text())["target"]["session"].get("config_entries")
    assert (stored / "model.onnx").stat().st_size < (plain / "model.onnx").stat().st_size
    texts = ["a short sentence", "another, somewhat longer sentence about the weather today"]
    a, b = np.asarray(load(stored)(texts)), np.asarray(load(plain)(texts))
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.999


def test_float_weight_storage_is_refused_where_it_has_no_meaning(tiny_model):
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.passes.quantize import QuantizePass
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    with pytest.raises(ValueError, match="float_weight_storage applies to int8 with mode: dynamic"):
        QuantizeConfig(precision="int8", mode="static", float_weight_storage="int8")
    with pytest.raises(ValueError, match="float_weight_storage applies"):
        QuantizeConfig(precision="int4", weights_only=True, float_weight_storage="int8")
    source = resolve_model(str(tiny_model("bert", "feature-extraction")), log=lambda _m: None)
    step = QuantizePass(QuantizeConfig(precision="int8", float_weight_storage="int8"))
    with pytest.raises(PlanError, match="float_weight_storage: an ONNX Runtime quantiser option"):
        step.check(PlanContext(load_target("openvino"), load_recipe("default"), source, has_calibration_data=True))


def test_static_mode_on_cpu_keeps_float_storage(tiny_model):
    from hfexport.passes.quantize import with_target_defaults
    from hfexport.profiles import load_target

    cpu = load_target("cpu")
    assert with_target_defaults(QuantizeConfig(precision="int8"), cpu, False).float_weight_storage == "int8"
    assert with_target_defaults(QuantizeConfig(precision="int8", mode="static"), cpu, False).float_weight_storage \
        is None


def test_a_damaged_config_entry_is_named(tmp_path):
    from hfexport.runtime.backends.onnxruntime import _check_session

    with pytest.raises(BundleIntegrityError, match="config_entries should map strings to strings"):
        _check_session(tmp_path / "model.onnx", {"config_entries": {"session.disable_quant_qdq": 1}})
