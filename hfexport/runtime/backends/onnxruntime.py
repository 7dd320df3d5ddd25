"""ONNX Runtime backend: one InferenceSession, safe to run from many threads at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.errors import BundleIntegrityError, HfExportError, first_line
from hfexport.host import physical_cores
from hfexport.runtime.paths import check_external_data

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}  # fmt: skip


# Graph inputs the runtime always feeds as int64 (tokenizer output, generation positions).
_INT64_FEEDS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})


def _ort_input_errors() -> tuple[type[BaseException], ...]:
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
    except ImportError:  # an onnxruntime without the typed errors: nothing to translate
        return ()
    return (InvalidArgument,)


_ORT_INPUT_ERRORS = _ort_input_errors()
# Model metadata of a fused generation graph (hfexport/backends/_onnx/fused_decoder.py): right-padded rows, and
# an attention that writes new positions into a preallocated past buffer in place.
FUSED_DECODER = ("hfexport.decoder_layout", "right-padded-gqa")
_KEEP_ALL, _KEEP_LAST = np.array(0, np.int64), np.array(1, np.int64)
# What a fused graph built since decision 0199 takes instead of an attention mask and `logits_to_keep`.
FED_INPUTS = ("seqlens_k", "total_sequence_length", "logits_index")


def fused_feeds(attention_mask: np.ndarray, sequence: int, all_logits: bool = False) -> dict[str, np.ndarray]:
    """A fused graph's `FED_INPUTS` for a step of `sequence` tokens under `attention_mask` [batch, total]: each
    row's length - 1, the total width, and the positions whose logits to compute: every one, or each row's last
    real one (min(sequence - 1, length - 1): its prompt's end in a right-padded prefill, 0 in a decode step)."""
    counts = np.asarray(attention_mask).sum(1)
    batch = counts.shape[0]
    if all_logits:
        index = np.broadcast_to(np.arange(sequence, dtype=np.int64)[None, :, None], (batch, sequence, 1))
    else:
        index = np.minimum(sequence - 1, counts - 1).astype(np.int64)[:, None, None]
    return {"seqlens_k": (counts - 1).astype(np.int32), "total_sequence_length": np.array(attention_mask.shape[1],
            np.int32), "logits_index": np.ascontiguousarray(index)}


class OnnxRuntimeSession:
    backend = "onnxruntime"

    def __init__(self, session, wanted: list[str] | None = None):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        # The runtime feeds token ids, masks and positions as int64; a graph that wants something else was
        # not written by hfexport (or was damaged), and would fail at the first call instead of here.
        wrong = [(i.name, f"{i.type} of rank {len(i.shape)}") for i in session.get_inputs()
                 if i.name in _INT64_FEEDS and (i.type != "tensor(int64)" or len(i.shape) != 2)]
        if wrong:
            raise BundleIntegrityError(f"the model's input {wrong[0][0]!r} is {wrong[0][1]}, but the runtime feeds "
                                       f"tensor(int64) of rank 2: the model file does not match this bundle")
        self.output_names = [o.name for o in session.get_outputs()]
        # What validation reports when the session runs elsewhere than the bundle asked (a cuda bundle
        # checked on a build host without a GPU runs on the CPU provider: same graph, other kernels).
        used = session.get_providers()
        self.effective = {} if wanted is None or used[:1] == wanted[:1] else {
            "execution_providers": ", ".join(used), "asked_for": ", ".join(wanted)}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def decoder(self) -> OnnxRuntimeDecoder:
        """A step runner for KV-cache graphs (text generation)."""
        return OnnxRuntimeDecoder(self)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe; no lock is needed around it.
        try:
            values = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        except _ORT_INPUT_ERRORS as exc:  # the runtime made these feeds: a graph that refuses them is not this bundle's
            first = first_line(exc)
            raise BundleIntegrityError(f"the model refused the runtime's inputs ({first}): the model file does not "
                                       f"match this bundle") from exc
        return dict(zip(self.output_names, values))


def open_session(model_path: Path, session: dict, *, providers=None, threads=None,
                 device=None) -> OnnxRuntimeSession:
    if device is not None:
        raise HfExportError("ONNX Runtime bundles choose hardware by execution provider: pass providers=, "
                            "not device=")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise HfExportError("this bundle needs onnxruntime: pip install onnxruntime") from exc
    _check_session(model_path, session)
    options = ort.SessionOptions()
    intra = threads if threads is not None else session.get("intra_op_threads", 0)
    options.intra_op_num_threads = intra or physical_cores()
    options.inter_op_num_threads = session.get("inter_op_threads", 1)
    level = session.get("graph_optimization_level", "all")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    if session.get("execution_mode") == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if session.get("allow_spinning") is False:
        # Idle worker threads sleep at once instead of spinning for the next call.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in session.get("config_entries", {}).items():  # e.g. what a graph with stored-int8 weights needs
        options.add_session_config_entry(key, value)
    wanted = list(providers or session.get("execution_providers") or ["CPUExecutionProvider"])
    available = set(ort.get_available_providers())
    usable = [p for p in wanted if p in available]
    if not usable:
        raise HfExportError(
            f"none of the bundle's execution providers ({', '.join(wanted)}) is available in this "
            f"onnxruntime (has: {', '.join(sorted(available))})"
        )
    # NOTE: external-data locations are checked here, before ONNX Runtime opens any file they name.
    check_external_data(Path(model_path))
    try:
        opened = ort.InferenceSession(str(model_path), options, providers=usable,
                                      disabled_optimizers=session.get("disabled_optimizers") or None)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidProtobuf/RuntimeException types
        first = first_line(exc)
        raise BundleIntegrityError(f"{model_path}: ONNX Runtime cannot open the model ({first}); the file is "
                                   "corrupt or not built for this runtime: rebuild the bundle") from None
    result = OnnxRuntimeSession(opened, wanted)
    # Another graph of the same bundle (an encoder-decoder's decoder) opens with exactly these settings.
    result.open_sibling = lambda path: open_session(path, session, providers=providers, threads=threads)
    return result


def _check_session(model_path: Path, session: dict) -> None:
    """The manifest's session settings have the types ONNX Runtime takes (a damaged manifest names the field)."""
    where = f"{Path(model_path).parent}: manifest target.session"
    for key in ("intra_op_threads", "inter_op_threads"):
        value = session.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4096:
            raise BundleIntegrityError(f"{where}.{key} should be a thread count (0-4096), got {value!r}")
    entries = session.get("config_entries", {})
    if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items()):
        raise BundleIntegrityError(f"{where}.config_entries should map strings to strings, got {entries!r}")
    disabled = session.get("disabled_optimizers", [])
    if not isinstance(disabled, list) or not all(isinstance(name, str) for name in disabled):
        raise BundleIntegrityError(f"{where}.disabled_optimizers should be a list of names, got {disabled!r}")
    level = session.get("graph_optimization_level", "all")
    if level not in _LEVELS:
        raise BundleIntegrityError(f"{where}.graph_optimization_level should be one of {', '.join(_LEVELS)}, "
                                   f"got {level!r}")


