"""XLA backend: a jax.export module (StableHLO) run by jax on a TPU, an NVIDIA GPU or the CPU. Torch-free.

The weights (`weights.safetensors`, beside the module) are placed on the device once and passed as arguments
on every call; the module is called under `jax.jit`, which compiles each input shape once. Token inputs are
padded to the next of the target's batch and sequence buckets (TPUs want static shapes; a bounded set of
shapes also bounds compile time anywhere) and the outputs cut back. jax's calls are thread-safe; the first
call for a shape compiles it under a lock so two threads do not compile the same shape twice.

Install: `pip install "hfexport[xla]"` (CPU); `jax[tpu]` or `jax[cuda13]` for the accelerators.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from hfexport.errors import BundleIntegrityError, HfExportError, first_line
from hfexport.host import physical_cores

WEIGHTS_FILE = "weights.safetensors"
_PLATFORMS = {"tpu": "tpu", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}


def _import_jax(threads: int | None):
    fresh = "jax" not in sys.modules
    if fresh:
        # XLA's CPU client reads its thread settings once, when it starts. One thread per computation and one
        # CPU device per thread (below): Eigen's shared pool slowed batch 1 (2 threads 35.1 ms, 1 thread 31.4 ms).
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    try:
        import jax
    except ImportError as exc:
        raise HfExportError('this bundle needs jax: pip install "hfexport[xla]" (jax[tpu] / jax[cuda13] for '
                            "accelerators)") from exc
    if fresh and threads != 1:
        # NOTE: XLA's CPU client runs one computation on about one core (a 2-core host: 0.90x PyTorch at batch 32
        # with 2 threads); one CPU device per core, each given a slice of the batch, uses them all
        # (docs/decisions/0101-xla-bf16-and-minilm-numbers.md). Set before jax's CPU client starts; an app that started jax
        # already keeps its own device count.
        try:
            jax.config.update("jax_num_cpu_devices", threads or physical_cores())
        except (RuntimeError, AttributeError):
            pass
    return jax


def read_weights(path: Path) -> tuple[list[np.ndarray], dict]:
    """The weights in call order, and the metadata the export wrote (order, inputs, output axes)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["hfexport"])
        tensors = {name: handle.get_tensor(name) for name in dict.fromkeys(meta["order"])}
        return [tensors[name] for name in meta["order"]], meta


def bucket(size: int, buckets: list[int]) -> int:
    """The smallest bucket that holds `size`; `size` itself past the largest."""
    return next((b for b in buckets if b >= size), size)


class XlaSession:
    backend = "xla"

    def __init__(self, exported, weights: list, meta: dict, device, options: dict, spread: list | None = None):
        import jax

        self.exported, self.device = exported, device
        self.input_names = list(meta["inputs"])
        self.output_axes: dict[str, list[str]] = meta["outputs"]
        self.output_names = list(self.output_axes)
        self.weights = _place(weights, device)
        # CPU: the devices a batch is split over (the first is `device`); the others get their weights (copied
        # from the first's) at the first batch that is split, so a decoder (one device) never holds a second copy.
        self.spread = [device, *[d for d in (spread or []) if d != device]]
        self._replicas: dict[int, list] = {0: self.weights}
        self.sequence_buckets = list(options.get("sequence_buckets") or [])
        self.batch_buckets = list(options.get("batch_buckets") or [])
        self.max_sequence = meta.get("max_sequence")  # the export's `s <= N`: padding never passes it
        self._call = jax.jit(exported.call)
        self._compiled: set[tuple] = set()
        self._lock = threading.Lock()
        self.effective = {"device": str(device.platform), "jax": jax.__version__}
        self.generation = meta.get("generation")

    def call(self, *arguments, replica: int = 0):
        """The module on placed arguments (weights first), compiling a new shape once under the lock."""
        weights = self._replica(replica)
        key = (tuple(arguments[0].shape), replica)  # the token shape decides what is compiled
        if key in self._compiled:
            return self._call(weights, *arguments)
        with self._lock:
            outputs = self._call(weights, *arguments)
            self._compiled.add(key)
        return outputs

    def _replica(self, index: int) -> list:
        if index not in self._replicas:
            with self._lock:
                if index not in self._replicas:
                    self._replicas[index] = _place(self.weights, self.spread[index])
        return self._replicas[index]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import jax

        first = feeds[self.input_names[0]]
        batch, length = first.shape
        rows = bucket(batch, self.batch_buckets)
        width = min(bucket(length, self.sequence_buckets), max(self.max_sequence or length, length))
        padded = [_pad(np.asarray(feeds[n]), rows, width) for n in self.input_names]
        # a slice of the batch per CPU device, all dispatched before any wait (jax runs them at once)
        splittable = all("batch" in axes for axes in self.output_axes.values())
        parts = min(len(self.spread), rows) if splittable else 1
        bounds = [rows * k // parts for k in range(parts + 1)]
        pending = [self.call(*[jax.device_put(t[lo:hi], self.spread[k]) for t in padded], replica=k)
                   for k, (lo, hi) in enumerate(zip(bounds, bounds[1:]))]
        joined = {name: np.concatenate([np.asarray(outputs[i]) for outputs in pending],
                                       axis=self.output_axes[name].index("batch")) if parts > 1
                  else np.asarray(pending[0][i]) for i, name in enumerate(self.output_names)}
        return {name: _cut(value, self.output_axes[name], batch, length) for name, value in joined.items()}


    def decoder(self) -> XlaDecoder:
        """A step runner for text-generation bundles (a static KV cache; hfexport/backends/_xla/generation.py)."""
        if not self.generation:
            raise HfExportError("this bundle is an encoder; only text-generation bundles have a decoder")
        return XlaDecoder(self)


class XlaDecoder:
    """Runs the static-cache function step by step: the runtime's `empty_cache(batch)` / `step(...)` interface.

    The cache stays on the device between steps (jax arrays, never copied to numpy); each step writes at slots
    `total - sequence .. total`, where `total` is the attention mask's length. A prompt is padded up to the next
    sequence bucket: the padding's cache slots lie past `total` and the next steps overwrite them before any
    real token can attend to them.
    """

    def __init__(self, runtime: XlaSession):
        layout = runtime.generation
        self.runtime = runtime
        self.length = int(layout["cache_length"])
        self.shape = (int(layout["kv_heads"]), self.length, int(layout["head_dim"]))
        self.layers = int(layout["layers"])
        # bf16 bundles keep the cache in bf16 (older bundles say nothing: fp32).
        self.cache_dtype = layout.get("cache_dtype", "float32")
        if not isinstance(self.cache_dtype, str) or self.cache_dtype not in ("float32", "bfloat16"):
            raise BundleIntegrityError(f"the model's cache_dtype {self.cache_dtype!r} is not float32 or bfloat16: "
                                       "rebuild the bundle")

    def empty_cache(self, batch: int, capacity: int | None = None) -> list:
        import jax
        import jax.numpy as jnp

        zeros = jax.device_put(jnp.zeros((batch, *self.shape), jnp.dtype(self.cache_dtype)), self.runtime.device)
        return [zeros] * (2 * self.layers)

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             cache: list, all_logits: bool = False) -> tuple[np.ndarray, list]:
        import jax

        runtime = self.runtime
        batch, sequence = input_ids.shape
        total = attention_mask.shape[1]
        start = total - sequence
        if total > self.length:
            raise HfExportError(f"the bundle's static KV cache holds {self.length} tokens; this step needs {total}")
        width = sequence if sequence == 1 else min(bucket(sequence, runtime.sequence_buckets), self.length - start)
        mask = np.zeros((batch, self.length), np.int32)
        mask[:, :total] = attention_mask
        tokens = [_pad(input_ids, batch, width), mask, _pad(position_ids, batch, width), np.int32(start)]
        placed = [jax.device_put(t, runtime.device) for t in tokens]
        logits, *present = runtime.call(*placed, *cache)
        logits = np.asarray(logits[:, :sequence] if all_logits else logits[:, sequence - 1])
        return logits, present


