"""Extractive question answering: the best answer span inside the context."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import softmax


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context_positions: np.ndarray,
              max_answer_tokens: int = 30) -> tuple[int, int, float]:
    """Highest-scoring (start, end) with start <= end < start + max_answer_tokens, both in the context."""
    start_p = softmax(np.where(context_positions, start_logits, -1e9))
    end_p = softmax(np.where(context_positions, end_logits, -1e9))
    scores = np.triu(np.outer(start_p, end_p))
    scores = np.tril(scores, max_answer_tokens - 1)
    flat = int(scores.argmax())
    start, end = divmod(flat, scores.shape[1])
    return start, end, float(scores[start, end])


def normalise_inputs(texts, question=None, context=None) -> list:
    """(question, context) pairs, from question=/context= or a pair or a list of pairs."""
    if question is not None or context is not None:
        if question is None or context is None:
            raise ValueError("question answering needs both question= and context=")
        texts = [(question, context)]
    if texts and isinstance(texts, tuple) and len(texts) == 2 and isinstance(texts[0], str):
        texts = [texts]
    if not texts or not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
        raise ValueError("question answering takes (question, context) pairs")
    return [tuple(t) for t in texts]


def postprocess(outputs, batch, meta, texts, encoder, max_answer_tokens: int = 30, **_options):
    results = []
    for row, (_question, context) in enumerate(texts):
        in_context = np.array([sid == 1 for sid in batch.sequence_ids[row]])
        start, end, score = best_span(outputs["start_logits"][row], outputs["end_logits"][row],
                                      in_context, max_answer_tokens)
        char_start, char_end = int(batch.offsets[row, start, 0]), int(batch.offsets[row, end, 1])
        results.append({"answer": context[char_start:char_end], "score": score,
                        "start": char_start, "end": char_end})
    return results
