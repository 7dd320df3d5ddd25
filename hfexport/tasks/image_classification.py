"""Image classification: label probabilities for an image (ViT, DeiT, ConvNeXt, ResNet, Swin, ...)."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks import softmax
from hfexport.tasks._labelled import batched, classification
from hfexport.tasks.base import Output, TaskSpec
from hfexport.tasks.text_classification import labels_of


class ImageClassification(TaskSpec):
    name = "image-classification"
    auto_class = "AutoModelForImageClassification"
    outputs = (Output("logits", ("batch", "labels")),)
    architecture_suffixes = ("ForImageClassification", "ForImageClassificationWithTeacher")
    modality = "image"
    # NOTE: measured on tiny random-init ViT/ConvNeXt/ResNet/... at int8 (docs/decisions/0140-image-tasks.md).
    default_gates = {"top1_agreement": 0.90}
    gate_metrics = frozenset(default_gates)

    def manifest_fields(self, config: dict, processor, pooling) -> dict:
        return labels_of(config)

    def eval_inputs(self, images: list, mask_token: str | None = None) -> list:
        return list(images)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import image_examples

        return image_examples(rows, source=source)

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        return softmax(outputs["logits"].astype(np.float64))

    def fidelity(self, reference, candidate) -> dict[str, float]:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        kl = (ref * (np.log(ref + 1e-12) - np.log(cand + 1e-12))).sum(1)
        return {"top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()), "kl_mean": float(kl.mean())}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        probs = np.asarray(batched(runner.comparable, inputs, batch))
        return classification(probs.argmax(1).tolist(), labels, meta.id2label or {})

    def graph_outputs(self, outputs) -> tuple:
        """The graph's outputs from the model's ModelOutput (what the exported wrapper returns)."""
        return (outputs["logits"],)


SPEC = ImageClassification()
