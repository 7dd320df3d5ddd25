"""The Python API. Everything the CLI does is one call here."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hfexport._quiet import quiet_libraries
from hfexport.artifacts import Artifact, TorchModel
from hfexport.errors import BundleIntegrityError, ModelLoadError
from hfexport.progress import Progress
from hfexport.report.schema import Report
from hfexport.validate import make_eval_set


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    manifest: dict
    report: Report


def build(
    model: str | None = None,
    *,
    target: str = "cpu",
    recipe: str | None = None,
    output: str | Path = "hfexport-bundle",
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    calibration_data: str | Path | None = None,
    eval_data: str | Path | None = None,
    train_data: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    gates: bool = True,
    force: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
    verbose: bool = False,
) -> BuildResult:
    """Build a bundle for `target` from a hub id or local folder (default: all-MiniLM-L6-v2)."""
    with quiet_libraries(not verbose):
        return _build(model, target=target, recipe=recipe, output=output, task=task, revision=revision,
                      trust_remote_code=trust_remote_code, calibration_data=calibration_data, eval_data=eval_data,
                      train_data=train_data,
                      text_column=text_column, label_column=label_column, gates=gates, force=force,
                      threads=threads, progress=progress or Progress())


def _build(model, *, target, recipe, output, task, revision, trust_remote_code, calibration_data, eval_data,
           train_data, text_column, label_column, gates, force, threads, progress) -> BuildResult:
    from hfexport import bundle as bundles
    from hfexport import data
    from hfexport.context import BuildContext, PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe

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
        body = _manifest_body(source, profile, chosen, pass_records, artifact, model_files, ctx.hf_tokenizer(),
                              precision)
        bundles.write_manifest(staging, body)

        progress.start("validate", "validate against PyTorch fp32")
        report = _validate_build(ctx, staging, stages, reference_size, eval_set, threads)
        progress.done("validate", _summary_line(report))
        _write_report(report, staging / "report")
        body["validation"] = {"passed": report.passed, "summary": report.summary,
                              "gates": [g.model_dump() for g in report.gates], "report": "report/report.json"}
        manifest = bundles.write_manifest(staging, body)

        if gates and not report.passed:
            from hfexport.validate import gate_failure

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


def _manifest_body(source, profile, recipe, records, artifact, model_files, tokenizer, precision) -> dict:
    from hfexport import host
    from hfexport.bundle import tool_versions

    config = source.config
    return {
        "model": {"id": source.model_id, "revision": source.revision, "task": source.task,
                  "model_type": source.model_type, "max_length": source.max_length, "pooling": source.pooling,
                  "id2label": config.get("id2label") if source.task != "feature-extraction" else None,
                  "problem_type": config.get("problem_type"),
                  "mask_token": tokenizer.mask_token, "mask_token_id": tokenizer.mask_token_id},
        "target": {"name": profile.name, "backend": profile.backend, "device": profile.device,
                   "execution_providers": profile.execution_providers, "isa": profile.effective_isa(),
                   "precision": precision, "session": profile.session_options(),
                   "runtime_packages": profile.runtime_packages},
        "recipe": {"name": recipe.name, "gates": recipe.gates.model_dump(mode="json"),
                   "evaluation": recipe.evaluation.model_dump(mode="json")},
        "passes": records,
        "model_file": model_files[0],
        "model_files": model_files,
        "tokenizer": {"file": "tokenizer/tokenizer.json", "pad_token": tokenizer.pad_token,
                      "pad_token_id": tokenizer.pad_token_id, "padding_side": tokenizer.padding_side},
        "signature": artifact.signature(),
        "tools": tool_versions(),
        "build_host": host.host_summary(),
    }


def _validate_build(ctx, staging: Path, stages, reference_size: int, eval_set, threads) -> Report:
    import torch

    from hfexport import host
    from hfexport.bundle import tool_versions
    from hfexport.evaluation import PredictorRunner, TorchRunner, evaluate
    from hfexport.runtime import load
    from hfexport.runtime.loader import Predictor, open_encoder, open_model

    n_threads = threads or ctx.target.session.intra_op_threads or host.physical_cores()
    torch.set_num_threads(n_threads)
    if _generative(ctx.source):
        return _validate_generation(ctx, staging, stages, reference_size, eval_set.texts, eval_set.source,
                                    n_threads)
    # NOTE: side by side in one process, ONNX Runtime sessions whose idle threads spin for the next call
    # steal the 2 cores from whichever side is being timed; validation switches spinning off.
    bundle = load(staging, threads=n_threads, session_overrides=_NO_SPIN)
    meta = bundle.manifest["model"]
    input_names = [i["name"] for i in bundle.manifest["signature"]["inputs"]]
    device = _reference_device(ctx.target.device)
    reference = TorchRunner(ctx.torch_module(ctx.source.local_dir).to(device), ctx.hf_tokenizer(), ctx.source.task, meta,
                            ctx.source.max_length, input_names)
    candidates = []
    encoder = open_encoder(staging, bundle.manifest)
    for name, artifact, seconds in stages[:-1]:
        if artifact.kind == "torch":  # a pruned or distilled checkpoint: measured in PyTorch, like the reference
            runner = TorchRunner(ctx.torch_module(artifact.path).to(device), ctx.hf_tokenizer(), ctx.source.task, meta,
                                 ctx.source.max_length, input_names)
        else:
            model = open_model(artifact.path, bundle.manifest, threads=n_threads,
                               backend=_stage_backend(ctx, artifact), session_overrides=_NO_SPIN)
            runner = PredictorRunner(Predictor(bundle.manifest, encoder, model), meta)
        candidates.append({"name": name, "kind": artifact.kind,
                           "runner": runner, "size": artifact.size_bytes(), "pass_seconds": seconds})
    last_name, last_artifact, last_seconds = stages[-1]
    # What the backend actually chose (OpenVINO: device, inference precision, streams), which can differ
    # from what the profile asked for; the report says which one was measured.
    target_info = _target_info(bundle)
    notes = _bundle_notes(ctx, last_name, target_info)
    candidates.append({"name": "bundle", "kind": "bundle", "runner": PredictorRunner(bundle, meta),
                       "size": last_artifact.size_bytes(), "pass_seconds": last_seconds, "notes": notes})
    report = evaluate(reference=reference, reference_size=reference_size, candidates=candidates, eval_set=eval_set,
                      settings=ctx.recipe.evaluation, threads=n_threads, meta=meta,
                      gates_overrides=ctx.recipe.gates.model_dump(),
                      model_info={"id": ctx.source.model_id, "revision": ctx.source.revision,
                                  "task": ctx.source.task},
                      target_info=target_info, versions=tool_versions(), progress=ctx.progress)
    if ctx.recipe.evaluation.memory:
        _measure_memory(report, ctx, staging, stages, eval_set, n_threads)
    return report


def _reference_device(target_device: str) -> str:
    """Where PyTorch runs as the baseline: on the GPU for a GPU target when the host has one, so the speed
    ratios compare like with like; on the CPU otherwise (also undoing a distill pass that trained there)."""
    import torch

    return "cuda" if target_device == "cuda" and torch.cuda.is_available() else "cpu"


def _target_info(predictor) -> dict:
    """The manifest's target, plus what the backend actually chose (OpenVINO: device, inference
    precision, streams), which can differ from what the profile asked for."""
    info = {k: predictor.manifest["target"][k] for k in ("name", "backend", "isa", "precision",
                                                         "execution_providers")}
    runtime = dict(getattr(predictor.backend, "effective", None) or {})
    if runtime:
        info["runtime"] = runtime
    return info


def _bundle_notes(ctx, last_name: str, target_info: dict) -> list[str]:
    """The report's notes on the bundle stage; the ones about where it ran are shown as the build goes too."""
    runtime = _runtime_notes(target_info)
    for note in runtime:
        ctx.progress.info(note)
    return [f"output of {last_name}, loaded through hfexport.runtime.load", *runtime]


