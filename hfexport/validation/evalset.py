"""What validation runs on: the shipped held-out corpus or the user's rows, made ready for the task."""

from __future__ import annotations

from dataclasses import dataclass

from hfexport.tasks import get_task


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

    spec = get_task(task)
    if getattr(spec, "modality", "text") == "audio":
        if records is None:
            return EvalSet(data.default_eval_audio(samples), [], [], "hfexport generated clips (tones, chirps, "
                                                                     "noise bursts; held out of calibration)")
        inputs, labels = spec.labelled_examples(records[:samples], text_column=None, label_column=None,
                                                source=source)
        return EvalSet(inputs, [], labels, source, list(inputs))
    if getattr(spec, "modality", "text") == "image":
        return _image_eval_set(spec, records, samples, source)
    if records is None:
        texts = data.default_eval_texts()[:samples]
        return EvalSet(spec.eval_inputs(texts, mask_token), texts, [], source)
    inputs, labels = spec.labelled_examples(records[:samples], text_column=text_column,
                                            label_column=label_column, source=source)
    texts = [part for item in inputs for part in (item if isinstance(item, tuple) else (item,))]
    return EvalSet(spec.fidelity_inputs(inputs, texts, mask_token), texts, labels, source, list(inputs))


def _image_eval_set(spec, records: list[dict] | None, samples: int, source: str) -> EvalSet:
    """Images: the user's folder (labels from subfolder names), or generated images held out of calibration."""
    from hfexport import data

    if records is None:
        images = data.default_eval_images(samples)
        return EvalSet(images, [], [], "hfexport generated images (gradients, shapes, noise; held out of "
                                        "calibration)")
    inputs, labels = spec.labelled_examples(records[:samples], text_column=None, label_column=None, source=source)
    return EvalSet(inputs, [], labels, source, list(inputs))
