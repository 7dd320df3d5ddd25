"""Validation: the PyTorch fp32 reference against each stage and the bundle, on held-out text.

The bundle is measured through `hfexport.runtime.load`, the same path a user's app takes. Timings
alternate between the reference and each candidate inside one process, so machine drift hits both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hfexport.errors import FidelityError
from hfexport.report.schema import GateResult, Latency
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

_QUESTIONS = ("What is this about?", "Who is mentioned?", "What happened?", "When did it happen?",
              "Where did it happen?", "Why does it matter?")  # fmt: skip


def task_inputs(task: str, texts: list[str], mask_token: str | None = None) -> list:
    """Evaluation inputs fitting the task, derived from plain text deterministically."""
    if task == "question-answering":
        return [(_QUESTIONS[i % len(_QUESTIONS)], text) for i, text in enumerate(texts)]
    if task == "fill-mask":
        masked = []
        for i, text in enumerate(texts):
            words = text.split()
            if len(words) < 2:
                words.append("here")
            position = (i * 7919) % len(words)
            masked.append(" ".join(mask_token if j == position else w for j, w in enumerate(words)))
        return masked
    return texts


@dataclass(frozen=True)
class EvalSet:
    """What validation runs on: task-ready inputs, plain texts, and labels when the data has them."""

    inputs: list  # texts, (question, context) or (text, text) pairs, masked texts: fed to both sides
    texts: list[str]  # plain text, for the fixed-length latency passage
    labels: list  # one per labelled input, or [] when the data has no labels
    source: str
    labelled_inputs: list = ()  # what the labels belong to (sentence pairs for STS scores)


def make_eval_set(task: str, records: list[dict] | None, *, samples: int, mask_token: str | None,
                  text_column: str | None = None, label_column: str | None = None,
                  source: str = "hfexport held-out corpus") -> EvalSet:
    """From a user's rows (see data.read_records) or, without them, the shipped held-out corpus."""
    from hfexport import data

    if records is None:
        texts = data.default_eval_texts()[:samples]
        return EvalSet(task_inputs(task, texts, mask_token), texts, [], source)
    inputs, labels = data.labelled_examples(records[:samples], task, text_column=text_column,
                                            label_column=label_column, source=source)
    labelled = list(inputs)
    texts = [part for item in inputs for part in (item if isinstance(item, tuple) else (item,))]
    if task == "feature-extraction" and inputs and isinstance(inputs[0], tuple):
        inputs = texts  # fidelity compares each embedded text; the pairs serve the STS metric
    elif task == "fill-mask" and not any(mask_token and mask_token in t for t in texts):
        inputs = task_inputs(task, texts, mask_token)
    return EvalSet(inputs, texts, labels, source, labelled)


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


# -- timing ------------------------------------------------------------------------------------------


def time_alternating(functions: dict[str, Callable[[], Any]], runs: int, warmup: int = 3,
                     block: int = 10, settle: int = 0) -> dict[str, list[float]]:
    """Time each function `runs` times in milliseconds, in alternating blocks of `block` calls.

    NOTE: blocks, not strict alternation. ONNX Runtime's and PyTorch's worker threads spin-wait for a
    while after each call; on a 2-core machine a call made right after the *other* engine's call
    loses its cores to that spinning (measured: PyTorch 70 ms instead of 20 ms). In blocks only the
    first call after a switch pays, and the median discards it; alternating blocks still spreads
    machine drift over every side.
    `settle` untimed calls open every block: after a switch the caches hold the other model's weights,
    and a small model pays that for several calls (pruned MiniLM int8: 4.4-4.7 ms in blocks of 10 with
    no settling, 2.7 ms in blocks of 60), which made it look 1.75-1.9x the default bundle instead of the
    2.1-2.5x an app running one model sees.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    block = max(1, min(block, runs))
    while any(len(t) < runs for t in times.values()):
        for name, fn in functions.items():
            if len(times[name]) >= runs:
                continue
            for _ in range(settle):
                fn()
            for _ in range(min(block, runs - len(times[name]))):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def latency_of(samples_ms: list[float]) -> Latency:
    ordered = sorted(samples_ms)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Latency(p50_ms=statistics.median(ordered), p90_ms=p90, runs=len(ordered))


def text_of_length(tokenizer, texts: list[str], tokens: int) -> str:
    """A real-text passage that tokenises to exactly `tokens` tokens (special tokens included)."""
    passage = " ".join(texts)
    while len(tokenizer(passage)["input_ids"]) < tokens and len(passage) < 1_000_000:
        passage = passage + " " + passage
    special = len(tokenizer("")["input_ids"])
    encoded = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)
    cut = encoded["offset_mapping"][tokens - special - 1][1]
    return passage[:cut]
