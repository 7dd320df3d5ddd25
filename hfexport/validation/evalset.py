"""What validation runs on: the shipped held-out corpus or the user's rows, made ready for the task."""

from __future__ import annotations

from dataclasses import dataclass

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


