"""Runtime backends, imported by name from the manifest so only the one a bundle needs is loaded."""

from __future__ import annotations

import importlib

from hfexport.errors import BundleIntegrityError

_BACKENDS = {
    "onnxruntime": "hfexport.runtime.backends.onnxruntime",
    "openvino": "hfexport.runtime.backends.openvino",
    "xla": "hfexport.runtime.backends.xla",
}


def open_backend(name: str, model_path, session: dict, *, providers=None, threads=None, device=None):
    """`device` overrides the profile's device, for backends that have several (OpenVINO: CPU, GPU, NPU)."""
    if name not in _BACKENDS:
        raise BundleIntegrityError(f"bundle needs backend {name!r}, which this runtime does not have")
    module = importlib.import_module(_BACKENDS[name])
    return module.open_session(model_path, session, providers=providers, threads=threads, device=device)
