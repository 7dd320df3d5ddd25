"""Many builds at once: every model x target x recipe combination, on Ray when it is installed.

Each combination is one `hfexport.build` call. On Ray every call is a task with its own CPU (and, for a
cuda target, GPU) request; a task whose worker dies (killed, out of memory, node lost) is retried by Ray;
results come back as they finish. Without Ray, or with `ray=False`, the same calls run one after another in
this process and give the same fidelity figures (the builds are deterministic; speed figures are not, and
builds that share a host at the same time slow each other: the report says so).

NOTE: on a multi-node cluster, `output` must be a folder every node sees (a shared filesystem): each task
writes its bundle there (docs/decisions/0180-build-matrix-on-ray.md).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hfexport.errors import ConfigError, FidelityError, HfExportError
from hfexport.progress import Progress
from hfexport.report.matrix_html import fidelity_metric, format_ratio, render_matrix

__all__ = ["Combo", "MatrixRun", "Outcome", "fidelity_metric", "plan_matrix", "run_matrix", "write_matrix_report"]


@dataclass(frozen=True)
class Combo:
    model: str | None  # None: the default model
    target: str
    recipe: str | None  # None: the target's default recipe for the model's task

    @property
    def slug(self) -> str:
        """A folder name for this combination's bundle."""
        model = Path(self.model.rstrip("/")).name if self.model else "default-model"
        recipe = Path(self.recipe).stem if self.recipe else "default"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}--{Path(self.target).stem}--{recipe}")


@dataclass
class Outcome:
    combo: Combo
    status: str  # "passed", "gates failed" or "error"
    seconds: float
    bundle: str | None = None  # the installed bundle (passed) or None
    summary: dict = field(default_factory=dict)  # speedup, size_ratio and the bundle's fidelity metrics
    gates: list = field(default_factory=list)
    error: str | None = None
    timing_warnings: list = field(default_factory=list)

    def line(self) -> str:
        what = f"{self.combo.slug}: {self.status}"
        if self.summary:
            numbers = ", ".join(f"{k} {v:.4g}" for k, v in self.summary.items() if isinstance(v, (int, float)))
            what += f" ({numbers})"
        return what + (f": {self.error}" if self.error else "") + f" [{self.seconds:.0f} s]"


@dataclass
class MatrixRun:
    outcomes: list[Outcome]  # in the order of the planned combinations
    concurrent: int  # builds that could run at once (they share hosts: speed figures are indicative above 1)
    where: str  # "in this process" or the Ray cluster's size


def plan_matrix(models: list[str | None], targets: list[str], recipes: list[str | None]) -> list[Combo]:
    """Every combination, each target and recipe checked first (a typo fails before any build starts)."""
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

    for target in targets:
        load_target(target)
    for recipe in recipes:
        if recipe is not None:
            load_recipe(recipe)
    combos = [Combo(m, t, r) for m in (models or [None]) for t in targets for r in (recipes or [None])]
    slugs = [c.slug for c in combos]
    if len(set(slugs)) != len(slugs):
        raise ConfigError("two combinations would write the same bundle folder (models with the same folder "
                          "name?): give the models distinct names")
    return combos


def build_one(combo: Combo, output: str, options: dict) -> Outcome:
    """One combination, in this process; never raises for a build that fails (it becomes an Outcome)."""
    from hfexport._quiet import quiet_libraries
    from hfexport.build.engine import run_build

    bundle = Path(output) / combo.slug
    started = time.perf_counter()
    try:
        with quiet_libraries():
            result = run_build(combo.model, target=combo.target, recipe=combo.recipe, output=bundle, force=True,
                               progress=Progress("quiet"), **options)
    except FidelityError as exc:
        report = _kept_report(exc)
        return Outcome(combo, "gates failed", time.perf_counter() - started, summary=_summary(report),
                       gates=report.get("gates", []), error=str(exc).split("; report kept")[0],
                       timing_warnings=report.get("timing_warnings", []))
    except HfExportError as exc:
        return Outcome(combo, "error", time.perf_counter() - started, error=str(exc).splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - one build's bug must not stop the others; it is reported as one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Outcome(combo, "error", time.perf_counter() - started,
                       error=f"unexpected {type(exc).__name__}: {first} (a bug in hfexport: rebuild this "
                             "combination alone with --verbose and report the traceback)")
    report = result.report.model_dump(mode="json")
    return Outcome(combo, "passed", time.perf_counter() - started, bundle=str(result.bundle),
                   summary=_summary(report), gates=report["gates"], timing_warnings=report["timing_warnings"])