class OnnxRuntimeDecoder:
    """Runs a KV-cache graph step by step (see hfexport/backends/_generation_graph.py for its layout).

    NOTE: the cache stays inside ONNX Runtime. Each step binds the previous step's `present` OrtValues
    as this step's `past` through IOBinding, so no cache tensor is converted to numpy or copied on the
    host between steps; only the last position's logits come back, and a graph with a `logits_to_keep`
    input, or a fused graph's `logits_index` (decision 0199), computes only those (older bundles compute every
    position's). A fused graph since 0199 takes no mask: the decoder feeds what it computed from one
    (`fused_feeds`), and graphs built before keep their mask.
    A traced graph's Concat writes past + new into a fresh `present` each step (O(past) per token). A fused
    graph (metadata `FUSED_DECODER`) given `empty_cache(batch, capacity)` gets one buffer of `capacity`
    positions per past/present pair, bound as both input and output: the attention writes the new positions
    in place, nothing is copied or allocated per step. Its rows are right-padded: callers pass left-padded
    prompts as for any graph, and the first step moves each row's tokens to the front.
    """

    def __init__(self, runtime: OnnxRuntimeSession):
        self.session = runtime.session
        inputs = runtime.session.get_inputs()
        self.past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
        self.present_names = [o.name for o in runtime.session.get_outputs() if o.name.startswith("present.")]
        self.keeps_logits = any(i.name == "logits_to_keep" for i in inputs)  # absent from bundles before it
        self.fed = any(i.name == FED_INPUTS[0] for i in inputs)  # a fused graph since decision 0199
        self.takes_positions = any(i.name == "position_ids" for i in inputs)  # a fused graph counts its own
        past = next(i for i in inputs if i.name in self.past_names)
        self.kv_heads, self.head_dim = int(past.shape[1]), int(past.shape[3])
        self.cache_dtype = np.float16 if past.type == "tensor(float16)" else np.float32
        # On a GPU the cache is bound on the device, so it never crosses to host memory between steps.
        self.device = ("cuda", 0) if runtime.providers[0] == "CUDAExecutionProvider" else ("cpu", 0)
        meta = runtime.session.get_modelmeta().custom_metadata_map
        self.fused = meta.get(FUSED_DECODER[0]) == FUSED_DECODER[1]

    def empty_cache(self, batch: int, capacity: int | None = None) -> list:
        """The cache before a prompt. `capacity` (prompt + new tokens at most) lets a fused graph write into
        preallocated buffers; without it, or for a traced graph, the cache grows by concatenation."""
        import onnxruntime as ort

        if capacity and self.fused:
            shape = (batch, self.kv_heads, int(capacity), self.head_dim)
            buffers = _Buffers(ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self.cache_dtype), *self.device)
                               for _ in self.past_names)
            buffers.capacity = int(capacity)
            return buffers
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), self.cache_dtype)
        return [ort.OrtValue.ortvalue_from_numpy(empty, *self.device) for _ in self.past_names]

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             cache: list, all_logits: bool = False) -> tuple[np.ndarray, list]:
        """One forward over `input_ids`; returns logits (last position, or every position) and the new cache.
        With a preallocated cache (`empty_cache(batch, capacity)`) the last-position logits are a view of the
        cache's logits buffer, valid until its next step: copy them to keep them longer."""
        if type(cache) is _Buffers and cache.started and not all_logits and cache.ids is not None:
            # a decode step on preallocated buffers: the shortest way to the run (its checks in _step_in_place)
            return self._step_in_place(input_ids, attention_mask, cache), cache
        input_ids, attention_mask = np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64)
        order = None
        if self.fused:
            input_ids, order = self._right_padded(input_ids, attention_mask, cache)
        if isinstance(cache, _Buffers) and not all_logits:
            return self._step_in_place(input_ids, attention_mask, cache), cache
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids))
        self._bind_mask(binding, attention_mask, input_ids.shape[1], all_logits)
        if self.takes_positions:
            binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, np.int64))
        if self.keeps_logits:  # 0: every position, 1: the last one
            binding.bind_cpu_input("logits_to_keep", _KEEP_ALL if all_logits else _KEEP_LAST)
        for name, value in zip(self.past_names, cache):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        shared = isinstance(cache, _Buffers)
        for i, name in enumerate(self.present_names):
            if shared:  # the same buffer in and out: the attention writes the new positions in place
                binding.bind_ortvalue_output(name, cache[i])
            else:
                binding.bind_output(name, *self.device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()
        if all_logits and order is not None:  # back to the caller's left-padded positions
            logits = np.take_along_axis(logits, np.argsort(order, 1)[..., None], 1)
        if shared:
            cache.started = True
            return (logits if all_logits else logits[:, -1]), cache
        return (logits if all_logits else logits[:, -1]), outputs[1:]

    def step_token(self, token: int, total: int, cache) -> tuple[np.ndarray, list]:
        """One row's decode step: `token` at position `total - 1`, the cache holding the `total - 1` before it;
        returns what `step` does. On preallocated buffers whose last step was `total - 1` wide it writes the token
        and its length (or one mask entry) and runs, nothing else (docs/decisions/0198)."""
        if type(cache) is _Buffers and cache.width == total - 1 and total <= cache.capacity and cache.ids is not None \
                and cache.ids.shape == (1, 1):
            cache.ids[0, 0] = token
            if self.fed:
                cache.lengths[0] = total - 1
            else:
                cache.mask[0, total - 1] = 1
            cache.width = total
            self.session.run_with_iobinding(cache.binding)
            return cache.logits[:, -1], cache
        return self.step(np.array([[token]], np.int64), np.ones((1, total), np.int64),
                         np.array([[total - 1]], np.int64), cache)

    def _step_in_place(self, input_ids: np.ndarray, attention_mask: np.ndarray, cache: _Buffers) -> np.ndarray:
        """The decode loop's step over preallocated buffers: one IOBinding per cache, with the cache buffers and a
        logits buffer bound once. The prompt step binds its token ids and mask as given; from the first decode
        step on, the ids and a mask as wide as the cache are numpy-backed buffers bound once and filled in place,
        so a step binds nothing. GroupQueryAttention reads each row's length from the mask's count, and a
        one-token step with a total length of the whole buffer is its preallocated-cache decode case."""
        if cache.binding is None:
            self._bind_cache(cache, len(input_ids))
        if not cache.started:
            cache.binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids))
            self._bind_mask(cache.binding, attention_mask, input_ids.shape[1])
        else:
            if cache.ids is None or cache.ids.shape != np.shape(input_ids):
                self._bind_step_inputs(cache, np.shape(input_ids))
            width = attention_mask.shape[1]
            if width > cache.capacity:
                raise ValueError(f"the cache holds {cache.capacity} positions; this step needs {width}")
            cache.ids[...] = input_ids
            if self.fed:
                cache.lengths[:] = attention_mask.sum(1) - 1
            else:
                cache.mask[:, :width] = attention_mask
                cache.mask[:, width:] = 0
            cache.width = width
        self.session.run_with_iobinding(cache.binding)
        cache.started = True
        # A view: the next step on this cache overwrites it (TextGenerator reads it before then).
        return cache.logits[:, -1]

    def _bind_cache(self, cache: _Buffers, batch: int) -> None:
        from onnxruntime import OrtValue

        binding = self.session.io_binding()
        for name, value in zip(self.past_names, cache):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(self.present_names, cache):  # the same buffer in and out: written in place
            binding.bind_ortvalue_output(name, value)
        if self.keeps_logits:
            binding.bind_cpu_input("logits_to_keep", _KEEP_LAST)
        output = self.session.get_outputs()[0]  # only a fused graph has buffers: its vocabulary is static
        dtype = np.float16 if output.type == "tensor(float16)" else np.float32
        cache.logits = np.zeros((batch, 1, output.shape[-1]), dtype)
        # A CPU OrtValue made from numpy shares the array's memory: each step's logits are read from the array.
        binding.bind_ortvalue_output("logits", OrtValue.ortvalue_from_numpy(cache.logits))
        cache.binding = binding

    def _bind_mask(self, binding, attention_mask: np.ndarray, sequence: int, all_logits: bool = False) -> None:
        """The step's attention: the mask itself, or for a fused graph since decision 0199 what it computed."""
        if not self.fed:
            binding.bind_cpu_input("attention_mask", np.ascontiguousarray(attention_mask, np.int64))
            return
        for name, value in fused_feeds(attention_mask, sequence, all_logits).items():
            binding.bind_cpu_input(name, value)

    def _bind_step_inputs(self, cache: _Buffers, shape: tuple[int, ...]) -> None:
        """Decode steps' inputs as numpy-backed buffers bound once: the ids and a mask as wide as the cache, or for
        a fused graph since decision 0199 each row's length (total: the buffer's width; logits: position 0)."""
        from onnxruntime import OrtValue

        cache.ids = np.zeros(shape, np.int64)
        cache.binding.bind_ortvalue_input("input_ids", OrtValue.ortvalue_from_numpy(cache.ids))
        if self.fed:
            cache.lengths = np.zeros(shape[0], np.int32)
            cache.binding.bind_ortvalue_input("seqlens_k", OrtValue.ortvalue_from_numpy(cache.lengths))
            cache.binding.bind_cpu_input("total_sequence_length", np.array(cache.capacity, np.int32))
            cache.binding.bind_cpu_input("logits_index", np.zeros((shape[0], 1, 1), np.int64))
            return
        cache.mask = np.zeros((shape[0], cache.capacity), np.int64)
        cache.binding.bind_ortvalue_input("attention_mask", OrtValue.ortvalue_from_numpy(cache.mask))

    @staticmethod
    def _right_padded(input_ids: np.ndarray, attention_mask: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray | None]:
        """A fused graph's rows start at their first token: the prompt step moves each left-padded row's tokens
        to the front (returning the permutation); a later step must fit in the cache."""
        if isinstance(cache, _Buffers):
            if attention_mask.shape[1] > cache.capacity:
                raise ValueError(f"the cache holds {cache.capacity} positions; this step needs "
                                 f"{attention_mask.shape[1]}")
            if cache.started:  # a decode step: the rows are already in the buffer's layout
                return input_ids, None
            counts = attention_mask.sum(1)
        else:
            counts = attention_mask.sum(1)
            if cache[0].shape()[2] > 0:  # a growing cache past its prompt
                if (counts != counts[0]).any():
                    raise ValueError("rows of different lengths need empty_cache(batch, capacity)")
                return input_ids, None
        if (counts == input_ids.shape[1]).all():
            return input_ids, None
        order = np.argsort(attention_mask[:, -input_ids.shape[1]:] == 0, axis=1, kind="stable")
        return np.take_along_axis(input_ids, order, 1), order


class _Buffers(list):
    """A cache of preallocated past/present buffers, written in place (see `OnnxRuntimeDecoder`), with the
    IOBinding and logits buffer its steps reuse."""

    capacity = 0  # positions each buffer holds
    width = 0  # positions the last decode step's mask covered (step_token's fast case: the next one)
    started, binding, logits, ids, mask, lengths = False, None, None, None, None, None
