"""`--recipe auto`: build the target's candidate recipes and their main knobs, keep the fastest that passes.

Candidates: every shipped recipe written for the target and the model's kind (encoder or LLM) that plans for
this model and needs no training data, plus variants of the quantising ones along the knobs that move speed
and fidelity on that backend, and the default recipe with its most error-prone MatMuls kept in float. Every candidate is judged by the SAME gates: the target's default recipe's
(the task's defaults unless that recipe sets its own). They build as one `hfexport matrix` (on Ray when it is
installed), then every candidate that passed is timed again side by side in this process, alternating, so
that the ranking never compares builds timed under different load. The fastest is installed at `output`;
`<output>.search/` keeps the whole front: search.html, search.json and every candidate's bundle.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from hfexport.errors import ConfigError, FidelityError, PlanError
from hfexport.progress import Progress

# Knob variants per backend: (name suffix, {pass type: option overrides}), applied to int8 recipes.
_VARIANTS = {
    "onnxruntime": [
        # Q/K/V as separate MatMuls, so int8 reaches them (fused Attention keeps them fp32).
        ("qkv-int8", {"optimize": {"attention": "unfused_projections"}}),
        ("per-tensor", {"quantize": {"per_channel": False}}),
    ],
    "openvino": [("no-smoothquant", {"quantize": {"mode": "static", "smooth_quant_alpha": 0.0}})],
}
_INT4_GROUPS = (32, 64, 128)  # LLM int4 variants: weights per scale
# The target's default int8 recipe with its most error-prone MatMuls kept in float: the points between int8 and
# fp32 on the front, and Q/K/V in int8 made to pass by the same fallback (docs/decisions/0184-int8-float-fallback.md);
# and every fused Attention's Q/K/V in float, the cpu default before SmoothQuant let it take int8 where measured
# (`attention_int8: auto`, 0194 and 0196): slower, closer to the float model.
_FALLBACKS = {"onnxruntime": [
    ("attention-float", {"quantize": {"attention_int8": False}}),
    ("float3", {"quantize": {"float_fallback": 3}}),
    ("float6", {"quantize": {"float_fallback": 6}}),
    ("qkv-int8+float6", {"optimize": {"attention": "unfused_projections"}, "quantize": {"float_fallback": 6}}),
]}


@dataclass
class Candidate:
    name: str
    path: Path  # the recipe file built
    latency_ms: float | None = None  # batch-1 p50, timed side by side with every other passing candidate
    fidelity: tuple[str, float] | None = None
    status: str = "not built"
    error: str | None = None
    on_front: bool = False


def candidate_recipes(target: str, task: str, folder: Path, *, model: str | None = None) -> list[Path]:
    """The recipe files of every candidate for `target` and `task`, written to `folder` (variants included)."""
    from hfexport.profiles import load_target
    from hfexport.recipes import list_recipes, load_recipe
    from hfexport.tasks import get_task

    profile = load_target(target)
    generative = get_task(task).generative
    default = load_recipe(profile.recipe_for(task))
    gates = default.gates.model_dump(exclude_none=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for recipe in list_recipes():
        kinds = {spec.type for spec in recipe.passes}
        if profile.name not in recipe.targets or "distill" in kinds or "prune" in kinds:
            continue
        if recipe.name.startswith("llm-") != generative:
            continue
        body = recipe.model_dump(mode="json", exclude={"name"})
        body["gates"] = gates  # one bar for every candidate
        bodies = {recipe.name: body}
        quantize = next((p for p in body["passes"] if p["type"] == "quantize"), None)
        if quantize and quantize.get("precision") == "int8" and not quantize.get("weights_only"):
            for suffix, overrides in _VARIANTS.get(profile.backend, []):
                bodies[f"{recipe.name}+{suffix}"] = _with(body, overrides)
            if recipe.name == default.name and not generative:
                for suffix, overrides in _FALLBACKS.get(profile.backend, []):
                    bodies[f"{recipe.name}+{suffix}"] = _with(body, overrides)
        if quantize and quantize.get("precision") == "int4" and profile.backend == "onnxruntime":
            for group in _INT4_GROUPS:
                bodies[f"{recipe.name}+g{group}"] = _with(body, {"quantize": {"group_size": group}})
        for name, candidate in bodies.items():
            path = folder / f"{name}.yaml"
            path.write_text(json.dumps({"name": name, **candidate}, indent=1))  # JSON is YAML
            paths.append(path)
    return _plannable(paths, profile, model, task)


def _with(body: dict, overrides: dict) -> dict:
    copy = json.loads(json.dumps(body))
    for spec in copy["passes"]:
        spec.update(overrides.get(spec["type"], {}))
    if not any(spec["type"] == kind for spec in copy["passes"] for kind in overrides):
        return body
    return copy


def _plannable(paths: list[Path], profile, model: str | None, task: str) -> list[Path]:
    """Only the candidates the planner accepts for this model (an option another backend reads is refused)."""
    from hfexport.context import PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.recipes import load_recipe

    source = resolve_model(model, task=task, log=lambda _m: None)
    kept, seen = [], set()
    for path in paths:
        try:
            plan = make_plan(PlanContext(profile, load_recipe(path), source, has_calibration_data=True))
        except (PlanError, ConfigError):
            continue
        # Two recipes that plan the same steps with the same effective settings are one candidate (`reference`
        # is `default` written out; on openvino `default` is `int8-static`).
        key = repr([(step.name, getattr(step, "settings", None) or step.config.model_dump(mode="json"))
                    for step in plan.steps])
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def auto_build(model: str | None, *, target: str, output: str | Path, task: str | None = None, force: bool = False,
               progress: Progress | None = None, ray: bool | None = None, sign_with=None, **options):
    """Build every candidate, time the passing ones side by side, install the fastest at `output`.

    `options` are `hfexport.build` keywords every candidate gets (data, threads, cache, validation)."""
    from hfexport.build.bundle import check_output
    from hfexport.loading import resolve_model
    from hfexport.matrix import Combo, run_matrix

    progress = progress or Progress()
    output = Path(output).expanduser().resolve()
    check_output(output, force)
    work = output.with_name(output.name + ".search")
    if work.exists():
        shutil.rmtree(work)
    task = resolve_model(model, task=task, log=lambda _m: None).task
    paths = candidate_recipes(target, task, work / "recipes", model=model)
    progress.info(f"--recipe auto: {len(paths)} candidates for {target} ({task}): "
                  + ", ".join(p.stem for p in paths))
    combos = [Combo(model, target, str(p)) for p in paths]
    run = run_matrix(combos, work / "bundles", ray=ray, options={"task": task, **options}, progress=progress)
    candidates = [_candidate(path, outcome) for path, outcome in zip(paths, run.outcomes, strict=True)]
    passed = [c for c, o in zip(candidates, run.outcomes, strict=True) if o.status == "passed"]
    if not passed:
        raise FidelityError(f"--recipe auto: none of the {len(candidates)} candidates passed the gates "
                            f"(search report: {work / 'search.html'})")
    bundles = {c.name: Path(o.bundle) for c, o in zip(candidates, run.outcomes, strict=True) if o.bundle}
    progress.info(f"timing the {len(passed)} passing candidates side by side")
    timings, warnings = _time_side_by_side(bundles, task)
    for candidate, ms in timings.items():
        next(c for c in candidates if c.name == candidate).latency_ms = ms
    for warning in warnings:
        progress.info(f"timing: {warning}")
    _mark_front(passed)
    best = min(passed, key=lambda c: c.latency_ms)
    _write_search_report(candidates, best, work, run.where, warnings)
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(bundles[best.name], output)
    if sign_with is not None:
        from hfexport.runtime.signing import sign_bundle

        progress.info(f"signed by {sign_bundle(output, sign_with).signer} ({output.name}/model.sig)")
    progress.info(f"--recipe auto chose {best.name}: {best.latency_ms:.2f} ms batch 1; front of "
                  f"{sum(c.on_front for c in candidates)}; search report {work / 'search.html'}")
    return _result(output)


def _result(bundle: Path):
    from hfexport.build.engine import BuildResult
    from hfexport.report.schema import Report
    from hfexport.runtime.manifest import read_manifest

    report = Report.model_validate_json((bundle / "report" / "report.json").read_text())
    return BuildResult(bundle, read_manifest(bundle), report)


def _candidate(path: Path, outcome) -> Candidate:
    from hfexport.matrix import fidelity_metric

    return Candidate(path.stem, path, fidelity=fidelity_metric(outcome), status=outcome.status, error=outcome.error)


def _time_side_by_side(bundles: dict[str, Path], task: str, runs: int = 30) -> tuple[dict[str, float], list[str]]:
    """Batch-1 p50 of each bundle, timed in alternating blocks in this process (one load for all), and why the
    timing should not be trusted (a busy host: the ranking holds better than the milliseconds), if it should not."""
    import statistics

    from hfexport import data
    from hfexport.runtime import load
    from hfexport.tasks import get_task
    from hfexport.validation.timing import LoadWatch, time_alternating

    text = " ".join(data.default_calibration_texts()[:6])  # a few sentences: ~100 tokens
    loaded = {name: load(path, session_overrides={"allow_spinning": False}) for name, path in bundles.items()}
    generative = any(hasattr(p, "generate") for p in loaded.values())
    spec = get_task(task)
    if spec.modality != "text":  # an image or a clip, called as the task's apps call it (CLIP: with labels)
        sample = data.synthetic_image(0) if spec.modality == "image" else data.synthetic_audio(0)
        calls = {name: (lambda p=p: spec.call(p, [sample])) for name, p in loaded.items()}
    else:
        calls = {name: ((lambda p=p: p.generate(text, max_new_tokens=16, do_sample=False)) if generative
                        else (lambda p=p: p([text]))) for name, p in loaded.items()}
    watch = LoadWatch()
    timed = time_alternating(calls, runs, settle=2)
    return {name: float(statistics.median(samples)) for name, samples in timed.items()}, watch.warnings(timed)


def _mark_front(passed: list[Candidate]) -> None:
    """Pareto front over (latency lower, fidelity higher): no other candidate is as good on both and better on one."""
    def fid(c: Candidate) -> float:
        return c.fidelity[1] if c.fidelity else 0.0

    def dominates(a: Candidate, b: Candidate) -> bool:
        return (a.latency_ms <= b.latency_ms and fid(a) >= fid(b)
                and (a.latency_ms < b.latency_ms or fid(a) > fid(b)))

    for c in passed:
        c.on_front = not any(dominates(o, c) for o in passed if o is not c)


def _write_search_report(candidates: list[Candidate], best: Candidate, work: Path, where: str,
                         warnings: list[str]) -> None:
    from hfexport.report.search_html import render_search

    rows = [{"name": c.name, "recipe": str(c.path), "status": c.status, "error": c.error,
             "latency_ms": c.latency_ms, "fidelity": list(c.fidelity) if c.fidelity else None, "on_front": c.on_front}
            for c in candidates]
    (work / "search.json").write_text(json.dumps({"chosen": best.name, "built": where, "timing_warnings": warnings,
                                                  "candidates": rows}, indent=2) + "\n")
    (work / "search.html").write_text(render_search(candidates, best, where, warnings), encoding="utf-8")
