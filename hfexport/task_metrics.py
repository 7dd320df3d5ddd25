"""Task metrics on labelled evaluation data, computed the same way for the reference and the bundle."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else 1.0


def classification(predicted_ids: list[int], labels: list, id2label: dict) -> dict[str, float]:
    """Accuracy and macro F1. Labels may be ids or label names."""
    names = {str(v): int(k) for k, v in (id2label or {}).items()}
    gold = [names.get(str(label), label) for label in labels]
    gold = [int(g) if isinstance(g, (int, np.integer)) or str(g).lstrip("-").isdigit() else -1 for g in gold]
    predicted = np.array(predicted_ids)
    truth = np.array(gold)
    f1s = []
    for cls in sorted(set(truth.tolist()) - {-1}):
        tp = int(((predicted == cls) & (truth == cls)).sum())
        fp = int(((predicted == cls) & (truth != cls)).sum())
        fn = int(((predicted != cls) & (truth == cls)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return {"accuracy": float((predicted == truth).mean()), "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


def similarity_spearman(first: np.ndarray, second: np.ndarray, scores: list) -> dict[str, float]:
    """Spearman between the cosine of each embedded pair and its gold similarity score (STS-style)."""
    cos = (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1) + 1e-12)
    return {"sts_spearman": _spearman(cos, np.array(scores, dtype=float))}


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def answers(predicted: list[str], gold: list) -> dict[str, float]:
    """SQuAD-style exact match and token F1; a gold entry may be a string or a list of strings."""
    exact, f1 = [], []
    for guess, truth in zip(predicted, gold):
        options = truth if isinstance(truth, list) else (truth.get("text") if isinstance(truth, dict) else [truth])
        options = options if isinstance(options, list) else [options]
        options = [str(o) for o in options] or [""]
        exact.append(max(float(_tokens(guess) == _tokens(o)) for o in options))
        best = 0.0
        for option in options:
            common = Counter(_tokens(guess)) & Counter(_tokens(option))
            overlap = sum(common.values())
            if overlap:
                precision, recall = overlap / len(_tokens(guess)), overlap / len(_tokens(option))
                best = max(best, 2 * precision * recall / (precision + recall))
        f1.append(best)
    return {"exact_match": float(np.mean(exact)), "f1": float(np.mean(f1))}
