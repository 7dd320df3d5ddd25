"""Sequence classification: label probabilities for a text (or a text pair)."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import softmax
from hfexport.tasks._labelled import batched, classification
from hfexport.tasks.base import Output, TaskSpec


class TextClassification(TaskSpec):
    name = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    outputs = (Output("logits", ("batch", "labels")),)
    aliases = ("sequence-classification",)
    architecture_suffixes = ("ForSequenceClassification",)
    calibration_fidelity = True
    default_gates = {"top1_agreement": 0.98}
    gate_metrics = frozenset(default_gates)

    def manifest_fields(self, config: dict, tokenizer, pooling) -> dict:
        return labels_of(config)

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        return softmax(outputs["logits"])

    def fidelity(self, reference, candidate) -> dict[str, float]:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        kl = (ref * (np.log(ref + 1e-12) - np.log(cand + 1e-12))).sum(1)
        return {"top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()), "kl_mean": float(kl.mean())}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        if isinstance(inputs[0], tuple):
            return {}
        probs = np.asarray(batched(runner.comparable, inputs, batch))
        return classification(probs.argmax(1).tolist(), labels, meta.id2label or {})


def labels_of(config: dict) -> dict:
    """The label fields a classifier's manifest carries."""
    return {"id2label": config.get("id2label"), "problem_type": config.get("problem_type")}


SPEC = TextClassification()
