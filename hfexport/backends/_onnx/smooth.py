"""SmoothQuant for ONNX Runtime's int8: per-channel activation outliers moved into the weights before quantising.

Dynamic int8 quantises a MatMul's input with one scale over the whole tensor, so a channel that runs 10-15x larger
than the rest (all-MiniLM-L6-v2: channel 99 of each attention block's LayerNorm output reaches 28 where the
median channel stays under 2) spends the int8 range the others need. SmoothQuant (Xiao et al., 2023) divides each
channel of such an input by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplies row j of the weights by
it: the product is unchanged in float, the input is flatter for int8. Here the division folds into the
LayerNormalization that makes the input (its gamma and beta), the multiplication into every MatMul or fused
Attention that reads it, and the residual connection, which needs the unscaled value, gets one `Mul` by s.
The channel maxima come from the calibration text, run through the float graph one text at a time.

NOTE: measurements in docs/decisions/0196-smoothquant-for-dynamic-int8.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

# The normalisations whose output[0] can absorb a per-channel scale: op type -> (gamma input, beta input).
_NORMS = {"LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3), "EmbedLayerNormalization": (5, 6)}
# How far one channel's scale may go either way: bounds a near-dead channel and a degenerate weight row (a channel
# that never moved on the calibration text keeps scale 1).
_CLIP = (1e-3, 1e3)


def _readers(graph) -> dict[str, list]:
    """tensor name -> [(node, input index)] of every node that reads it."""
    users: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for k, name in enumerate(node.input):
            users[name].append((node, k))
    return users


def smoothable(model, weighted_ops: Iterable[str]) -> dict[str, tuple]:
    """{normalisation output: (its node, [(consumer node, weight name)])} for each normalisation with float
    gamma and beta whose output some MatMul / Attention of `weighted_ops` reads as input 0 with a 2-D float
    constant weight that no other node reads."""
    from onnx import TensorProto

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = _readers(graph)
    outputs = {o.name for o in graph.output}
    weighted_ops = set(weighted_ops)
    found = {}
    for node in graph.node:
        where = _NORMS.get(node.op_type)
        if where is None or len(node.input) <= where[1] or node.output[0] in outputs:
            continue
        gamma, beta = node.input[where[0]], node.input[where[1]]
        if not all(name in inits and inits[name].data_type == TensorProto.FLOAT for name in (gamma, beta)):
            continue
        weighted = []
        for user, k in users[node.output[0]]:
            if user.op_type not in weighted_ops or k != 0 or len(user.input) < 2:
                continue
            weight = inits.get(user.input[1])
            if (weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2
                    or len(users[user.input[1]]) != 1):
                continue
            weighted.append((user, user.input[1]))
        if weighted:
            found[node.output[0]] = (node, weighted)
    return found


def channel_absmax(model, names: list[str], feeds: Iterable[dict], folder: Path | None = None) -> dict[str, np.ndarray]:
    """The largest |value| of each channel (last axis) of the tensors `names`, over the float graph's runs."""
    from hfexport.backends._onnx.int8_fallback import probe

    run = probe(model, names, folder)
    found: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, run(feed)):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            found[name] = np.maximum(found[name], peak) if name in found else peak
    return found


def smooth_graph(source: Path, out: Path, feeds: Callable[[], Iterable[dict]], alpha: float,
                 weighted_ops: Iterable[str]) -> dict:
    """Write `source` smoothed at `alpha` to `out` (graphs under 2 GB); returns the pass's stats. A gamma or beta
    that several normalisations share (exporters dedupe equal ones) is copied for each before it is scaled."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    targets = smoothable(model, weighted_ops)
    if not targets:
        onnx.save(model, str(out))
        return {"smooth_quant_alpha": alpha, "smoothed_inputs": 0}
    peaks = channel_absmax(model, list(targets), feeds(), Path(source).parent)
    inits = {i.name: i for i in model.graph.initializer}
    users = _readers(model.graph)

    def scaled(name: str, by: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array((numpy_helper.to_array(inits[name]) * by).astype(np.float32),
                                                     name))

    def own(node, index: int) -> str:
        """The node's input `index` as an initializer only it reads (a copy when shared)."""
        name = node.input[index]
        if len(users[name]) > 1:
            copy = f"{name}_{node.name or node.output[0]}"
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]), copy))
            inits[copy] = model.graph.initializer[-1]
            users[name] = [(u, k) for u, k in users[name] if list(u.output) != list(node.output)]
            node.input[index] = copy
            name = copy
        return name

    after: dict[str, onnx.NodeProto] = {}  # normalisation output -> the Mul that restores it for other readers
    done = 0
    for name, (node, weighted) in targets.items():
        rows = np.max([np.abs(numpy_helper.to_array(inits[w])).max(axis=1) for _, w in weighted], axis=0)
        if rows.shape != peaks[name].shape:  # the weight does not read the tensor's last axis: leave it
            continue
        scale = np.clip(peaks[name] ** alpha / np.maximum(rows, 1e-8) ** (1 - alpha), *_CLIP)
        scale = np.where(peaks[name] > 0, scale, 1.0).astype(np.float32)
        where = _NORMS[node.op_type]
        scaled(own(node, where[0]), 1 / scale)
        scaled(own(node, where[1]), 1 / scale)
        for _, weight in weighted:
            scaled(weight, scale[:, None])
        smoothed = {user.output[0] for user, _ in weighted}  # read as input 0: the smoothed value is theirs
        readers = [(user, k) for user, k in users[name] if not (user.output[0] in smoothed and k == 0)]
        if readers:
            restored = f"{name}_unsmoothed"
            model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}_smooth_scale"))
            after[node.output[0]] = helper.make_node("Mul", [name, f"{name}_smooth_scale"], [restored],
                                                     name=f"{node.name or name}_unsmooth")
            for user, k in readers:
                user.input[k] = restored
        done += 1
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        if node.output and node.output[0] in after:
            nodes.append(after[node.output[0]])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return {"smooth_quant_alpha": alpha, "smoothed_inputs": done, "residual_muls": len(after)}
