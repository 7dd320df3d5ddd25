"""Validation of image-text dual encoders (CLIP, SigLIP): both towers and the zero-shot scores, PyTorch fp32 against
the bundle through the runtime.

Each evaluation image becomes one comparable row: its image embedding, the text embeddings of every label prompt
of `LABEL_SETS` (the text tower's fidelity), and its zero-shot scores over each label set, computed as transformers'
pipeline computes them on the PyTorch side and as the runtime computes them on the bundle side. Both sides do the
same work per call (the image tower on the batch, the text tower on the prompts, the scoring), so the latency
figures compare like with like.
"""

from __future__ import annotations

import numpy as np

from hfexport.backends._dual_encoder import tokenize

# Label sets asked of every evaluation image (generated gradients, shapes and noise: the labels need not be true,
# only ranked the same way on both sides), each with the pipeline's default hypothesis template.
LABEL_SETS = (("a cat", "a dog", "a car", "a tree", "a house", "a person"),
              ("red", "green", "blue", "yellow", "black", "white"),
              ("a circle", "a square", "stripes", "noise", "a gradient", "a landscape"),
              ("a painting", "a photograph", "a diagram", "a screenshot", "a texture", "a map"))
TEMPLATE = "This is a photo of {}."
PROMPTS = [TEMPLATE.format(label) for labels in LABEL_SETS for label in labels]


def _rows(image_embeds: np.ndarray, text_embeds: np.ndarray, scores: list[np.ndarray]) -> list[tuple]:
    return [(image_embeds[i], text_embeds, [s[i] for s in scores]) for i in range(len(image_embeds))]


def _split(text_embeds: np.ndarray):
    start = 0
    for labels in LABEL_SETS:
        yield text_embeds[start:start + len(labels)]
        start += len(labels)


class TorchDualRunner:
    """The original model as transformers' pipeline runs it: image processor + tokenizer + PyTorch fp32."""

    tokenizer = None  # image inputs: the evaluator times one image, no text of a fixed length

    def __init__(self, model, processor, text_tokenizer, task: str, meta):
        self.model, self.processor, self.text_tokenizer, self.task, self.meta = model, processor, text_tokenizer, task, meta

    def _logits(self, image: np.ndarray, text: np.ndarray) -> np.ndarray:
        """logits_per_image as the model computes it (normalised, scaled, SigLIP's bias added)."""
        import torch

        image_t, text_t = torch.from_numpy(image), torch.from_numpy(text)
        image_t = image_t / image_t.norm(dim=-1, keepdim=True)
        text_t = text_t / text_t.norm(dim=-1, keepdim=True)
        logits = image_t @ text_t.T * self.model.logit_scale.detach().float().exp()
        if getattr(self.model, "logit_bias", None) is not None:
            logits = logits + self.model.logit_bias.detach().float()
        return logits

    def scores(self, image: np.ndarray, text: np.ndarray) -> np.ndarray:
        logits = self._logits(image, text)
        sigmoid = "siglip" in str(self.model.config.model_type)  # as the pipeline decides
        return (logits.sigmoid() if sigmoid else logits.softmax(dim=-1)).numpy()

    def embed(self, images: list, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        tokens = tokenize(self.text_tokenizer, texts, self.model.config.model_type)
        device = self.model.device
        with torch.inference_mode():
            image = self.model.get_image_features(pixel_values=pixels.to(device), return_dict=True).pooler_output
            text = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                attention_mask=tokens["attention_mask"].to(device),
                                                return_dict=True).pooler_output
        return image.float().cpu().numpy(), text.float().cpu().numpy()

    def __call__(self, images: list) -> list[tuple]:
        image, text = self.embed(images, PROMPTS)
        return _rows(image, text, [self.scores(image, part) for part in _split(text)])

    comparable = __call__

    def classify(self, images: list, labels: list[str]) -> list[int]:
        image, text = self.embed(images, [TEMPLATE.format(label) for label in labels])
        return self.scores(image, text).argmax(1).tolist()


class BundleDualRunner:
    """A dual-encoder bundle (or build stage) through the runtime: embed_image, embed_text and its scoring."""

    def __init__(self, predictor):
        self.predictor, self.task, self.meta = predictor, predictor.task, predictor.manifest.model

    def __call__(self, images: list) -> list[tuple]:
        image = self.predictor.embed_image(images)
        text = self.predictor.embed_text(PROMPTS)
        return _rows(image, text, [self.predictor.scores(image, part) for part in _split(text)])

    comparable = __call__

    def classify(self, images: list, labels: list[str]) -> list[int]:
        results = self.predictor(images, candidate_labels=labels, hypothesis_template=TEMPLATE)
        return [labels.index(ranked[0]["label"]) for ranked in results]


_TIE = 1e-6


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def fidelity(reference: list[tuple], candidate: list[tuple]) -> dict[str, float]:
    """Cosine of both towers' embeddings (min, mean; cosine_* over both), zero-shot top-1 agreement over every
    image and label set, and the largest zero-shot score difference."""
    image = _cosine(np.stack([r[0] for r in reference]), np.stack([c[0] for c in candidate]))
    text = _cosine(reference[0][1], candidate[0][1])
    ref_scores = [s for r in reference for s in r[2]]
    cand_scores = [s for c in candidate for s in c[2]]
    # NOTE: a candidate's top label counts as agreeing when PyTorch scores it within _TIE of its own top label:
    # random-init models score labels alike to 1e-7, where the first of two equal scores is an accident of float.
    agree = [int(r[np.argmax(c)] >= np.max(r) - _TIE) for r, c in zip(ref_scores, cand_scores)]
    worst = max(float(np.abs(np.asarray(r, np.float64) - c).max()) for r, c in zip(ref_scores, cand_scores))
    both = np.concatenate([image, text])
    return {"cosine_mean": float(both.mean()), "cosine_min": float(both.min()),
            "image_cosine_mean": float(image.mean()), "image_cosine_min": float(image.min()),
            "text_cosine_mean": float(text.mean()), "text_cosine_min": float(text.min()),
            "top1_agreement": float(np.mean(agree)), "score_max_abs_diff": worst}


def zero_shot_accuracy(runner, images: list, labels: list, batch: int) -> dict[str, float]:
    """Labelled images (class folders): zero-shot accuracy with the folder names as the candidate labels."""
    names = sorted({str(label) for label in labels})
    predicted = []
    for start in range(0, len(images), batch):
        predicted += runner.classify(images[start:start + batch], names)
    truth = [names.index(str(label)) for label in labels]
    return {"zero_shot_accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)]))}
