"""The torch-free runtime: `load(bundle)` and call it with text.

Imports only the standard library, numpy, tokenizers and the bundle's backend (lazily).
"""

from __future__ import annotations

from hfexport.errors import BundleIntegrityError
from hfexport.runtime.loader import Predictor, load

__all__ = ["BundleIntegrityError", "Predictor", "TextGenerator", "load"]


def __getattr__(name: str):
    # Lazy, so encoder-only apps never import the generation loop (or jinja2 with it).
    if name == "TextGenerator":
        from hfexport.runtime.generation import TextGenerator

        return TextGenerator
    raise AttributeError(name)
