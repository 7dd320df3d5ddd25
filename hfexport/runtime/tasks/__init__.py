"""Task post-processing: raw graph outputs -> what a user wants (numpy only)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def label_of(id2label: dict, index: int) -> str:
    return str(id2label.get(str(index), id2label.get(index, f"LABEL_{index}")))
