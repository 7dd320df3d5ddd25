"""Image embeddings: one float32 vector per image, [n, dim] (the graph pools; see the build's task)."""

from __future__ import annotations

import numpy as np

from hfexport.runtime.tasks.image_classification import normalise_inputs

__all__ = ["normalise_inputs", "postprocess"]


def postprocess(outputs, batch, meta, images, encoder, **_options) -> np.ndarray:
    return np.asarray(outputs["embedding"], dtype=np.float32)
