"""Next-token choice from logits: repetition penalty, temperature, top-k, top-p, greedy (numpy only).

The order and formulas follow transformers' logits processors, so a seedless greedy run gives the
same tokens as `generate(do_sample=False)` and the knobs mean what users expect from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingSettings:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature}); use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k}); 0 disables it")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (got {self.repetition_penalty})")


def apply_repetition_penalty(logits: np.ndarray, seen: list[np.ndarray], penalty: float) -> None:
    """In place, per row: logits of tokens already in that row are divided (or, if negative, multiplied)."""
    if penalty == 1.0:
        return
    for row, tokens in enumerate(seen):
        if tokens.size:
            values = logits[row, tokens]
            logits[row, tokens] = np.where(values < 0, values * penalty, values / penalty)


def choose(logits: np.ndarray, seen: list[np.ndarray], settings: SamplingSettings,
           rng: np.random.Generator) -> np.ndarray:
    """[batch, vocab] float logits -> [batch] int64 next tokens."""
    if not settings.do_sample and settings.repetition_penalty == 1.0:  # plain greedy: nothing to rewrite
        return np.asarray(logits).argmax(-1).astype(np.int64)
    scores = np.array(logits, dtype=np.float32, copy=True)
    apply_repetition_penalty(scores, seen, settings.repetition_penalty)
    if not settings.do_sample:
        return scores.argmax(-1).astype(np.int64)
    scores /= settings.temperature
    if 0 < settings.top_k < scores.shape[-1]:
        kth = np.partition(scores, -settings.top_k, axis=-1)[:, -settings.top_k][:, None]
        scores[scores < kth] = -np.inf
    if settings.top_p < 1.0:
        order = np.argsort(scores, axis=-1)  # ascending, as transformers' TopPLogitsWarper
        ordered = np.take_along_axis(scores, order, -1)
        probs = _softmax(ordered)
        remove = np.cumsum(probs, -1) <= 1 - settings.top_p
        remove[:, -1] = False  # always keep the most likely token
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, -1)
        scores[mask] = -np.inf
    probs = _softmax(scores.astype(np.float64))
    return np.array([rng.choice(probs.shape[-1], p=row / row.sum()) for row in probs], np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)