def _place(weights: list, device) -> list:
    """`weights` on `device`, in call order; a tied weight appears twice in the order and is placed once."""
    import jax

    placed = {id(w): jax.device_put(w, device) for w in weights}
    return [placed[id(w)] for w in weights]


def _pad(values: np.ndarray, rows: int, width: int) -> np.ndarray:
    """int32 tokens padded with zeros (mask 0) to [rows, width]; extra rows copy the first (a real row)."""
    values = values.astype(np.int32, copy=False)
    batch, length = values.shape
    if width > length:
        values = np.pad(values, ((0, 0), (0, width - length)))
    if rows > batch:
        values = np.concatenate([values, np.repeat(values[:1], rows - batch, axis=0)])
    return values


def _cut(value: np.ndarray, axes: list[str], batch: int, length: int) -> np.ndarray:
    index = tuple(slice(0, batch) if a == "batch" else slice(0, length) if a == "sequence" else slice(None)
                  for a in axes)
    return value[index]


# NOTE: jax deserialises exported modules for about 6 months after their export (its compatibility
# window); past that a newer jax refuses the bundle, so inspect warns a month before
# (docs/decisions/0102-xla-bundle-lifetime.md).
COMPATIBILITY_DAYS, WARN_DAYS = 180, 150


def reexport_note(manifest, today: datetime.date | None = None) -> str | None:
    """A line for `hfexport inspect` when the bundle's module nears or passes jax's compatibility window."""
    stats = next((p.stats for p in manifest.passes if p.name == "export"), {})
    if not stats.get("exported"):
        return None
    exported = datetime.date.fromisoformat(stats["exported"])
    age = ((today or datetime.date.today()) - exported).days
    if age < WARN_DAYS:
        return None
    state = "past" if age > COMPATIBILITY_DAYS else "near"
    return (f"exported {exported} with jax {stats.get('jax', '?')} ({age} days ago): {state} the end of jax's "
            f"~{COMPATIBILITY_DAYS}-day compatibility window for exported modules; re-export it with "
            f"hfexport build --target {manifest.target.name}")


def open_session(model_path: Path, session: dict, *, providers=None, threads=None, device=None) -> XlaSession:
    if providers is not None:
        raise HfExportError("XLA bundles choose hardware by device (device='tpu'|'gpu'|'cpu'), not providers=")
    jax = _import_jax(threads)
    options = dict(session.get("xla") or {})
    name = device or options.get("device") or "cpu"
    platform = _PLATFORMS.get(str(name).lower())
    if platform is None:
        raise HfExportError(f"device {name!r}: XLA bundles run on tpu, gpu or cpu")
    try:
        chosen = jax.devices(platform)[0]
    except RuntimeError as exc:
        raise HfExportError(f"jax has no {name} device here: {first_line(exc)}") from exc
    exported = jax.export.deserialize(bytearray(Path(model_path).read_bytes()))
    if platform not in exported.platforms:
        raise HfExportError(f"this bundle was exported for {', '.join(exported.platforms)}, not {platform}")
    weights, meta = read_weights(Path(model_path).with_name(WEIGHTS_FILE))
    spread = jax.devices("cpu")[: threads or None] if platform == "cpu" else None
    return XlaSession(exported, weights, meta, chosen, options, spread)
