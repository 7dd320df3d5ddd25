"""OpenVINO backend: one compiled model, compiled with the options the bundle's target profile set.

Thread safety: a compiled model is shared, and every call takes an `InferRequest` no other call holds (from a
pool of idle ones, a new one when all are busy), so calls from several threads never share request state.
NOTE: reusing requests and sharing the caller's input arrays: a profile put ~0.2-0.3 ms of a batch-1 MiniLM call
in making a request and OpenVINO copying the inputs into it (docs/decisions/0190); on the AVX2 host, where such a
call takes ~37 ms, a same-process A/B saw the change within noise (36.9 vs 37.2 ms). Text generation
takes one request per generate call: a stateful graph's KV cache lives in that request's variables.
With several streams (THROUGHPUT hint), a batch is split across the streams and its parts run in
parallel; with one stream (LATENCY), a call runs on all the threads the stream has.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hfexport.errors import HfExportError, first_line


class OpenVINOSession:
    backend = "openvino"

    def __init__(self, compiled, device: str, asked_precision: str | None = None):
        self.compiled = compiled
        self.device = device
        self.asked_precision = asked_precision  # "auto" when the runtime resolved it on this machine
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output_names = [port.get_any_name() for port in compiled.outputs]
        self.streams = _streams(compiled)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()  # requests no call holds

    @property
    def effective(self) -> dict:
        """What OpenVINO actually chose, for the validation report."""
        def prop(name):
            try:
                value = self.compiled.get_property(name)
            except RuntimeError:  # not every device reports every property
                return None
            return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

        precision, kv_cache = prop("INFERENCE_PRECISION_HINT"), prop("KV_CACHE_PRECISION")
        return {"device": self.device, "execution_devices": prop("EXECUTION_DEVICES"),
                "inference_precision": _PRECISION_NAMES.get(precision, precision),
                "kv_cache_precision": _PRECISION_NAMES.get(kv_cache, kv_cache),
                **({"asked_precision": self.asked_precision} if self.asked_precision == "auto" else {}),
                "performance_hint": prop("PERFORMANCE_HINT"), "streams": self.streams,
                "threads": prop("INFERENCE_NUM_THREADS")}

    def decoder(self) -> OpenVINOStatefulDecoder | OpenVINODecoder:
        """A step runner for KV-cache graphs (text generation), stateful or with explicit past/present ports."""
        if any(name.startswith("past_key_values.") for name in self.input_names):
            return OpenVINODecoder(self)
        if "beam_idx" in self.input_names:
            return OpenVINOStatefulDecoder(self)
        raise HfExportError("this OpenVINO model has no KV cache (neither past_key_values.* nor beam_idx inputs); "
                            "build it for text generation (hfexport build --task text-generation --target openvino)")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: feeds[k] for k in self.input_names}
        rows = next(iter(inputs.values())).shape[0]
        parts = min(self.streams, rows)
        if parts <= 1:
            return self._infer(inputs)
        bounds = np.linspace(0, rows, parts + 1).astype(int)
        requests = [self._take() for _ in range(parts)]
        try:
            for request, start, stop in zip(requests, bounds[:-1], bounds[1:]):
                request.start_async({k: v[start:stop] for k, v in inputs.items()}, share_inputs=False)
            for request in requests:
                request.wait()
            return {name: np.concatenate([r.get_tensor(name).data for r in requests]) for name in self.output_names}
        finally:
            for request in requests:
                self._idle.put(request)

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._take()
        try:
            # share_inputs: the request reads the caller's arrays in place (a synchronous call keeps them alive)
            request.infer(inputs, share_inputs=True)
            # copy: the request's output buffers are overwritten by its next call
            return {name: request.get_tensor(name).data.copy() for name in self.output_names}
        finally:
            self._idle.put(request)

    def _take(self):
        """An idle InferRequest, or a new one when every request is held by a call."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self.compiled.create_infer_request()


_PRECISION_NAMES = {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16", "<Type: 'float16'>": "f16",
                    "<Type: 'uint8_t'>": "u8", "f32": "f32", "bf16": "bf16", "f16": "f16", "u8": "u8"}  # fmt: skip


def _streams(compiled) -> int:
    try:
        return max(1, int(compiled.get_property("NUM_STREAMS")))
    except (RuntimeError, TypeError, ValueError):
        return 1


