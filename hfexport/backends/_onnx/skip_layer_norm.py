"""SkipLayerNormalization back into Add + LayerNormalization, for ONNX Runtime's CPU execution provider.

ONNX Runtime's transformer fusions turn every residual `Add` + `LayerNormalization` into the contrib op
SkipLayerNormalization. On the CPU provider (onnxruntime 1.32) that kernel runs 5-6x slower than the two standard
ops it replaces (128 x 384: 188 us vs 31 us on one thread), and it is ~25% of a fused int8 MiniLM's time; the
simplified (RMS) variant is not affected. So cpu builds write the residual as `Add` (+ the bias `Add`) and a
standard LayerNormalization, and the bundle's session turns off ONNX Runtime's own `SkipLayerNormFusion`, which
would fuse them again when the session loads (docs/decisions/0195-skip-layer-norm-unfused-on-cpu.md).
"""

from __future__ import annotations

# ONNX Runtime's graph transformer that rebuilds SkipLayerNormalization when a session opens.
FUSION = "SkipLayerNormFusion"


def unfuse_skip_layer_norm(model) -> int:
    """Rewrite, in place, each SkipLayerNormalization of the onnx ModelProto `model` whose mean and inverse-std
    outputs nothing reads; returns how many were rewritten (none below opset 17, which lacks LayerNormalization)."""
    from onnx import helper

    if not any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):
        return 0  # LayerNormalization is an opset-17 operator: an older graph keeps the fused op
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes, rewritten = [], 0
    for node in graph.node:
        outputs = list(node.output) + [""] * (4 - len(node.output))
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or any(
                name and name in read for name in outputs[1:3]):
            nodes.append(node)
            continue
        data, skip, gamma = node.input[:3]
        beta = node.input[3] if len(node.input) > 3 and node.input[3] else ""
        bias = node.input[4] if len(node.input) > 4 and node.input[4] else ""
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        prefix = node.name or outputs[0]
        if bias:  # the bias first: ONNX Runtime folds MatMul + bias Add into one kernel (float and int8)
            biased = f"{prefix}_biased"
            nodes.append(helper.make_node("Add", [data, bias], [biased], name=f"{prefix}_bias_add"))
            data = biased
        summed = outputs[3] if outputs[3] else f"{prefix}_residual_sum"
        nodes.append(helper.make_node("Add", [data, skip], [summed], name=f"{prefix}_residual_add"))
        nodes.append(helper.make_node("LayerNormalization", [summed, gamma] + ([beta] if beta else []),
                                      [outputs[0]], name=f"{prefix}_layer_norm", axis=-1, epsilon=epsilon))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten
