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
        # two stages of the seven (each random stage shrinks activations about 5x)
        return transformers.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.1,
                                               kernel_sizes=[3, 3], in_channels=[32, 16], out_channels=[16, 24],
                                               strides=[1, 2], num_block_repeats=[1, 1], expand_ratios=[1, 6],
                                               depthwise_padding=[], hidden_dim=320, **labels)
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


CNNS = ("convnext", "resnet", "mobilenet_v2", "efficientnet")


def _spread(model, family: str) -> None:
    """Weights that keep activations alive through a tiny random network, so outputs differ between images.

    transformers initialises CNN convolutions with std 0.02 (or its config's range): through a dozen
    batch-normed, ReLU6 layers of 8-32 channels that shrinks every image's output to 0 (MobileNetV2's and
    EfficientNet's logits come out 1e-27 or exactly 0), and a test of them would compare zeros. He
    initialisation (fan in, ReLU gain) and unit batch-norm scales keep the scale; transformer families keep
    their own init but for the classifier head."""
    import torch

    with torch.no_grad():
        head = getattr(model, "classifier", None)
        if isinstance(head, torch.nn.Linear):
            # A trained classifier separates its classes; a head at std 0.02 gives near-equal logits (ViT's
            # std 0.06), and top-1 agreement would then measure ties, not fidelity.
            torch.nn.init.kaiming_normal_(head.weight, nonlinearity="relu")
        if family not in CNNS:
            return
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm2d):  # some families draw its scale at std 0.02 too
                module.weight.fill_(1.0)
                module.bias.zero_()


def make_tiny_vision_model(folder: Path, family: str, task: str = "image-classification", seed: int = 0) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    config = _config(family)
    torch.manual_seed(seed)
    auto = transformers.AutoModelForImageClassification if task == "image-classification" else transformers.AutoModel
    if family == "deit" and task == "image-classification":  # two classes map to DeiT; Auto needs a name
        config.architectures = ["DeiTForImageClassification"]
    model = auto.from_config(config)
    _spread(model, family)
    model.save_pretrained(str(folder))
    _processor(family).save_pretrained(str(folder))
    return folder
