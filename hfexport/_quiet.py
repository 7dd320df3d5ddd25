"""Silence the libraries' own chatter during a build; hfexport prints its own progress lines."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings


@contextlib.contextmanager
def quiet_libraries(enabled: bool = True):
    if not enabled:
        yield
        return
    root = logging.getLogger()
    saved_level = root.level
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # onnxruntime.quantization logs advice at WARNING on the root logger.
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(saved_level)
