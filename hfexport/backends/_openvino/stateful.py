"""Make an OpenVINO KV-cache graph stateful: the past/present pairs become variables of the InferRequest.

After this the graph's inputs are input_ids, attention_mask, position_ids, logits_to_keep (where the export
made one) and beam_idx; its only output is logits. Each request keeps its own cache; `reset_state()` (or a
fresh request) starts a new sequence.

A beam_idx input although hfexport never reorders beams: the runtime feeds arange(batch).
NOTE: the CPU plugin's in-place cache append needs that Gather (docs/decisions/0043-openvino-stateful-kv-cache.md).
"""

from __future__ import annotations


def make_stateful(model, past: list[str], present: list[str], kv_heads: int, head_dim: int) -> None:
    """Rewrite `model` (an openvino.Model) in place."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    axis = ops.constant(np.int64(0))
    beam_idx = ops.parameter(ov.PartialShape([-1]), ov.Type.i32, name="beam_idx")
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    model.add_parameters([beam_idx])
    for name in past:
        port = model.input(name)
        consumers = list(port.get_target_inputs())
        reordered = ops.gather(port, beam_idx, axis)
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    apply_make_stateful_transformation(model, dict(zip(past, present)))
    # Without an initialiser a variable starts as whatever its declared shape allows, with no batch to
    # concatenate onto. A first step starts from zeros of [batch of input_ids, kv heads, 0, head dim].
    batch = ops.gather(ops.shape_of(model.input("input_ids"), output_type="i64"),
                       ops.constant(np.array([0], np.int64)), axis)
    shape = ops.concat([batch, ops.constant(np.array([kv_heads, 0, head_dim], np.int64))], axis=0)
    empty = ops.broadcast(ops.constant(np.float32(0)), shape)
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            op.set_arguments([empty])
    model.validate_nodes_and_infer_types()
