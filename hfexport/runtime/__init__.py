"""The torch-free runtime: `load(bundle)` and call it with text.

Imports only the standard library, numpy, tokenizers and the bundle's backend (lazily).
"""

from __future__ import annotations

from hfexport.errors import BundleIntegrityError

__all__ = ["BundleIntegrityError", "Predictor", "TextGenerator", "load"]


def __getattr__(name: str):
    # Lazy, so encoder-only apps never import the generation loop (or jinja2 with it), and the tools that read
    # only manifests and signatures (hfexport verify, inspect) never import numpy.
    if name in ("Predictor", "load"):
        from hfexport.runtime import loader

        return getattr(loader, name)
    if name == "TextGenerator":
        from hfexport.runtime.generation import TextGenerator

        return TextGenerator
    raise AttributeError(name)
