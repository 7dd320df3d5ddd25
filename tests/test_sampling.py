"""Sampling over the tokens top-k and top-p keep (decision 0200): the same distribution as transformers' warpers,
and the same token as numpy's `Generator.choice` for the same draw."""

from __future__ import annotations

import numpy as np
import pytest

from hfexport.runtime.sampling import SamplingSettings, _draw, candidates, choose


def _logits(kind: str, vocab: int = 32000) -> np.ndarray:
    rng = np.random.default_rng(len(kind))
    if kind == "peaked":  # a language model's: a few likely tokens over a long flat tail
        x = rng.normal(0, 2, vocab)
        x[rng.choice(vocab, 20, replace=False)] += rng.uniform(6, 14, 20)
    elif kind == "flat":
        x = rng.normal(0, 1, vocab)
    else:  # "ties": equal values around any cut, and tokens suppressed with -inf
        x = rng.integers(0, 12, vocab).astype(np.float64)
        x[rng.choice(vocab, 500, replace=False)] = -np.inf
    return x.astype(np.float32)


def _transformers(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
    if settings.top_k:
        warpers.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))
    scores = warpers(torch.zeros(1, 1, dtype=torch.long), torch.from_numpy(logits)[None].clone())
    return torch.softmax(scores.double(), -1)[0].numpy()


@pytest.mark.parametrize("kind", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 0.9), (1.0, 50, 1.0), (0.7, 50, 0.95),
                                                     (1.3, 0, 0.5), (1.0, 2000, 0.99), (0.2, 0, 0.999)])
def test_sampling_distribution_is_transformers_warpers(kind, temperature, top_k, top_p):
    logits = _logits(kind)
    settings = SamplingSettings(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    ids, weights = candidates(logits, settings)
    ours = np.zeros(logits.shape[0])
    ours[slice(None) if ids is None else ids] = weights / weights.sum()
    want = _transformers(logits, settings)
    assert ids is None or (np.diff(ids) > 0).all()  # ascending, as the draw needs
    if kind == "ties" and top_p < 1.0:
        # Which of the tokens tied at the nucleus's edge stay is the sort's choice (torch's is not stable either):
        # as many stay (one more or less where thousands of equal float32 probabilities sum to top_p in another
        # order), the same ones above the edge, none below it.
        assert abs(int((ours > 0).sum()) - int((want > 0).sum())) <= 1
        edge = logits[want > 0].min()
        np.testing.assert_array_equal((ours > 0)[logits != edge], (want > 0)[logits != edge])
        if (ours > 0).sum() == (want > 0).sum():
            np.testing.assert_allclose(np.sort(ours), np.sort(want), rtol=1e-5, atol=1e-9)
        return
    np.testing.assert_array_equal(ours > 0, want > 0)  # the same tokens kept
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-9)


def test_draw_is_generator_choice_for_the_same_uniform():
    """`_draw(weights, rng.random())` picks what `rng.choice(n, p=weights / weights.sum())` picks from the same
    stream, never a zero weight, also with whole empty blocks and a draw next to 1."""
    weights = np.random.default_rng(0).exponential(1.0, 32000) ** 4
    weights[1024:3072] = 0.0  # whole blocks without weight
    weights[-700:] = 0.0  # the end too
    weights[::7] = 0.0
    ours, theirs = np.random.default_rng(5), np.random.default_rng(5)
    picks = [_draw(weights, ours.random()) for _ in range(3000)]
    assert picks == [int(theirs.choice(weights.shape[0], p=weights / weights.sum())) for _ in range(3000)]
    assert all(weights[p] > 0 for p in picks)
    for uniform in (0.0, np.nextafter(1.0, 0.0)):
        assert weights[_draw(weights, uniform)] > 0
    assert _draw(np.array([0.0, 2.0, 0.0]), 0.999999) == 1


def test_choose_rows_are_independent_and_repeat_with_a_seed():
    logits = np.stack([_logits("peaked"), _logits("flat")])
    settings = SamplingSettings(do_sample=True, temperature=0.8, top_k=40, top_p=0.9)
    first = choose(logits, [np.zeros(0, np.int64)] * 2, settings, np.random.default_rng(3))
    again = choose(logits, [np.zeros(0, np.int64)] * 2, settings, np.random.default_rng(3))
    assert first.tolist() == again.tolist() and first.dtype == np.int64
    top = np.argsort(logits[0])[-40:]
    assert first[0] in top  # within the row's own top-k
