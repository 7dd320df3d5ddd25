"""Weight-only quantisation on hand-built graphs: the per-node precision plan, int8 embeddings, the int4 search."""

from __future__ import annotations

import numpy as np
import pytest

VOCAB, HIDDEN, WIDE = 64, 32, 96


def _toy_llm(path, seed: int = 0):
    """input_ids -> Gather(E) -> MatMul(A) -> MatMul(B, K=96 wide) -> MatMul(L) -> logits: an LLM's weight layout."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shapes = {"E": (VOCAB, HIDDEN), "A": (HIDDEN, WIDE), "B": (WIDE, HIDDEN), "L": (HIDDEN, VOCAB)}
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n) for n, s in shapes.items()]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "A"], ["a"], name="up"),
             helper.make_node("Tanh", ["a"], ["t"], name="act"),
             helper.make_node("MatMul", ["t", "B"], ["b"], name="down"),
             helper.make_node("MatMul", ["b", "L"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, None, VOCAB])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path, ids):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": np.asarray(ids, np.int64)})[0]


def _ops(path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def test_weight_matrices_names_roles_and_skips_excluded(tmp_path):
    import onnx

    from hfexport.backends._onnx.weight_only import weight_matrices

    graph = onnx.load(str(_toy_llm(tmp_path / "toy.onnx"))).graph
    found = {m.node: (m.op, m.role, m.params) for m in weight_matrices(graph, exclude_nodes=["down"])}
    assert found == {"embed": ("Gather", "embedding", VOCAB * HIDDEN), "up": ("MatMul", "block", HIDDEN * WIDE),
                     "head": ("MatMul", "lm_head", HIDDEN * VOCAB)}


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [32, 64])
@pytest.mark.parametrize(("blocks", "embedding"), [("int4", "int4"), ("int8", "int8"), ("int4", "int8")])
def test_weight_only_dequantized_weights_are_what_the_kernels_compute(tmp_path, group_size, blocks, embedding,
                                                                      symmetric):
    """The search's float stand-ins equal MatMulNBits / GatherBlockQuantized outputs (accuracy_level 0), with
    zero points and without (symmetric_weights: MatMul blocks only; the table stays asymmetric)."""
    import onnx
    from onnx import numpy_helper

    from hfexport.backends._onnx.blocks import dequantized
    from hfexport.backends._onnx.weight_only import _apply, weight_matrices

    model = onnx.load(str(_toy_llm(tmp_path / "toy.onnx")))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    matrices = weight_matrices(model.graph)
    precisions = {m.node: embedding if m.op == "Gather" else blocks for m in matrices}
    deq = {m.weight: dequantized(weights[m.weight], m, precisions[m.node], group_size, symmetric) for m in matrices}
    quantized = _apply(model, matrices, precisions, group_size=group_size, accuracy_level=0, symmetric=symmetric)
    nbits = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all((len(n.input) > 3 and n.input[3] != "") != symmetric for n in nbits)  # zero points or not
    onnx.save(quantized, str(tmp_path / "q.onnx"))
    ids = np.arange(VOCAB).reshape(2, -1)
    want = np.tanh(deq["E"][ids] @ deq["A"]) @ deq["B"] @ deq["L"]
    np.testing.assert_allclose(_run(tmp_path / "q.onnx", ids), want, atol=2e-5)
    assert not np.allclose(deq["B"], weights["B"])  # really quantised (the 96-deep B has a partial block at 64)


def test_weight_only_int8_embedding_is_gather_block_quantized_uint8(tmp_path):
    import onnx

    from hfexport.backends._onnx.weight_only import quantize_weights_only

    source = _toy_llm(tmp_path / "toy.onnx")
    stats = quantize_weights_only(source, tmp_path / "q.onnx", bits=4, group_size=32, lm_head_precision="fp32",
                                  embedding_precision="int8", accuracy_level=4, exclude_nodes=["up", "down"])
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}
    assert attrs["bits"] == 8 and attrs["block_size"] == 32
    assert next(i for i in graph.initializer if i.name == gather.input[0]).data_type == onnx.TensorProto.UINT8
    assert stats["embedding_precision"] == "int8" and "E" not in {i.name for i in graph.initializer}
    ids = np.arange(VOCAB).reshape(2, -1)
    reference = _run(source, ids)
    assert np.abs(_run(tmp_path / "q.onnx", ids) - reference).max() < 0.02 * np.abs(reference).max()


def test_weight_only_excluded_node_stays_float_when_lm_head_is_quantised(tmp_path):
    """Regression: the LM head's own quantiser run also took every other MatMul left in float."""
    from hfexport.backends._onnx.weight_only import quantize_weights_only

    stats = quantize_weights_only(_toy_llm(tmp_path / "toy.onnx"), tmp_path / "q.onnx", bits=4, group_size=32,
                                  lm_head_precision="int8", embedding_precision="fp32", accuracy_level=4,
                                  exclude_nodes=["down"])
    ops = _ops(tmp_path / "q.onnx")
    assert ops["down"] == "MatMul" and ops["embed"] == "Gather"
    assert ops["up_Q4"] == "MatMulNBits" and ops["head_Q8"] == "MatMulNBits"
    assert stats["int4_matrices"] == 1 and stats["int8_matrices"] == 1 and stats["lm_head"] == "head"


