"""Fill-mask: the top-k tokens for each mask position."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import softmax


def postprocess(outputs, batch, meta, texts, encoder, top_k: int = 5, **_options):
    mask_id = meta.mask_token_id
    logits = outputs["logits"]
    results = []
    for row in range(logits.shape[0]):
        positions = np.flatnonzero(batch.input_ids[row] == mask_id)
        if positions.size == 0:
            raise ValueError(f"text {row} has no {meta.mask_token or 'mask'} token")
        per_mask = []
        for pos in positions:
            probs = softmax(logits[row, pos])
            best = np.argsort(-probs)[:top_k]
            candidates = []
            for token_id in best:
                ids = batch.input_ids[row][batch.attention_mask[row] == 1].copy()
                ids[ids == mask_id] = token_id if positions.size == 1 else ids[ids == mask_id]
                candidates.append({"token": int(token_id), "token_str": encoder.decode([int(token_id)]).strip(),
                                   "score": float(probs[token_id]), "sequence": encoder.decode(ids.tolist())})
            per_mask.append(candidates)
        results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    return results
