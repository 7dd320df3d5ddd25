"""What validation compares per task, the fidelity metrics, and the gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hfexport.errors import FidelityError
from hfexport.report.schema import GateResult
from hfexport.runtime.tasks import softmax
from hfexport.runtime.tasks.feature_extraction import pool
from hfexport.runtime.tasks.question_answering import best_span
from hfexport.task_metrics import spearman

# Per-task defaults; a recipe's `gates:` overrides any of them.
DEFAULT_GATES: dict[str, dict[str, float]] = {
    "feature-extraction": {"cosine_mean": 0.99, "cosine_min": 0.975},
    "text-classification": {"top1_agreement": 0.98},
    "token-classification": {"token_agreement": 0.98},
    "question-answering": {"span_agreement": 0.90},
    "fill-mask": {"top1_agreement": 0.90, "top5_overlap": 0.80},
    # NOTE: next-token agreement, not greedy equality: one flipped token in an int4 run changes the whole
    # tail of a greedy sequence. fp32 recipes add `greedy_agreement: 1.0`.
    "text-generation": {"top1_agreement": 0.90},
}

def comparable(task: str, outputs: dict[str, np.ndarray], attention_mask: np.ndarray, input_ids: np.ndarray,
               sequence_ids: list | None, meta: dict) -> Any:
    if task == "feature-extraction":
        pooling = meta.get("pooling") or {"mode": "mean", "normalize": False}
        return pool(outputs["last_hidden_state"], attention_mask, pooling["mode"], pooling["normalize"])
    if task == "text-classification":
        return softmax(outputs["logits"])
    if task == "token-classification":
        labels = outputs["logits"].argmax(-1)
        return [row[mask == 1] for row, mask in zip(labels, attention_mask)]
    if task == "question-answering":
        spans = []
        for row in range(outputs["start_logits"].shape[0]):
            in_context = np.array([sid == 1 for sid in sequence_ids[row]])
            spans.append(best_span(outputs["start_logits"][row], outputs["end_logits"][row], in_context)[:2])
        return spans
    if task == "fill-mask":
        tops = []
        for row in range(input_ids.shape[0]):
            for pos in np.flatnonzero(input_ids[row] == meta["mask_token_id"]):
                tops.append(np.argsort(-outputs["logits"][row, pos])[:5])
        return tops
    raise ValueError(task)


def fidelity(task: str, reference: Any, candidate: Any) -> dict[str, float]:
    if task == "feature-extraction":
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        cos = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + 1e-12)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "similarity_spearman": _similarity_spearman(ref, cand)}
    if task == "text-classification":
        ref, cand = np.asarray(reference), np.asarray(candidate)
        kl = (ref * (np.log(ref + 1e-12) - np.log(cand + 1e-12))).sum(1)
        return {"top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()), "kl_mean": float(kl.mean())}
    if task == "token-classification":
        agree = [float((r == c).mean()) if r.shape == c.shape else 0.0 for r, c in zip(reference, candidate)]
        total = sum(len(r) for r in reference)
        same = sum(float((r == c).sum()) if r.shape == c.shape else 0.0 for r, c in zip(reference, candidate))
        return {"token_agreement": same / max(total, 1), "sentence_min": float(min(agree))}
    if task == "question-answering":
        return {"span_agreement": float(np.mean([tuple(r) == tuple(c) for r, c in zip(reference, candidate)]))}
    if task == "fill-mask":
        top1 = np.mean([r[0] == c[0] for r, c in zip(reference, candidate)])
        top5 = np.mean([len(set(r) & set(c)) / 5 for r, c in zip(reference, candidate)])
        return {"top1_agreement": float(top1), "top5_overlap": float(top5)}
    raise ValueError(task)


def _similarity_spearman(ref: np.ndarray, cand: np.ndarray) -> float:
    """Rank correlation of the pairwise cosine-similarity matrices: does retrieval order survive?"""
    def sims(x):
        unit = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
        full = unit @ unit.T
        return full[np.triu_indices(len(x), k=1)]

    return spearman(sims(ref), sims(cand))


def check_gates(task: str, overrides: dict[str, float | None], measured: dict[str, float]) -> list[GateResult]:
    thresholds = dict(DEFAULT_GATES.get(task, {}))
    thresholds.update({k: v for k, v in overrides.items() if v is not None and k in _GATE_METRICS[task]})
    return [GateResult(metric=m, value=measured[m], threshold=t, passed=measured[m] >= t)
            for m, t in thresholds.items() if m in measured]


_GATE_METRICS = {
    "feature-extraction": {"cosine_mean", "cosine_min"},
    "text-classification": {"top1_agreement"},
    "token-classification": {"token_agreement"},
    "question-answering": {"span_agreement"},
    "fill-mask": {"top1_agreement", "top5_overlap"},
    "text-generation": {"top1_agreement", "greedy_agreement"},
}


def gate_failure(gates: list[GateResult], report_dir: Path | None) -> FidelityError | None:
    failed = [g for g in gates if not g.passed]
    if not failed:
        return None
    parts = ", ".join(f"{g.metric} {g.value:.4f} < {g.threshold:.4f}" for g in failed)
    where = f"; report kept in {report_dir}" if report_dir else ""
    return FidelityError(f"fidelity gate failed: {parts}{where}", [g.model_dump() for g in failed],
                         str(report_dir) if report_dir else None)
