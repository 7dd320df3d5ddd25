"""Image-text dual encoders (CLIP, SigLIP) at run time: two graphs, a tokenizer and an image processor.

`embed_image` and `embed_text` return the models' projected embeddings, not normalised (what transformers'
`get_image_features` / `get_text_features` return); `scores` turns them into zero-shot scores as transformers'
zero-shot-image-classification pipeline does: the cosine times the model's logit scale (plus SigLIP's logit bias),
then a softmax over the labels (CLIP) or a sigmoid of each label on its own (SigLIP). An app that scores many
images against the same labels embeds the labels once and calls `scores`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.errors import BundleIntegrityError
from hfexport.runtime.image import ImageEncoder, as_image_list
from hfexport.runtime.paths import second_graph
from hfexport.runtime.tasks import softmax
from hfexport.runtime.tokenizer import TextEncoder

DEFAULT_TEMPLATE = "This is a photo of {}."  # transformers' pipeline default
IMAGE_OUTPUT, TEXT_OUTPUT = "image_embeds", "text_embeds"


def text_graph(manifest) -> str:
    """The text tower's file name in the bundle: the other graph of model_files with the model file's suffix."""
    return second_graph(manifest, "text graph", "image graph")


def _labels(candidate_labels) -> list[str]:
    labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels or [])
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise ValueError("zero-shot image classification needs candidate_labels=[...] (one or more strings)")
    return labels


def _texts(texts) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("embed_text takes a string or a list of strings")
    return texts


class DualEncoder:
    """A loaded CLIP-style bundle. Safe to call from several threads at once."""

    def __init__(self, manifest, bundle: Path | None, image_backend, text_backend, image_encoder: ImageEncoder,
                 text_encoder: TextEncoder):
        self.manifest, self.path, self.task = manifest, bundle, manifest.model.task
        self.backend, self.text_backend = image_backend, text_backend
        self.encoder, self.text_encoder = image_encoder, text_encoder
        fields = manifest.model.task_fields
        self.logit_scale = float(fields["logit_scale"])
        bias = fields.get("logit_bias")
        self.logit_bias = None if bias is None else float(bias)
        self.sigmoid = fields.get("score") == "sigmoid"

    def __repr__(self) -> str:
        return f"<DualEncoder {self.manifest.model.id} backend={self.backend.backend}>"

    def embed_image(self, images, *, batch_size: int = 32) -> np.ndarray:
        """[images, embed] float32: an image (path, PIL.Image, HxWx3 uint8 array) or a list of them."""
        return _embed(as_image_list(images), self.encoder, self.backend, IMAGE_OUTPUT, batch_size)

    def embed_text(self, texts, *, batch_size: int = 32) -> np.ndarray:
        """[texts, embed] float32: a string or a list of strings, tokenised as the model's pipeline does."""
        return _embed(_texts(texts), self.text_encoder, self.text_backend, TEXT_OUTPUT, batch_size)

    def logits(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """[images, texts]: logit_scale x cosine (+ logit_bias), transformers' logits_per_image."""
        image = np.asarray(image_embeds, np.float64)
        text = np.asarray(text_embeds, np.float64)
        image = image / np.linalg.norm(image, axis=-1, keepdims=True)
        text = text / np.linalg.norm(text, axis=-1, keepdims=True)
        logits = self.logit_scale * image @ text.T
        return logits + self.logit_bias if self.logit_bias is not None else logits

    def scores(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """[images, labels] zero-shot scores: softmax over the labels (CLIP), or each label's sigmoid (SigLIP)."""
        logits = self.logits(image_embeds, text_embeds)
        return 1.0 / (1.0 + np.exp(-logits)) if self.sigmoid else softmax(logits)

    def __call__(self, images, *, candidate_labels=None, hypothesis_template: str = DEFAULT_TEMPLATE,
                 top_k: int | None = None, batch_size: int = 32) -> list[list[dict]]:
        """For each image, the candidate labels ranked by score (the `top_k` best): [{"label", "score"}, ...]."""
        labels = _labels(candidate_labels)
        if not isinstance(hypothesis_template, str) or "{}" not in hypothesis_template:
            raise ValueError("hypothesis_template needs a {} where the label goes")
        text = self.embed_text([hypothesis_template.format(label) for label in labels], batch_size=batch_size)
        scores = self.scores(self.embed_image(images, batch_size=batch_size), text)
        return [[{"label": labels[i], "score": float(row[i])} for i in np.argsort(-row, kind="stable")[:top_k]]
                for row in scores]


def open_dual_encoder(manifest, bundle: Path, image_backend, text_path: Path | None = None) -> DualEncoder:
    """The bundle's two graphs (or, for validation, a build stage's text graph at `text_path`), its image
    processor and its tokenizer (SigLIP: padded to a fixed length, as its pipeline pads)."""
    from hfexport.runtime.loader import _bundle_errors

    processor, tokenizer = manifest.processor, manifest.tokenizer
    if processor is None or tokenizer is None or processor.kind != "image":
        raise BundleIntegrityError(f"{bundle}: a dual-encoder manifest names both an image processor and a "
                                   "tokenizer: rebuild the bundle")
    if tokenizer.pad_token_id is None or not isinstance(tokenizer.pad_token, str):
        raise BundleIntegrityError(f"{bundle}: manifest tokenizer.pad_token_id and pad_token should name the "
                                   f"padding token, got {tokenizer.pad_token_id!r} and {tokenizer.pad_token!r}")
    fields = manifest.model.task_fields
    if not isinstance(fields.get("logit_scale"), (int, float)):
        raise BundleIntegrityError(f"{bundle}: manifest model.task_fields.logit_scale should be a number: "
                                   "rebuild the bundle")
    with _bundle_errors(bundle / processor.file, "image processor"):
        images = ImageEncoder(bundle / processor.file)
    pad_to = fields.get("text_padding")
    longest = min(manifest.model.max_length, int(fields.get("text_max_length") or manifest.model.max_length))
    with _bundle_errors(bundle / tokenizer.file, "tokenizer"):
        text = TextEncoder(bundle / tokenizer.file, max_length=int(pad_to or longest),
                           pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        if pad_to:  # SigLIP: every text padded to the same length (its pooled vector is the last position's)
            text._single.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                                        length=int(pad_to))
        text.encode(["a"])
    with _bundle_errors(bundle):
        text_backend = image_backend.open_sibling(text_path or bundle / text_graph(manifest))
    return DualEncoder(manifest, bundle, image_backend, text_backend, images, text)


def _embed(items: list, encoder, backend, output: str, batch_size: int) -> np.ndarray:
    """One tower over `items` in batches: its encoder makes the feeds, its graph the embeddings."""
    parts = []
    for start in range(0, len(items), batch_size):
        batch = encoder.encode(items[start:start + batch_size])
        parts.append(backend.run(batch.feeds(backend.input_names))[output])
    return np.concatenate(parts).astype(np.float32, copy=False)
