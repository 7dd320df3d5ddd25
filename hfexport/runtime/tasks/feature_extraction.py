"""Sentence embeddings: the pooling and normalisation the model folder declared."""

from __future__ import annotations

import numpy as np


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str = "mean", normalize: bool = False) -> np.ndarray:
    mask = attention_mask[..., None].astype(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = np.where(mask > 0, hidden, np.finfo(hidden.dtype).min).max(axis=1)
    elif mode == "last":
        last = attention_mask.sum(axis=1).astype(np.int64) - 1
        pooled = hidden[np.arange(hidden.shape[0]), last]
    elif mode in ("mean", "mean_sqrt_len"):
        summed = (hidden * mask).sum(axis=1)
        counts = np.clip(mask.sum(axis=1), 1e-9, None)
        pooled = summed / (np.sqrt(counts) if mode == "mean_sqrt_len" else counts)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")
    if normalize:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled = pooled / np.clip(norms, 1e-12, None)
    return pooled.astype(np.float32, copy=False)


def postprocess(outputs, batch, meta, texts, encoder, **_options) -> np.ndarray:
    mode, normalize = (meta.pooling.mode, meta.pooling.normalize) if meta.pooling else ("mean", False)
    return pool(outputs["last_hidden_state"], batch.attention_mask, mode, normalize)
