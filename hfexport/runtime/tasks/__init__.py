"""The runtime side of each task: inputs checked, raw graph outputs -> what a user wants (numpy only).

`hfexport/runtime/tasks/<task>.py` (the task name with underscores) defines `postprocess(outputs, batch,
meta, texts, encoder, **options)` and, where its inputs are not plain strings, `normalise_inputs`; a task whose
graph sees more rows than the user gave defines `expand_inputs(texts, **options)` (zero-shot: text x label).
A generative task defines `open_predictor(manifest, bundle, backend)` instead.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def label_of(id2label: dict, index: int) -> str:
    return str(id2label.get(str(index), id2label.get(index, f"LABEL_{index}")))


def task_module(task: str):
    """The runtime module of a task; BundleIntegrityError when this runtime does not know it."""
    import importlib

    from hfexport.errors import BundleIntegrityError

    name = task.replace("-", "_")
    if not (name[:1].isascii() and name[:1].isalpha() and name.replace("_", "").isascii()
            and name.replace("_", "").isalnum()):  # text2text_generation: letters, digits, underscores
        raise BundleIntegrityError(f"task {task!r} is not supported by this runtime")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        raise BundleIntegrityError(f"task {task!r} is not supported by this runtime "
                                   f"(upgrade hfexport to load this bundle)") from exc


def normalise_inputs(texts, question=None, context=None) -> list:
    """A string or a list of strings, as a list (the text tasks' inputs)."""
    if question is not None or context is not None:
        raise ValueError("question= and context= are for question answering bundles")
    if isinstance(texts, str):
        texts = [texts]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("pass a string or a list of strings")
    return list(texts)
