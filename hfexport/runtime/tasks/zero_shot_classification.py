"""Zero-shot classification: an NLI model scores "this text entails <label>" for labels chosen at call time."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import softmax

DEFAULT_TEMPLATE = "This example is {}."
# A long text with a short hypothesis: the text gives way past max_length (cutting only the hypothesis, as question
# answering cuts its context, fails: the hypothesis is too short to make room).
PAIR_TRUNCATION = "longest_first"


def _labels(candidate_labels) -> list[str]:
    labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels or [])
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise ValueError("zero-shot classification needs candidate_labels=[...] (one or more strings)")
    return labels


def expand_inputs(texts, candidate_labels=None, hypothesis_template: str = DEFAULT_TEMPLATE, **_options):
    """Each text paired with the hypothesis for each candidate label, in order."""
    if "{}" not in hypothesis_template:
        raise ValueError("hypothesis_template needs a {} where the label goes")
    return [(text, hypothesis_template.format(label)) for text in texts for label in _labels(candidate_labels)]


def postprocess(outputs, batch, meta, texts, encoder, candidate_labels=None, multi_label: bool = False,
                **_options):
    """Labels ranked by score: softmax of the entailment logits across labels, or with multi_label, each
    label's entailment against contradiction on its own (as transformers' pipeline does)."""
    labels = _labels(candidate_labels)
    fields = meta.task_fields
    entail, contradict = fields["entailment_id"], fields["contradiction_id"]
    logits = outputs["logits"].reshape(len(texts), len(labels), -1)
    if multi_label or len(labels) == 1:
        scores = softmax(logits[..., [contradict, entail]])[..., 1]
    else:
        scores = softmax(logits[..., entail])
    results = []
    for text, row in zip(texts, scores):
        order = np.argsort(-row)
        results.append({"sequence": text, "labels": [labels[i] for i in order],
                        "scores": [float(row[i]) for i in order]})
    return results
