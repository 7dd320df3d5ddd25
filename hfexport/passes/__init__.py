"""The pass registry: one lazy name -> "module:Class" map, open to other packages by entry point.

A built-in pass is a module (or package) of this package named after the pass, holding the Pass class
whose `name` it is: found by file, so adding a pass is adding that file. Heavy backends (torch,
onnxruntime.quantization, openvino) are imported only when a pass is used.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points

from hfexport.errors import ConfigError
from hfexport.passes.base import Pass, PassConfig

__all__ = ["Pass", "PassConfig", "get_pass", "pass_names"]

# Modules here that are not passes.
_NOT_PASSES = {"base", "export_aliases"}
# Deprecated for one release: `export` pinned to one format and graph (the plan notes the rename).
DEPRECATED_PASSES: dict[str, str] = {
    "export_onnx": "hfexport.passes.export_aliases:ExportOnnxPass",
    "export_openvino": "hfexport.passes.export_aliases:ExportOpenVINOPass",
    "export_onnx_generation": "hfexport.passes.export_aliases:ExportOnnxGenerationPass",
    "export_openvino_generation": "hfexport.passes.export_aliases:ExportOpenVINOGenerationPass",
}

ENTRY_POINT_GROUP = "hfexport.passes"


def _builtin() -> dict[str, str]:
    found = {module.name: f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__)
             if not module.name.startswith("_") and module.name not in _NOT_PASSES}
    return {**found, **DEPRECATED_PASSES}


@lru_cache(maxsize=1)
def _catalog() -> dict[str, str]:
    catalog = _builtin()
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
    if class_name:
        cls = getattr(module, class_name, None)
    else:  # a built-in module: the Pass class it defines under this name
        cls = next((v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Pass)
                    and v is not Pass and getattr(v, "name", None) == name), None)
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise ConfigError(f"pass {name!r} ({catalog[name]}) is not an hfexport Pass")
    return cls
