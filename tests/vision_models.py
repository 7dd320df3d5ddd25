"""Tiny random-init vision models (transformers configs), saved with an image processor, for the vision tests."""

from __future__ import annotations

from pathlib import Path

LABELS = ["cat", "dog", "bird", "fish", "tree"]
FAMILIES = ("vit", "deit", "convnext", "resnet", "dinov2", "mobilenet_v2", "efficientnet", "swin")


def _config(family: str):
    import transformers

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {v: i for i, v in enumerate(LABELS)}}
    vit_like = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 64, **labels}
    if family == "vit":
        return transformers.ViTConfig(**vit_like)
    if family == "deit":
        return transformers.DeiTConfig(**vit_like)
    if family == "dinov2":
        return transformers.Dinov2Config(**{k: v for k, v in vit_like.items() if k != "intermediate_size"},
                                         mlp_ratio=2)
    if family == "convnext":
        return transformers.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=32,
                                           **labels)
    if family == "resnet":
        return transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                         layer_type="basic", **labels)
    if family == "mobilenet_v2":
        return transformers.MobileNetV2Config(image_size=32, depth_multiplier=0.25, **labels)
    if family == "efficientnet":
        return transformers.EfficientNetConfig(image_size=32, width_coefficient=0.1, depth_coefficient=0.1,
                                               hidden_dim=128, **labels)
    if family == "swin":
        return transformers.SwinConfig(image_size=32, patch_size=4, window_size=2, embed_dim=16, depths=[1, 1],
                                       num_heads=[2, 2], **labels)
    raise ValueError(family)


def _processor(family: str, size: int = 32):
    """The family's own image processor class (PIL backend), sized for the tiny model."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.efficientnet.image_processing_pil_efficientnet import (
        EfficientNetImageProcessorPil,
    )
    from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import (
        MobileNetV2ImageProcessorPil,
    )
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    square = {"height": size, "width": size}
    if family in ("vit", "swin"):
        return ViTImageProcessorPil(size=square)
    if family == "deit":  # DeiT's processor: resize then crop
        from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil

        return DeiTImageProcessorPil(size={"height": size + 4, "width": size + 4}, crop_size=square)
    if family in ("convnext", "resnet"):
        return ConvNextImageProcessorPil(size={"shortest_edge": size})
    if family == "dinov2":
        return BitImageProcessorPil(size={"shortest_edge": size + 4}, crop_size=square)
    if family == "mobilenet_v2":
        return MobileNetV2ImageProcessorPil(size={"shortest_edge": size + 8}, crop_size=square)
    if family == "efficientnet":
        return EfficientNetImageProcessorPil(size=square)
    raise ValueError(family)


def make_tiny_vision_model(folder: Path, family: str, task: str = "image-classification", seed: int = 0) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    config = _config(family)
    torch.manual_seed(seed)
    auto = transformers.AutoModelForImageClassification if task == "image-classification" else transformers.AutoModel
    if family == "deit" and task == "image-classification":  # two classes map to DeiT; Auto needs a name
        auto = transformers.DeiTForImageClassification
    auto.from_config(config).save_pretrained(str(folder))
    _processor(family).save_pretrained(str(folder))
    return folder
