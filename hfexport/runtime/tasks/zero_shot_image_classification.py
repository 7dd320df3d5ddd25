"""Zero-shot image classification with an image-text dual encoder (CLIP, SigLIP): the bundle's two graphs
(image tower: `model_file`; text tower: the other graph of `model_files`), run by runtime/dual_encoder.py.

    model = hfexport.runtime.load("clip-bundle")
    model.embed_image(["cat.jpg"]), model.embed_text(["a cat"])     # [n, embed] each, not normalised
    model("cat.jpg", candidate_labels=["cat", "dog"])              # [[{"label": "cat", "score": 0.93}, ...]]
"""

from __future__ import annotations

from pathlib import Path

from hfexport.runtime.dual_encoder import DEFAULT_TEMPLATE, open_dual_encoder

__all__ = ["DEFAULT_TEMPLATE", "open_predictor"]


def open_predictor(manifest, bundle: Path, backend, text_path: Path | None = None):
    """The dual encoder over the bundle (or, for validation, over a build stage whose text graph is `text_path`)."""
    return open_dual_encoder(manifest, bundle, backend, text_path)
