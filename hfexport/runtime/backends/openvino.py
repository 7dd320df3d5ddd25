"""OpenVINO backend: one compiled model, compiled with the options the bundle's target profile set.

Thread safety: a compiled model is shared, and every call takes its own `InferRequest` (creating one
is cheap next to inference), so calls from several threads never share request state.
With several streams (THROUGHPUT hint), a batch is split across the streams and its parts run in
parallel; with one stream (LATENCY), a call runs on all the threads the stream has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.errors import HfExportError


class OpenVINOSession:
    backend = "openvino"

    def __init__(self, compiled, device: str):
        self.compiled = compiled
        self.device = device
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output_names = [port.get_any_name() for port in compiled.outputs]
        self.streams = _streams(compiled)

    @property
    def effective(self) -> dict:
        """What OpenVINO actually chose, for the validation report."""
        def prop(name):
            try:
                value = self.compiled.get_property(name)
            except RuntimeError:  # not every device reports every property
                return None
            return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

        precision = prop("INFERENCE_PRECISION_HINT")
        return {"device": self.device, "execution_devices": prop("EXECUTION_DEVICES"),
                "inference_precision": _PRECISION_NAMES.get(precision, precision),
                "performance_hint": prop("PERFORMANCE_HINT"), "streams": self.streams,
                "threads": prop("INFERENCE_NUM_THREADS")}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: feeds[k] for k in self.input_names}
        rows = next(iter(inputs.values())).shape[0]
        parts = min(self.streams, rows)
        if parts <= 1:
            return self._infer(inputs)
        bounds = np.linspace(0, rows, parts + 1).astype(int)
        requests = [self.compiled.create_infer_request() for _ in range(parts)]
        for request, start, stop in zip(requests, bounds[:-1], bounds[1:]):
            request.start_async({k: v[start:stop] for k, v in inputs.items()}, share_inputs=False)
        for request in requests:
            request.wait()
        return {name: np.concatenate([r.get_tensor(name).data.copy() for r in requests])
                for name in self.output_names}

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self.compiled.create_infer_request()
        request.infer(inputs)
        # copy: the request's output buffers go away with the request
        return {name: request.get_tensor(name).data.copy() for name in self.output_names}


_PRECISION_NAMES = {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16", "<Type: 'float16'>": "f16",
                    "f32": "f32", "bf16": "bf16", "f16": "f16"}  # fmt: skip


def _streams(compiled) -> int:
    try:
        return max(1, int(compiled.get_property("NUM_STREAMS")))
    except (RuntimeError, TypeError, ValueError):
        return 1


def open_session(model_path: Path, session: dict, *, providers=None, threads=None, device=None) -> OpenVINOSession:
    try:
        import openvino as ov
    except ImportError as exc:
        raise HfExportError("this bundle needs OpenVINO: pip install openvino") from exc
    options = dict(session.get("openvino") or {})
    device = device or options.get("device") or "CPU"
    config = {"PERFORMANCE_HINT": options.get("performance_hint", "LATENCY"),
              "INFERENCE_PRECISION_HINT": options.get("inference_precision", "f32")}
    if options.get("streams") is not None:
        config["NUM_STREAMS"] = str(options["streams"])
    intra = threads if threads is not None else session.get("intra_op_threads", 0)
    core = ov.Core()
    if options.get("cache_dir"):
        core.set_property({"CACHE_DIR": str(Path(options["cache_dir"]).expanduser())})
    if intra and device.split(":")[0] in ("CPU", "AUTO"):
        # NOTE: on AUTO the thread count goes to the CPU plugin only; GPU and NPU have no such knob.
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": int(intra)})
    available = core.available_devices
    if device != "AUTO" and not any(d.split(".")[0] == device for d in available):
        raise HfExportError(f"OpenVINO has no {device} device on this machine (has: {', '.join(available)})")
    try:
        compiled = core.compile_model(str(model_path), device, config)
    except RuntimeError as exc:
        raise HfExportError(f"OpenVINO cannot compile the bundle for {device}: {str(exc).splitlines()[0]}") from exc
    return OpenVINOSession(compiled, device)
