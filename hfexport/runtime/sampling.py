"""Next-token choice from logits: repetition penalty, temperature, top-k, top-p, greedy (numpy only).

The order and formulas follow transformers' logits processors, so a seedless greedy run gives the
same tokens as `generate(do_sample=False)` and the knobs mean what users expect from them. Sampling draws
among the tokens top-k and top-p keep, found without sorting the vocabulary (decision 0200).
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
    scores = np.asarray(logits, dtype=np.float32)
    if settings.repetition_penalty != 1.0:
        scores = scores.copy()
        apply_repetition_penalty(scores, seen, settings.repetition_penalty)
    if not settings.do_sample:
        return scores.argmax(-1).astype(np.int64)
    return np.array([sample_token(row, settings, rng) for row in scores], np.int64)


def sample_token(scores: np.ndarray, settings: SamplingSettings, rng: np.random.Generator) -> int:
    """One row's next token, drawn from `candidates` with one `rng.random()` (as `Generator.choice` draws)."""
    ids, weights = candidates(scores, settings)
    pick = _draw(weights, rng.random())
    return pick if ids is None else int(ids[pick])


# NOTE: sampling works on the tokens top-k and top-p can keep, not on the whole vocabulary: sorting it for top-p,
# a float64 softmax over it and numpy's `Generator.choice` (which validates and sums `p`) took 1.1-1.2 ms a token
# for a 32,000-token vocabulary, 1.4x an int4 decode step of the bench Llama (docs/decisions/0200).
_NUCLEUS_FIRST = 64  # candidates tried first for top-p without top-k (then 16x more, then every token)
_BLOCK = 512  # _draw's block: a cumulative sum over blocks, then inside one


def candidates(scores: np.ndarray, settings: SamplingSettings) -> tuple[np.ndarray | None, np.ndarray]:
    """One row's sampling distribution after temperature, top-k and top-p, as transformers' warpers give it: the
    kept token ids in ascending order (None: every token) and their unnormalised float64 weights. `scores` is
    only read."""
    vocab = scores.shape[-1]
    temperature = np.float32(settings.temperature)
    ids = None
    if 0 < settings.top_k < vocab:  # every token at least as likely as the k-th (ties kept, as transformers)
        kth = np.partition(scores, vocab - settings.top_k)[vocab - settings.top_k]
        if temperature == 1:
            ids = np.flatnonzero(scores >= kth)
            scores = scores[ids]
        else:
            # transformers compares after the temperature, whose rounding can put a value just under the k-th on
            # the k-th's own scaled value: take a little more, scale only those, then compare as it does.
            near = kth - (abs(kth) * np.float32(1e-5) + np.float32(1e-30)) if np.isfinite(kth) else kth
            ids = np.flatnonzero(scores >= near)
            scores = scores[ids] / temperature
            kept = scores >= kth / temperature
            ids, scores = ids[kept], scores[kept]
    elif temperature != 1:
        scores = scores / temperature
    if settings.top_p < 1.0:
        kept = _nucleus(scores, settings.top_p)
        ids, scores = (kept if ids is None else ids[kept]), scores[kept]
    weights = np.exp(scores.astype(np.float64) - np.float64(scores.max()))
    return ids, weights


def _nucleus(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Positions (ascending) of the most likely tokens whose mass before each is < top_p: transformers' top-p
    (float32 probabilities; the most likely token always stays). Looked for among the 64, then 1,024 most likely
    tokens (a peaked distribution's nucleus is there); a flat one sorts them all, as transformers does."""
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    size = probs.shape[0]
    for wanted in (_NUCLEUS_FIRST, _NUCLEUS_FIRST * 16):
        if wanted * 4 > size:
            break
        top = np.argpartition(probs, size - wanted)[size - wanted:]
        order = top[np.argsort(-probs[top], kind="stable")]
        mass = np.cumsum(probs[order])
        if mass[-1] >= top_p:
            count = min(int(np.searchsorted(mass, np.float32(top_p), side="left")) + 1, wanted)
            return np.sort(order[:count])
    # Every token, by transformers' own rule (its float32 sums over thousands of tokens round as these do):
    # ascending, the tail whose mass is <= 1 - top_p goes.
    order = np.argsort(probs)
    drop = np.cumsum(probs[order]) <= 1 - top_p
    drop[-1] = False
    keep = np.zeros(size, bool)
    keep[order[~drop]] = True
    return np.flatnonzero(keep)


def _draw(weights: np.ndarray, uniform: float) -> int:
    """The index `Generator.choice(len(weights), p=weights / weights.sum())` returns for the draw `uniform`: the
    first whose cumulative weight passes uniform x total, found block by block (a cumulative sum over the whole
    vocabulary is ~250 us). Never a zero-weight index."""
    size = weights.shape[0]
    if size <= _BLOCK:  # one block: the cumulative sum directly
        cumulative = np.cumsum(weights)
        return _weighted(weights, int(np.searchsorted(cumulative, uniform * cumulative[-1], side="right")))
    starts = np.arange(0, size, _BLOCK)
    sums = np.add.reduceat(weights, starts)
    cumulative = np.cumsum(sums)
    target = uniform * cumulative[-1]
    block = int(np.searchsorted(cumulative, target, side="right"))
    if block >= starts.shape[0]:  # rounding at the very end: the last block that has weight
        block = int(np.flatnonzero(sums)[-1])
    inside = weights[starts[block]:starts[block] + _BLOCK]
    before = cumulative[block - 1] if block else 0.0
    return int(starts[block]) + _weighted(inside, int(np.searchsorted(np.cumsum(inside) + before, target,
                                                                       side="right")))


def _weighted(weights: np.ndarray, index: int) -> int:
    """`index`, or where rounding between two sums put it past the end or on a zero weight, the next weighted
    index (else the last one)."""
    if index < weights.shape[0] and weights[index] != 0:
        return index
    weighted = np.flatnonzero(weights)
    later = weighted[weighted >= index]
    return int(later[0] if later.size else weighted[-1])