def _runtime_notes(target_info: dict) -> list[str]:
    runtime = target_info.get("runtime") or {}
    if "asked_for" in runtime:  # an ONNX Runtime bundle checked where its first provider is missing
        return [f"ran on {runtime['execution_providers']}: this host lacks {runtime['asked_for'].split(', ')[0]}. "
                f"Fidelity is the bundle graph's; speed and memory are this host's, not the target's"]
    return ["runtime: " + ", ".join(f"{k} {v}" for k, v in runtime.items() if v is not None)] if runtime else []


def _measure_memory(report: Report, ctx, staging: Path, stages, eval_set, threads: int) -> None:
    """Peak RSS of a fresh process per stage, running one evaluation batch."""
    from hfexport._memory import peak_rss_mb
    from hfexport.tasks import TASKS

    ctx.progress.info("peak memory: one fresh process per stage")
    inputs = eval_set.inputs[: ctx.recipe.evaluation.batch_size]
    scratch = ctx.workdir
    by_name = {stage.name: stage for stage in report.stages}
    by_name["pytorch"].peak_rss_mb = peak_rss_mb("torch", ctx.source.local_dir, inputs, threads, scratch,
                                                 TASKS[ctx.source.task].auto_class, str(ctx.tokenizer_dir))
    for name, artifact, _ in stages[:-1]:
        if name not in by_name:
            continue
        if artifact.kind == "torch":
            args = ("torch", artifact.path, inputs, threads, scratch, TASKS[ctx.source.task].auto_class,
                    str(ctx.tokenizer_dir))
        else:
            args = ("stage", artifact.path, inputs, threads, scratch, str(staging), _stage_backend(ctx, artifact))
        by_name[name].peak_rss_mb = peak_rss_mb(*args)
    by_name["bundle"].peak_rss_mb = peak_rss_mb("bundle", staging, inputs, threads, scratch)


