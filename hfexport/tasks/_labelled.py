"""Task metrics on labelled evaluation data, computed the same way for the reference and the bundle."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np


def spearman(a, b) -> float:
    """Rank correlation (no tie correction); 1.0 for fewer than two values."""
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
    return {"sts_spearman": spearman(cos, np.array(scores, dtype=float))}


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


def _entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """BIO(ES) word tags -> entity spans (type, first word, last word), as seqeval counts them."""
    found, current = set(), None
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-") if "-" in tag else ("I" if tag != "O" else "O", "", tag)
        continues = current is not None and prefix in ("I", "E") and kind == current[0]
        if current is not None and not continues:
            found.add((current[0], current[1], index - 1))
            current = None
        if tag != "O" and not continues:
            current = (kind, index)
    return found


def token_classification(predicted: list[list[tuple[int, int, int]]], gold: list[dict],
                         id2label: dict) -> dict[str, float]:
    """Word accuracy and entity-level F1; a word takes the label of its first sub-word token."""
    def name(value) -> str:
        key = str(int(value)) if isinstance(value, (int, np.integer)) or str(value).isdigit() else None
        return str(id2label.get(key, value)) if key is not None else str(value)

    correct = total = 0
    predicted_entities: set = set()
    gold_entities: set = set()
    for index, (tokens, truth) in enumerate(zip(predicted, gold)):
        first = {}
        for start, _end, label in tokens:
            first.setdefault(start, label)
        words_predicted = [name(first[start]) if start in first else "O" for start, _ in truth["spans"]]
        words_gold = [name(tag) for tag in truth["tags"]]
        correct += sum(p == g for p, g in zip(words_predicted, words_gold))
        total += len(words_gold)
        predicted_entities |= {(index, *e) for e in _entities(words_predicted)}
        gold_entities |= {(index, *e) for e in _entities(words_gold)}
    hits = len(predicted_entities & gold_entities)
    precision = hits / len(predicted_entities) if predicted_entities else 0.0
    recall = hits / len(gold_entities) if gold_entities else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"word_accuracy": correct / max(total, 1), "entity_f1": f1}


def batched(fn, items: list, size: int) -> list:
    """fn over items in batches of `size`, results concatenated."""
    results: list = []
    for start in range(0, len(items), size):
        results.extend(list(fn(items[start:start + size])))
    return results
