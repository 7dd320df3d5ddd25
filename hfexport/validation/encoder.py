"""Run the reference and every candidate on the same text; produce the typed Report."""

from __future__ import annotations

from typing import Any

import numpy as np

from hfexport.report.schema import Evaluation, Report, StageMetrics
from hfexport.runtime.loader import Predictor, pair_truncation
from hfexport.tasks import get_task
from hfexport.tasks._labelled import batched
from hfexport.validation.evalset import EvalSet
from hfexport.validation.metrics import judged_report
from hfexport.validation.timing import LoadWatch, latency_of, text_of_length, time_alternating


class TorchRunner:
    """The original model: transformers tokenizer + PyTorch fp32 eager, the baseline users compare to."""

    def __init__(self, model, tokenizer, task: str, meta, max_length: int, input_names: list[str]):
        self.model, self.tokenizer, self.task, self.meta = model, tokenizer, task, meta
        self.max_length, self.input_names = max_length, input_names

    def _run(self, enc) -> dict:
        """The model's tensor outputs for a tokenised batch, in fp32 on the host, wherever the model runs."""
        import torch

        with torch.inference_mode():
            out = self.model(**{n: enc[n].to(self.model.device) for n in self.input_names if n in enc},
                             return_dict=True)
        return {k: v.float().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}

    def raw(self, inputs: list):
        if inputs and isinstance(inputs[0], tuple):
            first, second = [q for q, _ in inputs], [c for _, c in inputs]
            enc = self.tokenizer(first, second, padding=True, truncation=pair_truncation(self.task),
                                 max_length=self.max_length, return_tensors="pt")
        else:
            enc = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        outputs = {k: v.numpy() for k, v in self._run(enc).items()}
        sequence_ids = [enc.sequence_ids(i) for i in range(len(inputs))]
        return outputs, enc["attention_mask"].numpy(), enc["input_ids"].numpy(), sequence_ids

    def __call__(self, inputs: list):
        outputs, mask, ids, seq = self.raw(inputs)
        return get_task(self.task).comparable(outputs, mask, ids, seq, self.meta)

    comparable = __call__

    def answers(self, inputs: list) -> list[str]:
        """Question answering: the answer text of each (question, context), as the runtime extracts it."""
        from hfexport.runtime.tasks.question_answering import best_span

        enc = self.tokenizer([q for q, _ in inputs], [c for _, c in inputs], padding=True,
                             truncation="only_second", max_length=self.max_length, return_offsets_mapping=True,
                             return_tensors="pt")
        out = self._run(enc)
        result = []
        for row, (_q, context) in enumerate(inputs):
            in_context = np.array([sid == 1 for sid in enc.sequence_ids(row)])
            start, end, _ = best_span(out["start_logits"][row].numpy(), out["end_logits"][row].numpy(), in_context)
            result.append(context[int(enc["offset_mapping"][row, start, 0]):int(enc["offset_mapping"][row, end, 1])])
        return result


    def token_predictions(self, texts: list[str]) -> list[list[tuple[int, int, int]]]:
        """Token classification: (char start, char end, label id) of every real token of every text."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        out = self._run(enc)
        return _token_labels(out["logits"].numpy(), enc["attention_mask"].numpy(),
                             enc["special_tokens_mask"].numpy(), enc["offset_mapping"].numpy())


class ProcessorTorchRunner:
    """A non-text model as users run it in transformers: its processor's feeds into PyTorch fp32 eager.
    Subclasses turn their inputs into feeds (`raw`); the forward and the comparison are shared."""

    tokenizer = None

    def _forward(self, feeds: dict):
        """The task's graph outputs (numpy, fp32) for torch feeds, in the shape `raw` returns."""
        import torch

        spec = get_task(self.task)
        with torch.inference_mode():
            out = self.model(**{name: value.to(self.model.device) for name, value in feeds.items()}, return_dict=True)
            values = spec.graph_outputs(out)
        return {name: v.float().cpu().numpy() for name, v in zip(spec.output_names, values)}, None, None, None

    def __call__(self, inputs: list):
        outputs, mask, ids, seq = self.raw(inputs)
        return get_task(self.task).comparable(outputs, mask, ids, seq, self.meta)

    comparable = __call__


class ImageTorchRunner(ProcessorTorchRunner):
    """The original image model: transformers' image processor + PyTorch fp32 eager, the users' baseline."""

    def __init__(self, model, processor, task: str, meta):
        self.model, self.processor, self.task, self.meta = model, processor, task, meta

    def raw(self, images: list):
        return self._forward({"pixel_values": self.processor(images=list(images), return_tensors="pt")["pixel_values"]})


def _token_labels(logits, attention_mask, special_tokens_mask, offsets) -> list[list[tuple[int, int, int]]]:
    labels = logits.argmax(-1)
    return [[(int(offsets[row, pos, 0]), int(offsets[row, pos, 1]), int(labels[row, pos]))
             for pos in range(labels.shape[1]) if attention_mask[row, pos] and not special_tokens_mask[row, pos]]
            for row in range(labels.shape[0])]


