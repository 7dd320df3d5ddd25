"""Run the reference and every candidate on the same text; produce the typed Report."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from hfexport import host
from hfexport.report.schema import Evaluation, Report, StageMetrics
from hfexport.runtime.loader import Predictor
from hfexport.validate import (
    check_gates,
    comparable,
    fidelity,
    latency_of,
    task_inputs,
    text_of_length,
    time_alternating,
)


class TorchRunner:
    """The original model: transformers tokenizer + PyTorch fp32 eager, the baseline users compare to."""

    def __init__(self, model, tokenizer, task: str, meta: dict, max_length: int, input_names: list[str]):
        self.model, self.tokenizer, self.task, self.meta = model, tokenizer, task, meta
        self.max_length, self.input_names = max_length, input_names

    def raw(self, inputs: list):
        import torch

        if inputs and isinstance(inputs[0], tuple):
            first, second = [q for q, _ in inputs], [c for _, c in inputs]
            enc = self.tokenizer(first, second, padding=True, truncation="only_second",
                                 max_length=self.max_length, return_tensors="pt")
        else:
            enc = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**{n: enc[n] for n in self.input_names if n in enc}, return_dict=True)
        outputs = {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
        sequence_ids = [enc.sequence_ids(i) for i in range(len(inputs))]
        return outputs, enc["attention_mask"].numpy(), enc["input_ids"].numpy(), sequence_ids

    def __call__(self, inputs: list):
        outputs, mask, ids, seq = self.raw(inputs)
        return comparable(self.task, outputs, mask, ids, seq, self.meta)

    comparable = __call__


class PredictorRunner:
    """A candidate seen through the runtime: the bundle itself, or an intermediate stage's file."""

    def __init__(self, predictor: Predictor, meta: dict):
        self.predictor, self.meta, self.task = predictor, meta, predictor.task

    def raw(self, inputs: list):
        batch = self.predictor.encode(inputs)
        outputs = self.predictor.forward(batch)
        return outputs, batch.attention_mask, batch.input_ids, batch.sequence_ids

    def comparable(self, inputs: list):
        outputs, mask, ids, seq = self.raw(inputs)
        return comparable(self.task, outputs, mask, ids, seq, self.meta)

    def __call__(self, inputs: list) -> Any:
        return self.predictor(inputs)  # exactly what a user's app calls


def _batched(fn, items: list, size: int) -> list:
    results: list = []
    for start in range(0, len(items), size):
        part = fn(items[start:start + size])
        results.extend(list(part))
    return results


def evaluate(*, reference: TorchRunner, reference_size: int, candidates: list[dict], texts: list[str],
             settings, threads: int, meta: dict, gates_overrides: dict, model_info: dict, target_info: dict,
             text_source: str, versions: dict, progress) -> Report:
    """`candidates`: dicts with name, kind, runner (PredictorRunner), size, pass_seconds, notes."""
    task = reference.task
    inputs = task_inputs(task, texts, meta.get("mask_token"))
    batch = settings.batch_size

    progress.info(f"fidelity on {len(inputs)} held-out texts")
    ref_values = _batched(reference, inputs, batch)
    fid = {c["name"]: fidelity(task, ref_values, _batched(c["runner"].comparable, inputs, batch)) for c in candidates}

    progress.info(f"latency: batch 1 x {settings.sequence_length} tokens, {settings.latency_runs} runs each")
    long_text = text_of_length(reference.tokenizer, texts, settings.sequence_length)
    one = task_inputs(task, [long_text], meta.get("mask_token"))
    if task == "question-answering":
        one = [(one[0][0], long_text)]
    runners = {"pytorch": reference, **{c["name"]: c["runner"] for c in candidates}}
    latency = time_alternating({k: (lambda r=r: r(one)) for k, r in runners.items()}, settings.latency_runs)

    runs = max(3, settings.latency_runs // 10)
    progress.info(f"throughput: batch {batch}, {runs} runs each")
    many = one * batch
    throughput_ms = time_alternating({k: (lambda r=r: r(many)) for k, r in runners.items()}, runs, warmup=1)
    per_s = {k: batch / (float(np.median(v)) / 1000) for k, v in throughput_ms.items()}

    stages = [StageMetrics(name="pytorch", kind="torch", size_bytes=reference_size,
                           latency=latency_of(latency["pytorch"]), throughput_per_s=per_s["pytorch"],
                           notes=["reference: transformers tokenizer + PyTorch fp32 eager"])]
    for c in candidates:
        stages.append(StageMetrics(name=c["name"], kind=c["kind"], size_bytes=c["size"],
                                   pass_seconds=c.get("pass_seconds"), latency=latency_of(latency[c["name"]]),
                                   throughput_per_s=per_s[c["name"]], fidelity=fid[c["name"]],
                                   notes=c.get("notes", [])))
    final = stages[-1]
    gates = check_gates(task, gates_overrides, final.fidelity)
    summary = {
        "speedup": stages[0].latency.p50_ms / final.latency.p50_ms,
        "throughput_ratio": final.throughput_per_s / stages[0].throughput_per_s,
        "size_ratio": final.size_bytes / max(reference_size, 1),
        **final.fidelity,
    }
    return Report(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=model_info, target=target_info,
        host={**host.host_summary(), "versions": versions},
        evaluation=Evaluation(samples=len(inputs), sequence_length=settings.sequence_length, batch_size=batch,
                              latency_runs=settings.latency_runs, threads=threads, text_source=text_source),
        stages=stages, gates=gates, passed=all(g.passed for g in gates), summary=summary,
    )
