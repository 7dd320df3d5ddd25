"""The pass registry: one lazy name -> "module:Class" map, open to other packages by entry point.

Heavy backends (torch, onnxruntime.quantization, openvino) are imported only when a pass is used.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from hfexport.errors import ConfigError
from hfexport.passes.base import Pass, PassConfig

__all__ = ["Pass", "PassConfig", "get_pass", "pass_names"]

BUILTIN_PASSES: dict[str, str] = {
    "prune": "hfexport.passes.prune:PrunePass",
    "distill": "hfexport.passes.distill:DistillPass",
    "export": "hfexport.passes.export:ExportPass",
    "optimize": "hfexport.passes.optimize:OptimizePass",
    "quantize": "hfexport.passes.quantize:QuantizePass",
    # Deprecated for one release: `export` pinned to one format and graph (the plan notes the rename).
    "export_onnx": "hfexport.passes.export_aliases:ExportOnnxPass",
    "export_openvino": "hfexport.passes.export_aliases:ExportOpenVINOPass",
    "export_onnx_generation": "hfexport.passes.export_aliases:ExportOnnxGenerationPass",
    "export_openvino_generation": "hfexport.passes.export_aliases:ExportOpenVINOGenerationPass",
}

ENTRY_POINT_GROUP = "hfexport.passes"


@lru_cache(maxsize=1)
def _catalog() -> dict[str, str]:
    catalog = dict(BUILTIN_PASSES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # NOTE: built-in names win; a plugin cannot silently replace a shipped pass.
        catalog.setdefault(ep.name, ep.value)
    return catalog


def pass_names() -> list[str]:
    return sorted(_catalog())


def get_pass(name: str) -> type[Pass]:
    catalog = _catalog()
    if name not in catalog:
        raise ConfigError(f"unknown pass type {name!r} (known: {', '.join(sorted(catalog))})")
    module_name, _, class_name = catalog[name].partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise ConfigError(f"pass {name!r} ({catalog[name]}) is not an hfexport Pass")
    return cls