def native_precision(core, device: str) -> str | None:
    """`inference_precision: auto`: bf16 on a CPU that computes bf16 natively (AVX512-BF16, AMX: OpenVINO lists
    BF16 among its optimisation capabilities), f32 on other CPUs; elsewhere (GPU, NPU, AUTO) None, the device's
    own default. NOTE: why (docs/decisions/0197-openvino-llm-int4-computes-bf16-where-native.md)."""
    if device.split(".")[0] != "CPU":
        return None
    try:
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return "f32"
    return "bf16" if "BF16" in capabilities else "f32"


def open_session(model_path: Path, session: dict, *, providers=None, threads=None, device=None) -> OpenVINOSession:
    try:
        import openvino as ov
    except ImportError as exc:
        raise HfExportError("this bundle needs OpenVINO: pip install openvino") from exc
    options = dict(session.get("openvino") or {})
    device = device or options.get("device") or "CPU"
    config = {"PERFORMANCE_HINT": options.get("performance_hint", "LATENCY")}
    if options.get("streams") is not None:
        config["NUM_STREAMS"] = str(options["streams"])
    intra = threads if threads is not None else session.get("intra_op_threads", 0)
    core = ov.Core()
    asked = options.get("inference_precision", "f32")
    precision = native_precision(core, device) if asked == "auto" else asked
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if options.get("cache_dir"):
        core.set_property({"CACHE_DIR": str(Path(options["cache_dir"]).expanduser())})
    if device.split(":")[0] in ("CPU", "AUTO"):
        # NOTE: on AUTO these go to the CPU plugin only; GPU and NPU have no such knobs.
        cpu = {"INFERENCE_NUM_THREADS": int(intra)} if intra else {}
        if options.get("kv_cache_precision"):
            cpu["KV_CACHE_PRECISION"] = options["kv_cache_precision"]
        if cpu:
            core.set_property("CPU", cpu)
    available = core.available_devices
    if device != "AUTO" and not any(d.split(".")[0] == device for d in available):
        raise HfExportError(f"OpenVINO has no {device} device on this machine (has: {', '.join(available)})")
    try:
        compiled = core.compile_model(str(model_path), device, config)
    except RuntimeError as exc:
        raise HfExportError(f"OpenVINO cannot compile the bundle for {device}: {first_line(exc)}") from exc
    result = OpenVINOSession(compiled, device, asked)
    # Another graph of the same bundle (an encoder-decoder's decoder) compiles with exactly these settings.
    result.open_sibling = lambda path: open_session(path, session, threads=threads, device=device)
    return result


_KEEP_ALL, _KEEP_LAST = np.array(0, np.int64), np.array(1, np.int64)


def _keeps_logits(compiled) -> bool:
    """Whether the graph takes `logits_to_keep` (bundles built before it compute every position's logits)."""
    return any("logits_to_keep" in port.get_names() for port in compiled.inputs)


def _step_feeds(input_ids, attention_mask, position_ids, keep: bool, all_logits: bool) -> dict[str, np.ndarray]:
    # Contiguous int64, so OpenVINO can read the arrays in place (share_inputs) instead of copying them.
    feeds = {"input_ids": np.ascontiguousarray(input_ids, np.int64),
             "attention_mask": np.ascontiguousarray(attention_mask, np.int64),
             "position_ids": np.ascontiguousarray(position_ids, np.int64)}
    if keep:  # 0: every position, 1: the last one, so a prefill computes one position's LM head
        feeds["logits_to_keep"] = _KEEP_ALL if all_logits else _KEEP_LAST
    return feeds


def _logits(request, all_logits: bool, view: bool = False) -> np.ndarray:
    """The step's logits; `view`: the last position's as a view of the request's output buffer, which its next
    step overwrites (a copy of 32,000 logits was 1-7% of an int4 decode step, docs/decisions/0198)."""
    logits = request.get_tensor("logits").data
    if all_logits:
        return logits.copy()
    return logits[:, -1] if view else logits[:, -1].copy()


@dataclass
class StatefulCache:
    """One sequence batch's cache: the request whose variables hold it (its beam_idx already set), and the input
    arrays `step_token` reuses (made at its first call)."""

    request: object
    capacity: int | None = None
    ids: np.ndarray | None = None
    position: np.ndarray | None = None
    ones: np.ndarray | None = None


