"""Image classification: the top-k labels with their probabilities, as text classification gives them."""

from __future__ import annotations

from hfexport.runtime.image import as_image_list
from hfexport.runtime.tasks.text_classification import postprocess as _ranked


def normalise_inputs(images, question=None, context=None) -> list:
    """An image (path, PIL.Image, HxWx3 uint8 array) or a list of them, as a list."""
    if question is not None or context is not None:
        raise ValueError("question= and context= are for question answering bundles")
    return as_image_list(images)


def postprocess(outputs, batch, meta, images, encoder, top_k: int | None = 1, **options):
    return _ranked(outputs, batch, meta, images, encoder, top_k=top_k, **options)
