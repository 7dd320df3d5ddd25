"""ONNX Runtime backend: one InferenceSession, safe to run from many threads at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.errors import HfExportError

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}  # fmt: skip


class OnnxRuntimeSession:
    backend = "onnxruntime"

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe; no lock is needed around it.
        values = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, values))


def _physical_cores() -> int:
    import os

    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def open_session(model_path: Path, session: dict, *, providers=None, threads=None,
                 device=None) -> OnnxRuntimeSession:
    if device is not None:
        raise HfExportError("ONNX Runtime bundles choose hardware by execution provider: pass providers=, "
                            "not device=")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise HfExportError("this bundle needs onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    intra = threads if threads is not None else session.get("intra_op_threads", 0)
    options.intra_op_num_threads = intra or _physical_cores()
    options.inter_op_num_threads = session.get("inter_op_threads", 1)
    level = session.get("graph_optimization_level", "all")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    if session.get("execution_mode") == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    wanted = list(providers or session.get("execution_providers") or ["CPUExecutionProvider"])
    available = set(ort.get_available_providers())
    usable = [p for p in wanted if p in available]
    if not usable:
        raise HfExportError(
            f"none of the bundle's execution providers ({', '.join(wanted)}) is available in this "
            f"onnxruntime (has: {', '.join(sorted(available))})"
        )
    return OnnxRuntimeSession(ort.InferenceSession(str(model_path), options, providers=usable))
