"""Next-token agreement of two stateful OpenVINO decoder IRs on calibration windows, for `int4_top1_target`.

On openvino the int4 candidates of that check are the LM head and the embedding table (the blocks are int4 by
`ratio`, NNCF's own rule): they go int4 only when the compressed graph's next token, teacher-forced on the
windows, agrees with the float graph's at least `target` of the time; otherwise they stay int8. The LM head
is most of the bytes a decode step reads in a small LLM (16.4 of ~24 MB on the bench Llama), so int4 there is
the step's largest saving (docs/decisions/0193-openvino-lm-head-int4-and-lean-step.md).
"""

from __future__ import annotations

import numpy as np

_BATCH = 4  # windows per request: bounds the [batch, tokens, vocab] logits held at once


def next_tokens(model, windows: list[list[int]], threads: int) -> np.ndarray:
    """The argmax next token at every position of every window, [windows, tokens]."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    names = {name for port in compiled.inputs for name in port.get_names()}
    tops = []
    for start in range(0, len(windows), _BATCH):
        ids = np.asarray(windows[start:start + _BATCH], np.int64)
        rows, length = ids.shape
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape).copy(),
                 "beam_idx": np.arange(rows, dtype=np.int32)}
        if "logits_to_keep" in names:
            feeds["logits_to_keep"] = np.array(0, np.int64)  # every position
        request = compiled.create_infer_request()  # fresh variables: an empty cache
        request.infer(feeds)
        tops.append(request.get_tensor("logits").data.argmax(-1))
    return np.concatenate(tops)


def agreement(reference: np.ndarray, model, windows: list[list[int]], threads: int) -> float:
    """Share of positions where `model`'s next token equals `reference` (next_tokens of the float graph)."""
    return float((next_tokens(model, windows, threads) == reference).mean())