def _kept_report(exc: FidelityError) -> dict:
    try:
        return json.loads((Path(exc.report_dir) / "report.json").read_text()) if exc.report_dir else {}
    except (OSError, ValueError):
        return {}


def _summary(report: dict) -> dict:
    return dict(report.get("summary") or {})


def run_matrix(combos: list[Combo], output: str | Path, *, ray: bool | None = None, address: str | None = None,
               cpus_per_build: float = 1, retries: int = 2, options: dict | None = None,
               progress: Progress | None = None) -> MatrixRun:
    """Build every combination; `ray` None uses Ray when it is installed. Results in `combos` order."""
    progress = progress or Progress()
    output = Path(output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    asked = ray
    if ray is None:
        ray = _ray_installed()
    elif ray and not _ray_installed():
        raise ConfigError("--ray needs Ray: pip install 'hfexport[scale]' (or run without --ray: one build at a time)")
    if ray:
        try:
            return _run_on_ray(combos, str(output), options, address=address, cpus_per_build=cpus_per_build,
                               retries=retries, progress=progress)
        except _RayUnavailable as exc:
            if asked:  # the user asked for Ray: say why it is not there
                raise ConfigError(str(exc)) from None
            progress.info(f"{exc}: building one at a time in this process")
    outcomes = []
    for i, combo in enumerate(combos, 1):
        progress.info(f"[{i}/{len(combos)}] {combo.slug}: building in this process")
        outcomes.append(build_one(combo, str(output), options))
        progress.info(f"[{i}/{len(combos)}] {outcomes[-1].line()}")
    return MatrixRun(outcomes, 1, "in this process, one build at a time")


def _ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def write_matrix_report(run: MatrixRun, output: str | Path) -> dict[str, Path]:
    """matrix.json, matrix.md (a table) and matrix.html (the table and speed vs fidelity plots per target)."""
    output, outcomes, concurrent = Path(output), run.outcomes, run.concurrent
    rows = [{**asdict(o), "combo": {**asdict(o.combo), "slug": o.combo.slug}} for o in outcomes]
    paths = {"json": output / "matrix.json", "md": output / "matrix.md", "html": output / "matrix.html"}
    paths["json"].write_text(json.dumps({"ran": run.where, "concurrent_builds": concurrent, "results": rows}, indent=2) + "\n")
    paths["md"].write_text(_markdown(outcomes, concurrent))
    paths["html"].write_text(render_matrix(outcomes, concurrent, run.where), encoding="utf-8")
    return paths


def _markdown(outcomes: list[Outcome], concurrent: int) -> str:
    lines = ["| model | target | recipe | result | speed vs PyTorch | size ratio | fidelity | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c, s = o.combo, o.summary
        fid = fidelity_metric(o)
        result = o.status + (f": {o.error}" if o.status == "error" else "")
        lines.append(f"| {c.slug.split('--')[0]} | {c.target} | {Path(c.recipe).stem if c.recipe else 'default'} | "
                     f"{result} | {format_ratio(s.get('speedup'), 'x')} | {format_ratio(s.get('size_ratio'), 'x')} | "
                     f"{f'{fid[0]} {fid[1]:.4f}' if fid else '–'} | {o.seconds:.0f} |")
    note = (f"\n{concurrent} builds ran at once: they shared the host, so the speed column is indicative only; "
            "fidelity does not depend on it.\n" if concurrent > 1 else "\n")
    return "\n".join(lines) + "\n" + note


# -- on Ray -----------------------------------------------------------------------------------------

def _run_on_ray(combos, output: str, options: dict, *, address: str | None, cpus_per_build: float, retries: int,
               progress: Progress):
    """Every combination as a Ray task; results reported as they finish, returned in `combos` order."""
    import ray

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
    except Exception as exc:  # noqa: BLE001 - ray.init raises plain Exception (a node that timed out starting)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ray.shutdown()  # whatever half-started
        raise _RayUnavailable(f"ray: cannot start or reach the cluster {address or '(local)'} ({first})") from None
    progress.info(f"ray: {'local cluster' if address in (None, 'local') else address}")


class _RayUnavailable(Exception):
    """Ray is installed but its cluster cannot be started or reached."""


def _wants_gpu(target: str) -> bool:
    from hfexport.profiles import load_target

    return load_target(target).device == "cuda"
