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

    from hfexport.passes._weight_only import weight_matrices

    graph = onnx.load(str(_toy_llm(tmp_path / "toy.onnx"))).graph
    found = {m.node: (m.op, m.role, m.params) for m in weight_matrices(graph, exclude_nodes=["down"])}
    assert found == {"embed": ("Gather", "embedding", VOCAB * HIDDEN), "up": ("MatMul", "block", HIDDEN * WIDE),
                     "head": ("MatMul", "lm_head", HIDDEN * VOCAB)}


@pytest.mark.parametrize("group_size", [32, 64])
@pytest.mark.parametrize(("blocks", "embedding"), [("int4", "int4"), ("int8", "int8"), ("int4", "int8")])
def test_weight_only_dequantized_weights_are_what_the_kernels_compute(tmp_path, group_size, blocks, embedding):
    """The search's float stand-ins equal MatMulNBits / GatherBlockQuantized outputs (accuracy_level 0)."""
    import onnx
    from onnx import numpy_helper

    from hfexport.passes._weight_only import _apply, dequantized, weight_matrices

    model = onnx.load(str(_toy_llm(tmp_path / "toy.onnx")))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    matrices = weight_matrices(model.graph)
    precisions = {m.node: embedding if m.op == "Gather" else blocks for m in matrices}
    deq = {m.weight: dequantized(weights[m.weight], m, precisions[m.node], group_size) for m in matrices}
    onnx.save(_apply(model, matrices, precisions, group_size=group_size, accuracy_level=0), str(tmp_path / "q.onnx"))
    ids = np.arange(VOCAB).reshape(2, -1)
    want = np.tanh(deq["E"][ids] @ deq["A"]) @ deq["B"] @ deq["L"]
    np.testing.assert_allclose(_run(tmp_path / "q.onnx", ids), want, atol=2e-5)
    assert not np.allclose(deq["B"], weights["B"])  # really quantised (the 96-deep B has a partial block at 64)


def test_weight_only_int8_embedding_is_gather_block_quantized_uint8(tmp_path):
    import onnx

    from hfexport.passes._weight_only import quantize_weights_only

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
    from hfexport.passes._weight_only import quantize_weights_only

    stats = quantize_weights_only(_toy_llm(tmp_path / "toy.onnx"), tmp_path / "q.onnx", bits=4, group_size=32,
                                  lm_head_precision="int8", embedding_precision="fp32", accuracy_level=4,
                                  exclude_nodes=["down"])
    ops = _ops(tmp_path / "q.onnx")
    assert ops["down"] == "MatMul" and ops["embed"] == "Gather"
    assert ops["up_Q4"] == "MatMulNBits" and ops["head_Q8"] == "MatMulNBits"
    assert stats["int4_matrices"] == 1 and stats["int8_matrices"] == 1 and stats["lm_head"] == "head"