class PredictorRunner:
    """A candidate seen through the runtime: the bundle itself, or an intermediate stage's file."""

    def __init__(self, predictor: Predictor, meta):
        self.predictor, self.meta, self.task = predictor, meta, predictor.task

    def raw(self, inputs: list):
        batch = self.predictor.encode(inputs)
        outputs = self.predictor.forward(batch)
        if not hasattr(batch, "input_ids"):  # images: no tokens
            return outputs, None, None, None
        return outputs, batch.attention_mask, batch.input_ids, batch.sequence_ids

    def comparable(self, inputs: list):
        outputs, mask, ids, seq = self.raw(inputs)
        return get_task(self.task).comparable(outputs, mask, ids, seq, self.meta)

    def __call__(self, inputs: list) -> Any:
        return get_task(self.task).call(self.predictor, inputs)  # exactly what a user's app calls

    def answers(self, inputs: list) -> list[str]:
        return [result["answer"] for result in self.predictor(inputs)]

    def token_predictions(self, texts: list[str]) -> list[list[tuple[int, int, int]]]:
        batch = self.predictor.encode(texts)
        logits = self.predictor.forward(batch)["logits"]
        return _token_labels(logits, batch.attention_mask, batch.special_tokens_mask, batch.offsets)


def evaluate(reference: TorchRunner, candidates: list, eval_set: EvalSet, judging, meta) -> Report:
    """Fidelity, batch-1 latency and batch throughput of each candidate against the reference."""
    task, settings, progress = reference.task, judging.settings, judging.progress
    spec = get_task(task)
    inputs, texts = eval_set.inputs, eval_set.texts
    batch = settings.batch_size

    images = getattr(spec, "modality", "text") != "text"  # images or audio clips
    unit = {"image": "images", "audio": "audio clips"}.get(spec.modality, "texts")
    progress.info(f"fidelity on {len(inputs)} held-out {unit}")
    alone = batch > 1 and bool(candidates) and not spec.padded_comparable  # the bundle again, one input at a time
    tick = progress.ticker("fidelity", len(inputs) * (1 + len(candidates) + alone), unit)
    ref_values = batched(tick.counting(reference), inputs, batch)
    fid = {c.name: spec.fidelity(ref_values, batched(tick.counting(c.runner.comparable), inputs, batch))
           for c in candidates}
    fid_alone = spec.fidelity(ref_values, batched(tick.counting(candidates[-1].runner.comparable), inputs, 1)) \
        if alone else {}

    if images:  # one image: its size does not matter, the processor resizes every image alike
        progress.info(f"latency: batch 1 x one image, {settings.latency_runs} runs each")
        watch, one = LoadWatch(), [inputs[0]]
    else:
        progress.info(f"latency: batch 1 x {settings.sequence_length} tokens, {settings.latency_runs} runs each")
        watch = LoadWatch()
        long_text = text_of_length(reference.tokenizer, texts, settings.sequence_length)
        one = spec.eval_inputs([long_text], meta.mask_token)
    runners = {"pytorch": reference, **{c.name: c.runner for c in candidates}}
    latency = time_alternating({k: (lambda r=r: r(one)) for k, r in runners.items()}, settings.latency_runs,
                               settle=3, progress=progress, what="latency")

    runs = max(3, settings.latency_runs // 10)
    progress.info(f"throughput: batch {batch}, {runs} runs each")
    many = one * batch
    throughput_ms = time_alternating({k: (lambda r=r: r(many)) for k, r in runners.items()}, runs, warmup=1,
                                     progress=progress, what="throughput")
    per_s = {k: batch / (float(np.median(v)) / 1000) for k, v in throughput_ms.items()}
    timing_warnings = watch.warnings(latency)

    stages = [StageMetrics(name="pytorch", kind="torch", size_bytes=judging.reference_size,
                           latency=latency_of(latency["pytorch"]), throughput_per_s=per_s["pytorch"],
                           notes=[f"reference: transformers {'image processor' if images else 'tokenizer'} + "
                                  "PyTorch fp32 eager"])]
    stages += [StageMetrics(name=c.name, kind=c.kind, size_bytes=c.size_bytes, pass_seconds=c.pass_seconds,
                            latency=latency_of(latency[c.name]), throughput_per_s=per_s[c.name], fidelity=fid[c.name],
                            notes=list(c.notes)) for c in candidates]
    if fid_alone:
        stages[-1].fidelity_batch1 = fid_alone
        shown = ", ".join(f"{k} {v:.4f}" for k, v in fid_alone.items())
        stages[-1].notes.append(f"fidelity with each input alone (batch 1): {shown}; the gates judge the worse of "
                                f"batch 1 and batch {batch}")
    if eval_set.labels:
        labelled = eval_set.labelled_inputs
        progress.info(f"task metrics on {len(eval_set.labels)} labelled examples")
        for stage, runner in ((stages[0], reference), (stages[-1], candidates[-1].runner)):
            stage.task_metrics = spec.labelled_metrics(runner, labelled, eval_set.labels, meta, batch)
        if not stages[0].task_metrics:
            stages[-1].notes.append(f"labels were given, but no task metric is defined for {task} here")
    evaluation = Evaluation(samples=len(inputs), sequence_length=settings.sequence_length, batch_size=batch,
                            latency_runs=settings.latency_runs, threads=judging.threads, text_source=eval_set.source,
                            labelled_examples=len(eval_set.labels))
    return judged_report(judging, task, stages, evaluation, stages[0].latency.p50_ms / stages[-1].latency.p50_ms,
                         timing_warnings)
