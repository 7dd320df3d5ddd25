"""Sequence classification: probabilities with the model's labels."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import label_of, softmax


def probabilities(logits: np.ndarray, meta) -> np.ndarray:
    if meta.problem_type == "multi_label_classification":
        return 1.0 / (1.0 + np.exp(-logits))
    return softmax(logits)


def postprocess(outputs, batch, meta, texts, encoder, top_k: int | None = 1, **_options):
    probs = probabilities(outputs["logits"], meta)
    id2label = meta.id2label or {}
    results = []
    for row in probs:
        order = np.argsort(-row)[: top_k or len(row)]
        ranked = [{"label": label_of(id2label, int(i)), "score": float(row[i])} for i in order]
        results.append(ranked[0] if top_k == 1 else ranked)
    return results