class OpenVINOStatefulDecoder:
    """Runs a stateful KV-cache graph (see hfexport/backends/_openvino/stateful.py).

    `empty_cache(batch)` is a fresh InferRequest, whose variables start empty, so concurrent generate calls
    never share a cache. NOTE: unlike the explicit cache, `step` advances the request in place and returns
    it: a cache object is good for one sequence of steps, not for branching from an earlier step.
    NOTE: a step sets each input as a tensor over the caller's array and runs the request without the
    Python `infer` wrapper (its input dispatch and result dictionary): a decode step 0.10-0.14 ms shorter at
    two threads on the bench Llama, same process, interleaved (docs/decisions/0193).
    """

    def __init__(self, runtime: OpenVINOSession):
        import openvino

        self.compiled = runtime.compiled
        self.keeps_logits = _keeps_logits(runtime.compiled)
        self._tensor = openvino.Tensor

    def empty_cache(self, batch: int, capacity: int | None = None) -> StatefulCache:
        request = self.compiled.create_infer_request()
        request.set_tensor("beam_idx", self._tensor(np.arange(batch, dtype=np.int32)))
        return StatefulCache(request, capacity)

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             cache: StatefulCache, all_logits: bool = False) -> tuple[np.ndarray, StatefulCache]:
        """One forward over `input_ids`; returns logits (last position, or every position) and the cache. The
        last position's logits are a view of the request's output, valid until the cache's next step (as the
        ONNX Runtime decoder's): copy them to keep them longer."""
        request = cache.request
        # NOTE: a shared tensor does not keep its array alive: `feeds` does, until the request has run.
        feeds = _step_feeds(input_ids, attention_mask, position_ids, self.keeps_logits, all_logits)
        for name, value in feeds.items():
            request.set_tensor(name, self._tensor(value, shared_memory=True))
        request.start_async()
        request.wait()
        return _logits(request, all_logits, view=True), cache

    def step_token(self, token: int, total: int, cache: StatefulCache) -> tuple[np.ndarray, StatefulCache]:
        """One unpadded row's decode step: `token` at position `total - 1`; returns what `step` does. Its ids,
        position and mask are arrays made once per cache and filled in place (docs/decisions/0198)."""
        if cache.ids is None:
            cache.ids, cache.position = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
            cache.ones = np.ones((1, max(cache.capacity or 0, total)), np.int64)
            if self.keeps_logits:  # the last position's only (a prompt step left it set; a fresh cache has none)
                cache.request.set_tensor("logits_to_keep", self._tensor(_KEEP_LAST, shared_memory=True))
        if total > cache.ones.shape[1]:
            cache.ones = np.ones((1, 2 * total), np.int64)
        cache.ids[0, 0], cache.position[0, 0] = token, total - 1
        request, tensor = cache.request, self._tensor
        request.set_tensor("input_ids", tensor(cache.ids, shared_memory=True))
        request.set_tensor("attention_mask", tensor(cache.ones[:, :total], shared_memory=True))
        request.set_tensor("position_ids", tensor(cache.position, shared_memory=True))
        request.start_async()
        request.wait()
        return _logits(request, False, view=True), cache


@dataclass
class ExplicitCache:
    """Past tensors per `past_key_values.*` input; `owner` is the request that wrote them, kept alive
    while they are read so its output buffers stay valid (they are handed on without a copy)."""

    tensors: list
    owner: object = None


class OpenVINODecoder:
    """Runs a KV-cache graph with explicit past/present ports (`stateful: false` at export): every step is a
    fresh request whose past inputs are the previous request's present outputs, shared, not copied."""

    def __init__(self, runtime: OpenVINOSession):
        self.compiled = runtime.compiled
        self.past_names = [n for n in runtime.input_names if n.startswith("past_key_values.")]
        self.present_names = [n for n in runtime.output_names if n.startswith("present.")]
        shape = self.compiled.input(self.past_names[0]).get_partial_shape()
        self.kv_heads, self.head_dim = shape[1].get_length(), shape[3].get_length()
        self.keeps_logits = _keeps_logits(runtime.compiled)

    def empty_cache(self, batch: int, capacity: int | None = None) -> ExplicitCache:
        import openvino as ov

        empty = ov.Tensor(np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32))
        return ExplicitCache([empty] * len(self.past_names))

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             cache: ExplicitCache, all_logits: bool = False) -> tuple[np.ndarray, ExplicitCache]:
        request = self.compiled.create_infer_request()
        for name, tensor in zip(self.past_names, cache.tensors):
            request.set_tensor(name, tensor)
        request.infer(_step_feeds(input_ids, attention_mask, position_ids, self.keeps_logits, all_logits),
                      share_inputs=True, share_outputs=True)
        return _logits(request, all_logits), ExplicitCache([request.get_tensor(n) for n in self.present_names],
                                                           request)
