"""Image embeddings: one vector per image (ViT, DINOv2, ConvNeXt, ResNet, Swin, ... base models).

The vector is the model's `pooler_output` where it has one (ViT's and DeiT's tanh pooler over the CLS token,
DINOv2's normed CLS token, the CNNs' and Swin's average pool), flattened to [batch, hidden]; otherwise the
CLS token of a transformer's last_hidden_state, or the spatial mean of a CNN's feature map. The choice is
made inside the exported graph, so the runtime returns the graph's `embedding` output as it is.
"""

from __future__ import annotations

import numpy as np

from hfexport.tasks.base import Output, TaskSpec

# Base vision models (transformers' MODEL_FOR_IMAGE_MAPPING_NAMES, the families hfexport builds and tests):
# their class names, not the shared "Model" ending, so a text encoder is never taken for one.
VISION_BASE_MODELS = ("ViTModel", "DeiTModel", "Dinov2Model", "Dinov2WithRegistersModel", "ConvNextModel",
                      "ConvNextV2Model", "ResNetModel", "MobileNetV2Model", "EfficientNetModel", "SwinModel",
                      "Swinv2Model", "BeitModel", "BitModel", "RegNetModel")


class ImageFeatureExtraction(TaskSpec):
    name = "image-feature-extraction"
    auto_class = "AutoModel"
    outputs = (Output("embedding", ("batch", "hidden")),)
    architecture_suffixes = VISION_BASE_MODELS
    modality = "image"
    default_gates = {"cosine_mean": 0.99, "cosine_min": 0.95}
    gate_metrics = frozenset(default_gates)
    distill_kind = "embedding"
    distill_metric = "cosine_mean"

    def manifest_fields(self, config: dict, processor, pooling) -> dict:
        return {"embedding": "pooler_output or CLS / spatial mean, in the graph"}

    def eval_inputs(self, images: list, mask_token: str | None = None) -> list:
        return list(images)

    def labelled_examples(self, rows, *, text_column, label_column, source):
        from hfexport.data import image_examples

        inputs, _labels = image_examples(rows, source=source)
        return inputs, []

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        return np.asarray(outputs["embedding"], np.float32)

    def fidelity(self, reference, candidate) -> dict[str, float]:
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        cos = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + 1e-12)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}

    def graph_outputs(self, outputs) -> tuple:
        return (image_embedding(outputs),)


def image_embedding(outputs):
    """[batch, hidden] from a vision base model's ModelOutput (torch), by the rule in the module docstring."""
    pooled = outputs.get("pooler_output") if hasattr(outputs, "get") else None
    if pooled is not None:
        return pooled.flatten(1)
    hidden = outputs["last_hidden_state"]
    if hidden.dim() == 4:  # a CNN's [batch, channels, height, width]
        return hidden.mean(dim=(2, 3))
    return hidden[:, 0]


SPEC = ImageFeatureExtraction()
