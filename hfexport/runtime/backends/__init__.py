"""Runtime backends, imported by name from the manifest so only the one a bundle needs is loaded."""

from __future__ import annotations

import importlib

from hfexport.errors import BundleIntegrityError

_BACKENDS = {
    "onnxruntime": "hfexport.runtime.backends.onnxruntime",
}


def open_backend(name: str, model_path, session: dict, *, providers=None, threads=None):
    if name not in _BACKENDS:
        raise BundleIntegrityError(f"bundle needs backend {name!r}, which this runtime does not have")
    module = importlib.import_module(_BACKENDS[name])
    return module.open_session(model_path, session, providers=providers, threads=threads)