# -- the int4 / int8 search (int4_top1_target) ------------------------------------------------------------------


def test_int4_search_mix_keeps_the_target_through_the_real_kernels(tmp_path):
    """The probe's agreement for the chosen mix is what the quantised graph (accuracy_level 0) gives."""
    from hfexport.backends._onnx.int4_search import SearchSettings
    from hfexport.backends._onnx.weight_only import quantize_weights_only

    source = _toy_llm(tmp_path / "toy.onnx")
    windows = np.random.default_rng(1).integers(0, VOCAB, (16, 32)).tolist()
    stats = quantize_weights_only(source, tmp_path / "q.onnx", bits=4, group_size=32, lm_head_precision="int4",
                                  embedding_precision="int4", accuracy_level=0, exclude_nodes=[],
                                  search=SearchSettings(windows, target=0.9, threads=1))
    # On this toy every matrix alone in int4 agrees on 0.86-0.93 and int4 everywhere on 0.82: a split.
    assert stats["int4_matrices"] == 2 and stats["int8_matrices"] == 2
    assert stats["calibration_top1"] >= 0.9 and stats["int8_only_calibration_top1"] > stats["calibration_top1"]
    agreement = float((_run(tmp_path / "q.onnx", windows).argmax(-1) == _run(source, windows).argmax(-1)).mean())
    assert agreement == pytest.approx(stats["calibration_top1"], abs=1e-3)
    ops = _ops(tmp_path / "q.onnx")
    assert sorted(name[-2:] for name, op in ops.items() if op in ("MatMulNBits", "GatherBlockQuantized")) == \
        ["Q4", "Q4", "Q8", "Q8"]


@pytest.mark.parametrize(("target", "int4"), [(0.5, 4), (0.99, 0)])
def test_int4_search_all_int4_when_it_passes_and_none_when_no_single_matrix_does(tmp_path, target, int4):
    from hfexport.backends._onnx.int4_search import SearchSettings
    from hfexport.backends._onnx.weight_only import quantize_weights_only

    windows = np.random.default_rng(1).integers(0, VOCAB, (16, 32)).tolist()
    stats = quantize_weights_only(_toy_llm(tmp_path / "toy.onnx"), tmp_path / "q.onnx", bits=4, group_size=32,
                                  lm_head_precision="int4", embedding_precision="int4", accuracy_level=4,
                                  exclude_nodes=[], search=SearchSettings(windows, target=target, threads=1))
    assert stats["int4_matrices"] == int4 and stats["int4_matrices"] + stats["int8_matrices"] == 4


def test_int4_search_budget_takes_cheapest_error_per_parameter_and_skips_what_overflows():
    from hfexport.backends._onnx.blocks import WeightMatrix
    from hfexport.backends._onnx.int4_search import _bisect_budget

    # A top-1 that falls linearly with the summed error: the pick must stay under an error of 0.1.
    sizes = {"a": (0.01, 100), "b": (0.5, 10_000), "c": (0.02, 100), "d": (0.06, 100), "e": (0.2, 100)}
    order = sorted((WeightMatrix(n, n, "MatMul", "block", p) for n, (_, p) in sizes.items()),
                   key=lambda m: sizes[m.node][0] / m.params)
    sensitivity = {n: e for n, (e, _) in sizes.items()}

    def trial(int4):
        return 0.0, 1.0 - sum(sensitivity[n] for n in int4)

    everything = frozenset(sizes)
    picked, top1, _ = _bisect_budget(order, sensitivity, trial, {everything: trial(everything)[1],
                                                                  frozenset(): 1.0}, target=0.9)
    # b has the least error per parameter but alone overflows; a, c, d fit (0.09), e would not.
    assert picked == {"a", "c", "d"} and top1 == pytest.approx(0.91)
