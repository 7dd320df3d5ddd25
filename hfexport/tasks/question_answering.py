"""Extractive question answering: the answer span of a (question, context) pair."""

from __future__ import annotations

import numpy as np

from hfexport.errors import DataError
from hfexport.runtime.tasks.question_answering import best_span
from hfexport.tasks._labelled import answers, batched
from hfexport.tasks.base import Output, TaskSpec

# Evaluation questions asked of plain text, in turn: the span chosen must match, whatever it is.
_QUESTIONS = ("What is this about?", "Who is mentioned?", "What happened?", "When did it happen?",
              "Where did it happen?", "Why does it matter?")  # fmt: skip


class QuestionAnswering(TaskSpec):
    name = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    outputs = (Output("start_logits", ("batch", "sequence")), Output("end_logits", ("batch", "sequence")))
    pair_input = True
    architecture_suffixes = ("ForQuestionAnswering",)
    default_gates = {"span_agreement": 0.90}
    gate_metrics = frozenset(default_gates)

    def eval_inputs(self, texts, mask_token=None) -> list:
        return [(_QUESTIONS[i % len(_QUESTIONS)], text) for i, text in enumerate(texts)]

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import label_column_of

        label = label_column_of(rows, label_column, source)
        for needed in ("question", "context"):
            if needed not in rows[0]:
                raise DataError(f"{source}: question answering data needs a {needed!r} column")
        return [(str(r["question"]), str(r["context"])) for r in rows], [r[label] for r in rows] if label else []

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        spans = []
        for row in range(outputs["start_logits"].shape[0]):
            in_context = np.array([sid == 1 for sid in sequence_ids[row]])
            spans.append(best_span(outputs["start_logits"][row], outputs["end_logits"][row], in_context)[:2])
        return spans

    def fidelity(self, reference, candidate) -> dict[str, float]:
        return {"span_agreement": float(np.mean([tuple(r) == tuple(c) for r, c in zip(reference, candidate)]))}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        return answers(batched(runner.answers, inputs, batch), labels)


SPEC = QuestionAnswering()
