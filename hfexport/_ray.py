"""The Ray side of `hfexport matrix`: one task per combination, retried when its worker dies.

Kept apart from hfexport/matrix.py so that module imports without Ray; only this one touches `ray`.
"""

from __future__ import annotations

import os

from hfexport.errors import ConfigError
from hfexport.progress import Progress


def run_on_ray(combos, output: str, options: dict, *, address: str | None, cpus_per_build: float, retries: int,
               progress: Progress):
    """Every combination as a Ray task; results reported as they finish, returned in `combos` order."""
    import ray

    from hfexport.matrix import MatrixRun, Outcome, build_one

    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, address, progress)
    try:
        resources = ray.cluster_resources()
        progress.info(f"ray: {resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs; "
                      f"{len(combos)} builds, {cpus_per_build:g} CPU each, up to {retries} retries on worker loss")
        # NOTE: max_retries retries a task whose worker process died (killed, OOM, node lost); a build that
        # fails on its own returns an Outcome and is not retried (it would fail the same way again).
        remote = ray.remote(build_one)
        pending = {}
        for combo in combos:
            # A cuda target asks for a GPU where the cluster has one; elsewhere it builds and validates on the
            # CPU provider, as a plain `hfexport build` does (a GPU request no node can meet would never run).
            gpus = 1 if _wants_gpu(combo.target) and resources.get("GPU", 0) >= 1 else 0
            ref = remote.options(num_cpus=cpus_per_build, num_gpus=gpus, max_retries=retries,
                                 name=f"hfexport-build:{combo.slug}").remote(combo, output, options)
            pending[ref] = combo
        results: dict = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            combo = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # retries spent (worker lost each time) or the task failed
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                outcome = Outcome(combo, "error", 0.0, error=f"ray: {first}")
            results[combo] = outcome
            progress.info(f"[{len(results)}/{len(combos)}] {outcome.line()}")
        slots = max(1, min(len(combos), int(resources.get("CPU", 1) // cpus_per_build)))
        where = f"on Ray ({resources.get('CPU', 0):.0f} CPUs, {cpus_per_build:g} per build)"
        return MatrixRun([results[c] for c in combos], slots, where)
    finally:
        if started_here:
            ray.shutdown()


def _init(ray, address: str | None, progress: Progress) -> None:
    # Telemetry to Ray's usage-stats endpoint stays off, as every other library's does in a build.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address in (None, "local"):
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--ray {address or 'local'}: cannot start or reach the Ray cluster ({first})") from None
    progress.info(f"ray: {'local cluster' if address in (None, 'local') else address}")


def _wants_gpu(target: str) -> bool:
    from hfexport.profiles import load_target

    return load_target(target).device == "cuda"
