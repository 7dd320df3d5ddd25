"""A compile-only TPU check: the exported module compiled for TPU topologies that are not attached.

libtpu (`pip install "jax[tpu]"`) compiles for compile-only devices (`jax.experimental.topologies`), so a
host without a TPU can say whether the module compiles for, e.g., a v5e or v6e chip at every bucket shape,
and what XLA's cost analysis expects (FLOPs, bytes accessed, device memory). Nothing runs on a TPU: these
are the compiler's numbers, never a measured speed.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NOTE = "compile-only: compiled for TPU topologies that are not attached; nothing ran on a TPU"


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def tpu_compile_check(model_path: Path, topologies: list[str], batch_buckets: list[int],
                      sequence_buckets: list[int]) -> dict:
    """{"note", "rows": [{topology, batch, sequence, compiled, flops, bytes_accessed, memory_bytes | error}]}."""
    import jax
    from jax.experimental import topologies as topo

    from hfexport.runtime.backends.xla import WEIGHTS_FILE, read_weights

    exported = jax.export.deserialize(bytearray(Path(model_path).read_bytes()))
    weights, meta = read_weights(Path(model_path).with_name(WEIGHTS_FILE))
    limit = meta.get("max_sequence") or max(sequence_buckets)
    shapes = [(b, s) for b in batch_buckets for s in sequence_buckets if s <= limit]
    rows: list[dict] = []
    jobs = []  # (row, device) per shape, compiled below in row order
    for name in topologies:
        try:
            device = topo.get_topology_desc(name, "tpu").devices[0]
        except Exception as exc:  # an unknown topology name, or a libtpu that cannot make it
            rows.append({"topology": name, "compiled": False, "error": _first_line(exc)})
            continue
        for batch, sequence in shapes:
            row = {"topology": name, "batch": batch, "sequence": sequence}
            rows.append(row)
            jobs.append((row, device))

    def compile_one(job) -> None:
        row, device = job
        sharding = jax.sharding.SingleDeviceSharding(device)
        specs = [jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=sharding) for w in weights]
        token = jax.ShapeDtypeStruct((row["batch"], row["sequence"]), "int32", sharding=sharding)
        try:
            compiled = jax.jit(exported.call).lower(specs, *[token] * len(meta["inputs"])).compile()
        except Exception as exc:
            row.update(compiled=False, error=_first_line(exc))
            return
        row.update(compiled=True, **_costs(compiled))

    # NOTE: XLA compiles outside the GIL: two at once took the 6 MiniLM shapes of one topology from 43.7 s to
    # 33.5 s on 2 cores (decision 0101, session 15).
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        list(pool.map(compile_one, jobs))
    return {"note": NOTE, "rows": rows}


def _costs(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost or {}
    out = {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}
    memory = compiled.memory_analysis()
    if memory is not None:
        out["memory_bytes"] = int(sum(getattr(memory, f"{kind}_size_in_bytes", 0)
                                      for kind in ("argument", "output", "temp", "generated_code")))
    return out


def summary(check: dict) -> str:
    rows = check["rows"]
    ok = sum(r["compiled"] for r in rows)
    names = ", ".join(dict.fromkeys(r["topology"] for r in rows))
    return f"TPU compile check ({names}): {ok}/{len(rows)} shapes compiled ({NOTE})"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