def _validate_generation(ctx, staging: Path, stages, reference_size: int, eval_texts, text_source,
                         n_threads: int) -> Report:
    from hfexport.bundle import tool_versions
    from hfexport.evaluation_generation import BundleGeneration, TorchGeneration, evaluate_generation
    from hfexport.runtime import load
    from hfexport.runtime.generation import TextGenerator
    from hfexport.runtime.loader import open_model

    bundle = load(staging, threads=n_threads, session_overrides=_NO_SPIN)
    manifest = bundle.manifest
    tokenizer_file = staging / manifest["tokenizer"]["file"]
    candidates = []
    for name, artifact, seconds in stages[:-1]:
        if artifact.kind == "torch":  # a pruned checkpoint has no generation loop to measure here
            continue
        model = open_model(artifact.path, manifest, threads=n_threads, backend=_stage_backend(ctx, artifact),
                           session_overrides=_NO_SPIN)
        candidates.append({"name": name, "kind": artifact.kind, "size": artifact.size_bytes(), "pass_seconds": seconds,
                           "runner": BundleGeneration(TextGenerator(manifest, staging, model, tokenizer_file))})
    last_name, last_artifact, last_seconds = stages[-1]
    target_info = _target_info(bundle)
    candidates.append({"name": "bundle", "kind": "bundle", "runner": BundleGeneration(bundle),
                       "size": last_artifact.size_bytes(), "pass_seconds": last_seconds,
                       "notes": _bundle_notes(ctx, last_name, target_info)})
    model = ctx.torch_module(ctx.source.local_dir).to(_reference_device(ctx.target.device))
    reference = TorchGeneration(model, bundle.eos_token_ids, bundle.pad_token_id)
    return evaluate_generation(
        reference=reference, tokenizer=ctx.hf_tokenizer(), reference_size=reference_size, candidates=candidates,
        texts=eval_texts, settings=ctx.recipe.evaluation, threads=n_threads,
        gates_overrides=ctx.recipe.gates.model_dump(),
        model_info={"id": ctx.source.model_id, "revision": ctx.source.revision, "task": ctx.source.task},
        target_info=target_info, text_source=text_source, versions=tool_versions(), progress=ctx.progress,
        memory_paths={"pytorch": ctx.source.local_dir, "bundle": staging})


_NO_SPIN = {"allow_spinning": False}


def _stage_backend(ctx, artifact: Artifact) -> str:
    """An intermediate graph runs on the target's backend when it is in the target's format, and on the
    runtime that reads its format otherwise (an ONNX stage before an OpenVINO conversion)."""
    return ctx.target.backend if artifact.kind == ctx.target.artifact else _READERS[artifact.kind]

# The runtime backend that reads each intermediate artifact format.
_READERS = {"onnx": "onnxruntime", "openvino": "openvino"}


def _write_report(report: Report, folder: Path) -> None:
    from hfexport.report.html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")


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


