"""Build-side backends: the target profile's `backend` -> the class that exports, optimises and quantises.

One module per backend (`onnxruntime.py`, `openvino.py`, `xla.py`), imported only when a plan needs it; their
internals live in `_onnx/`, `_openvino/` and `_xla/`, the PyTorch side both exporters share in `_torch_graph.py` and
`_generation_graph.py`. The runtime side of each backend is `hfexport/runtime/backends/<name>.py`.
"""

from __future__ import annotations

import importlib
from functools import cache

from hfexport.backends.base import Backend
from hfexport.errors import PlanError

__all__ = ["BACKENDS", "Backend", "all_backends", "get_backend"]

BACKENDS: dict[str, str] = {
    "onnxruntime": "hfexport.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "hfexport.backends.openvino:OpenVINOBackend",
    "xla": "hfexport.backends.xla:XlaBackend",
}


@cache
def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise PlanError(f"hfexport cannot build for backend {name} yet (it builds for: {', '.join(BACKENDS)})")
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def all_backends() -> list[Backend]:
    return [get_backend(name) for name in BACKENDS]
