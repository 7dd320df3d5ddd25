"""Float weights stored in int8: what an int8 graph still keeps in float (a fused Attention's Q/K/V weights, the
embedding tables, float_fallback's MatMuls) written as int8 with one scale per row or column, each behind a
DequantizeLinear, so the bundle holds a quarter of their bytes.

ONNX Runtime folds a DequantizeLinear over constant inputs into a float initializer when the session loads if
`session.disable_quant_qdq` is "1" (otherwise it keeps DQ nodes for its QDQ fusions and would dequantize on every
call): the manifest carries that entry (`SESSION_ENTRIES`), so the graph computes exactly what it computed
before, with weights rounded once to int8. Only graphs without QDQ pairs take this (dynamic int8), since the
entry turns off the QDQ fusions a static graph runs on (docs/decisions/0185-float-weights-stored-int8.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.backends._onnx.blocks import symmetric_int8
from hfexport.backends._onnx.external import PROTOBUF_LIMIT, graph_bytes

# What the runtime passes to ONNX Runtime for a graph written here (recorded in the manifest's target.session).
SESSION_ENTRIES = {"session.disable_quant_qdq": "1"}
# Below 16 KB of fp32 (biases, LayerNorm scales, token-type embeddings) a tensor saves nothing worth a node.
_MIN_ELEMENTS = 4096
# (operator, input index) -> the axis that gets its own scale: a table read by rows, a weight by output column.
_ROW_TABLES = {("Gather", 0), ("EmbedLayerNormalization", 2), ("EmbedLayerNormalization", 3),
               ("EmbedLayerNormalization", 4)}  # fmt: skip
_COLUMN_WEIGHTS = {("MatMul", 1), ("Attention", 1)}


def store_float_weights_int8(path: Path) -> dict:
    """Rewrite the graph at `path` in place; returns what was stored (tensors, bytes before and after)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    external = graph_bytes(path) > PROTOBUF_LIMIT
    model = onnx.load(str(path))
    graph = model.graph
    uses: dict[str, set[tuple[str, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, index))
    stored, before, after, dequantize = [], 0, 0, []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or int(np.prod(init.dims)) < _MIN_ELEMENTS:
            continue
        axis = _axis(uses.get(init.name, set()), graph, init.name)
        if axis is None:
            continue
        weight = numpy_helper.to_array(init)
        codes, scale = symmetric_int8(weight, over=1 - axis)  # a scale per row (axis 0) or per column (axis 1)
        scale = scale.reshape(-1)  # DequantizeLinear's per-axis scale is 1-D
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(codes, init.name + "_int8"),
                                  numpy_helper.from_array(scale, init.name + "_scale")])
        dequantize.append(helper.make_node("DequantizeLinear", [init.name + "_int8", init.name + "_scale"],
                                           [init.name], name=init.name + "_stored_int8", axis=axis))
        stored.append(init.name)
        before += weight.nbytes
        after += codes.nbytes + scale.nbytes
    if not stored:
        return {"tensors": 0}
    for index, node in enumerate(dequantize):  # ahead of every consumer: the graph stays topologically sorted
        graph.node.insert(index, node)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
    else:
        onnx.save(model, str(path))
    return {"tensors": len(stored), "bytes_before": before, "bytes_after": after,
            "session_config_entries": dict(SESSION_ENTRIES)}


def _axis(uses: set[tuple[str, int]], graph, name: str) -> int | None:
    """The scale axis every consumer agrees on, or None (a tensor read two ways, or by an operator not listed)."""
    if not uses:
        return None
    if uses <= _ROW_TABLES:
        return 0
    if uses <= _COLUMN_WEIGHTS:
        return 1
    if uses == {("Gemm", 1)}:  # B is [K, N], or [N, K] with transB: the output column is the other axis
        gemms = [n for n in graph.node if n.op_type == "Gemm" and n.input[1] == name]
        trans = {next((a.i for a in n.attribute if a.name == "transB"), 0) for n in gemms}
        return None if len(trans) != 1 else (0 if trans.pop() else 1)
    return None

