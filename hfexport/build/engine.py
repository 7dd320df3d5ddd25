"""The build: load, plan, run the passes, stage the bundle, validate it, install it atomically."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from dataclasses import dataclass

from hfexport.artifacts import Artifact, TorchModel
from hfexport.errors import ModelLoadError
from hfexport.progress import Progress
from hfexport.report.schema import Report
from hfexport.validation.evalset import make_eval_set


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    manifest: dict
    report: Report


def run_build(model, *, target, recipe=None, output="hfexport-bundle", task=None, revision=None,
              trust_remote_code=False, calibration_data=None, eval_data=None, train_data=None, text_column=None,
              label_column=None, gates=True, force=False, threads=None, progress: Progress | None = None
              ) -> BuildResult:
    from hfexport.build import bundle as bundles
    from hfexport import data
    from hfexport.context import BuildContext, PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.build.manifest import manifest_body
    from hfexport.recipes import load_recipe
    from hfexport.validation import validate_build, write_report

    progress = progress or Progress()
    output = Path(output).expanduser().resolve()
    # Every check that needs no heavy work runs before any: a bad argument fails in a second.
    profile = load_target(target)
    chosen = load_recipe(recipe) if recipe else None
    bundles.check_output(output, force)
    calibration = (data.read_texts(calibration_data, text_column=text_column) if calibration_data
                   else data.default_calibration_texts())
    records = data.read_records(eval_data) if eval_data else None
    train_texts = data.read_texts(train_data, text_column=text_column) if train_data else None
    source = resolve_model(model, task=task, revision=revision, trust_remote_code=trust_remote_code,
                           log=progress.info)
    # The target's default recipe can depend on the task (an LLM needs a KV-cache export).
    chosen = chosen or load_recipe(profile.recipe_for(source.task))
    plan = make_plan(PlanContext(profile, chosen, source, has_calibration_data=bool(calibration)))
    progress.info(f"{source.model_id} ({source.task}) -> {profile.name} [{profile.effective_isa()}]: {plan.describe()}")

    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
    try:
        tokenizer_dir = _prepare_tokenizer(source, workdir / "tokenizer")
        ctx = BuildContext(profile, chosen, source, workdir, tokenizer_dir, calibration, progress, train_texts)
        eval_set = make_eval_set(source.task, records, samples=chosen.evaluation.samples,
                                 mask_token=ctx.hf_tokenizer().mask_token, text_column=text_column,
                                 label_column=label_column, source=f"file {eval_data}" if eval_data else
                                 "hfexport held-out corpus")
        artifact: Artifact = TorchModel(source.local_dir)
        reference_size = artifact.size_bytes()
        pass_records, stages = [], []
        for index, step in enumerate(plan.steps, 1):
            progress.start(step.name, step.describe(), index, len(plan.steps))
            started = time.perf_counter()
            artifact = step.run(artifact, ctx)
            seconds = time.perf_counter() - started
            stats, size = getattr(artifact, "stats", {}), artifact.size_bytes()
            progress.done(step.name, _stats_line(stats, size), stats=stats)
            pass_records.append({"name": step.name, "params": step.config.model_dump(mode="json"),
                                 "seconds": round(seconds, 3), "size_bytes": size, "stats": stats})
            stages.append((step.name, artifact, seconds))

        staging = workdir / "bundle"
        extra = {"generation_config.json": _generation_config(source, workdir)} if _generative(source) else {}
        model_files = bundles.stage_bundle(staging, artifact, tokenizer_dir, source.local_dir / "config.json",
                                           extra)
        precision = next((r["params"]["precision"] for r in reversed(pass_records) if r["name"] == "quantize"),
                         "fp32")
        body = manifest_body(source, profile, chosen, pass_records, artifact, model_files, ctx.hf_tokenizer(),
                              precision)
        bundles.write_manifest(staging, body)

        progress.start("validate", "validate against PyTorch fp32")
        report = validate_build(ctx, staging, stages, reference_size, eval_set, threads)
        progress.done("validate", _summary_line(report))
        write_report(report, staging / "report")
        body["validation"] = {"passed": report.passed, "summary": report.summary,
                              "gates": [g.model_dump() for g in report.gates], "report": "report/report.json"}
        manifest = bundles.write_manifest(staging, body)

        if gates and not report.passed:
            from hfexport.validation.metrics import gate_failure

            kept = output.with_name(output.name + ".failed-report")
            shutil.rmtree(kept, ignore_errors=True)
            shutil.move(str(staging / "report"), kept)
            raise gate_failure(report.gates, kept)
        bundles.install(staging, output, force)
        return BuildResult(output, manifest, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _generative(source) -> bool:
    from hfexport.tasks import TASKS

    return TASKS[source.task].generative


def _generation_config(source, workdir: Path) -> Path:
    """The model's generation config as JSON (EOS ids, sampling defaults) for the runtime's generation loop."""
    from transformers import GenerationConfig, PretrainedConfig

    try:
        config = GenerationConfig.from_pretrained(str(source.local_dir))
    except OSError:  # no generation_config.json: derive it from config.json, as transformers does
        config = GenerationConfig.from_model_config(PretrainedConfig.from_dict(source.config))
    path = workdir / "generation_config.json"
    path.write_text(config.to_json_string(use_diff=True), encoding="utf-8")
    return path


def _prepare_tokenizer(source, folder: Path) -> Path:
    """Save the model's fast tokenizer as tokenizer.json, which the torch-free runtime reads."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.local_dir), trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source.model_id}: {str(exc).splitlines()[0]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{source.model_id} has no fast tokenizer; the runtime needs tokenizer.json")
    tokenizer.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{source.model_id}: the tokenizer did not produce tokenizer.json")
    return folder


def _stats_line(stats: dict, size: int) -> str:
    parts = [f"{size / 1e6:.1f} MB"]
    if "nodes" in stats:
        before = stats.get("nodes_before")
        parts.append(f"{before} -> {stats['nodes']} nodes" if before else f"{stats['nodes']} nodes")
    if stats.get("fused_operators"):
        parts.append("fused " + ", ".join(f"{k} x{v}" for k, v in stats["fused_operators"].items()))
    if "quantized_nodes" in stats:
        parts.append(f"{stats['quantized_nodes']} {stats.get('precision', 'int8')} nodes "
                     f"({stats.get('isa') or stats.get('algorithm')})")
    if "parameters_after" in stats:
        parts.append(f"{stats['parameters_before'] / 1e6:.1f}M -> {stats['parameters_after'] / 1e6:.1f}M parameters")
    if "kept_layers" in stats:
        parts.append(f"kept layers {stats['kept_layers']}, FFN {stats['ffn_width'][0]} -> {stats['ffn_width'][1]}")
    if "sparsity" in stats:
        parts.append(f"sparsity {stats['sparsity']:.2f}")
    if "held_out_after" in stats:
        parts.append(f"held-out {stats['held_out_metric']} {stats['held_out_before']:.4f} -> "
                     f"{stats['held_out_after']:.4f} in {stats['steps']} steps")
    return "; ".join(parts)


def _summary_line(report: Report) -> str:
    s = report.summary
    fid = ", ".join(f"{k} {v:.4f}" for k, v in report.stages[-1].fidelity.items())
    verdict = "gates passed" if report.passed else "GATES FAILED"
    return f"{s['speedup']:.2f}x faster, {s['size_ratio']:.2f}x size, {fid}; {verdict}"


