"""`float_fallback`: which MatMuls an int8 graph keeps in float, ranked by their measured int8 error.

The float graph runs once per calibration item with every quantisable MatMul's activation input exposed as an
extra output; for each MatMul the int8 product is simulated in numpy the way ONNX Runtime's quantiser will do it
(weights symmetric int8 per output column or per tensor, 7-bit with `reduce_range`; activations uint8 with the
range of the tensor, as DynamicQuantizeLinear does) and compared with the float product. The ones with the largest
mean relative error stay in float.

NOTE: the error is measured at each MatMul, not at the model's output: one float pass instead of one quantised
build per MatMul. On all-MiniLM-L6-v2 keeping the top 4 / 6 of 18 in float gave cosine min 0.9857 / 0.9900 against
0.9818 / 0.9882 for the first 4 / 6 in graph order (docs/decisions/0184-int8-float-fallback.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from hfexport.backends._onnx.blocks import symmetric_int8

# Calibration items the ranking runs (each one float forward pass).
_ITEMS = 32


def rank_matmuls(source: Path, items: Iterable, encode: Callable[[object], dict], *, per_channel: bool,
                 reduce_range: bool, op_types: tuple[str, ...] = ("MatMul",)) -> list[tuple[str, float]]:
    """(node name, mean relative int8 error) of every MatMul with a constant weight, largest error first.
    `op_types` ("Attention") ranks fused Attention nodes by their Q/K/V projection (input 0 times weight 1),
    the product QAttention computes in int8."""
    import onnx

    from hfexport.backends._onnx.external import weight_array

    model = onnx.load(str(source), load_external_data=False)
    weights = {init.name: init for init in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights]
    if not nodes:
        return []
    folder = source.parent  # external data (if any) resolves beside the graph
    arrays = {n.name: np.asarray(weight_array(weights[n.input[1]], folder), np.float32) for n in nodes}
    quantised = {name: _weights_int8(w, per_channel, reduce_range) for name, w in arrays.items()}
    names = [n.input[0] for n in nodes]
    run = probe(model, names, folder)
    errors = np.zeros(len(nodes))
    count = 0
    for item in list(items)[:_ITEMS]:
        activations = run(encode(item))
        for k, (node, x) in enumerate(zip(nodes, activations, strict=True)):
            exact = x @ arrays[node.name]
            approx = _activations_uint8(x) @ quantised[node.name]
            errors[k] += float(np.linalg.norm(exact - approx) / (np.linalg.norm(exact) + 1e-12))
        count += 1
    if not count:
        return []
    ranked = sorted(zip((n.name for n in nodes), errors / count, strict=True), key=lambda pair: -pair[1])
    return [(name, float(error)) for name, error in ranked]


def probe(model, names: list[str], folder: Path | None = None) -> Callable[[dict], list]:
    """feeds -> the values of the tensors `names` of the float graph `model` (a ModelProto, left as it is; its
    external data, if any, resolves in `folder`, the temporary directory when None): the graph runs with them
    exposed as extra outputs, and the feeds a caller made for more inputs than the graph takes are cut to its own."""
    import onnx
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                                for name in dict.fromkeys(names) if name not in known)
    with tempfile.NamedTemporaryFile(suffix=".onnx", dir=folder) as file:
        onnx.save_model(exposed, file.name)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(file.name, options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return lambda feeds: session.run(names, {k: v for k, v in feeds.items() if k in wanted})


def _weights_int8(w: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """`w` after symmetric int8 quantisation and back (per output column when `per_channel`)."""
    codes, scales = symmetric_int8(w, over=0 if per_channel else None, limit=63.0 if reduce_range else 127.0)
    return (codes * scales).astype(np.float32)


def _activations_uint8(x: np.ndarray) -> np.ndarray:
    """`x` after DynamicQuantizeLinear (uint8, the tensor's range widened to hold 0) and back."""
    low, high = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = (high - low) / 255.0 or 1.0
    zero = np.clip(np.round(-low / scale), 0, 255)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)
