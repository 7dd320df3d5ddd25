"""The torch-free runtime: `load(bundle)` and call it with text.

Imports only the standard library, numpy, tokenizers and the bundle's backend (lazily).
"""

from __future__ import annotations

from hfexport.errors import BundleIntegrityError
from hfexport.runtime.loader import Predictor, load

__all__ = ["BundleIntegrityError", "Predictor", "load"]