def inspect_bundle(path: str | Path) -> dict:
    """Manifest summary plus a checksum check that reports rather than raises."""
    from hfexport.runtime.manifest import read_manifest, verify_files

    bundle = Path(path).expanduser()
    manifest = read_manifest(bundle)
    try:
        verify_files(bundle, manifest)
        integrity = "ok"
    except BundleIntegrityError as exc:
        integrity = str(exc)
    return {"path": str(bundle), "manifest": manifest, "checksums": integrity}


def validate_bundle(path: str | Path, *, eval_data: str | Path | None = None, text_column: str | None = None,
                    label_column: str | None = None, report_dir: str | Path | None = None,
                    threads: int | None = None, progress: Progress | None = None) -> Report:
    """Re-run validation of an existing bundle on this host; writes a fresh report outside the bundle."""
    from transformers import AutoTokenizer

    from hfexport import data, host
    from hfexport.bundle import tool_versions
    from hfexport.evaluation import PredictorRunner, TorchRunner, evaluate
    from hfexport.loading import DEFAULT_MODEL_ID, load_torch_model, resolve_model
    from hfexport.recipes import Evaluation, Gates
    from hfexport.runtime import load

    progress = progress or Progress()
    records = data.read_records(eval_data) if eval_data else None
    bundle_path = Path(path).expanduser().resolve()
    predictor = load(bundle_path, threads=threads)
    manifest = predictor.manifest
    meta = manifest["model"]
    settings = Evaluation(**manifest["recipe"]["evaluation"])
    # The packaged default model is found again through its package; anything else by id and revision.
    packaged = meta["id"] == DEFAULT_MODEL_ID and str(meta.get("revision", "")).startswith("gt-")
    model_ref = None if packaged else meta["id"]
    revision = None if packaged or Path(str(model_ref)).exists() else meta.get("revision")
    with quiet_libraries():
        source = resolve_model(model_ref, task=meta["task"], revision=revision, log=progress.info)
        n_threads = threads or manifest["target"]["session"].get("intra_op_threads") or host.physical_cores()
        import torch

        torch.set_num_threads(n_threads)
        tokenizer = AutoTokenizer.from_pretrained(str(bundle_path / "tokenizer"))
        eval_set = make_eval_set(meta["task"], records, samples=settings.samples, mask_token=tokenizer.mask_token,
                                 text_column=text_column, label_column=label_column,
                                 source=f"file {eval_data}" if eval_data else "hfexport held-out corpus")
        files = manifest["files"]
        torch_model = load_torch_model(source).to(_reference_device(manifest["target"].get("device", "cpu")))
        common = {
            "reference_size": TorchModel(source.local_dir).size_bytes(), "settings": settings, "threads": n_threads,
            "gates_overrides": Gates(**manifest["recipe"]["gates"]).model_dump(),
            "model_info": {"id": meta["id"], "revision": meta.get("revision"), "task": meta["task"]},
            "target_info": _target_info(predictor), "versions": tool_versions(), "progress": progress,
        }
        bundle_stage = {"name": "bundle", "kind": "bundle",
                        "size": sum(files[name]["bytes"] for name in manifest["model_files"]),
                        "notes": [f"re-validated on this host from {bundle_path}",
                                  *_runtime_notes(_target_info(predictor))]}
        if meta["task"] == "text-generation":
            from hfexport.evaluation_generation import BundleGeneration, TorchGeneration, evaluate_generation

            report = evaluate_generation(
                reference=TorchGeneration(torch_model, predictor.eos_token_ids, predictor.pad_token_id),
                tokenizer=tokenizer, candidates=[{**bundle_stage, "runner": BundleGeneration(predictor)}],
                texts=eval_set.texts, text_source=eval_set.source,
                memory_paths={"pytorch": source.local_dir, "bundle": bundle_path}, **common)
        else:
            reference = TorchRunner(torch_model, tokenizer, meta["task"], meta, meta["max_length"],
                                    [i["name"] for i in manifest["signature"]["inputs"]])
            report = evaluate(reference=reference, meta=meta, eval_set=eval_set,
                              candidates=[{**bundle_stage, "runner": PredictorRunner(predictor, meta)}], **common)
    out = Path(report_dir) if report_dir else bundle_path.with_name(bundle_path.name + ".validation")
    _write_report(report, out)
    return report
