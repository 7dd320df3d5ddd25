"""Text generation: the runtime's generation loop (KV cache, sampling, chat templates) over the bundle."""

from __future__ import annotations

from pathlib import Path


def open_predictor(manifest, bundle: Path, backend):
    from hfexport.runtime.generation import TextGenerator

    return TextGenerator(manifest, bundle, backend, bundle / manifest.tokenizer.file)
