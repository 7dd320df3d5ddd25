"""hfexport: export Hugging Face models into verified, torch-free deployment bundles.

Importing this package stays light (the torch-free runtime imports it); the build API loads lazily.
"""

from __future__ import annotations

from hfexport._version import __version__

__all__ = ["__version__", "build", "validate_bundle", "inspect_bundle"]


def __getattr__(name: str):
    if name in ("build", "validate_bundle", "inspect_bundle"):
        from hfexport import api

        return getattr(api, name)
    raise AttributeError(f"module 'hfexport' has no attribute {name!r}")
