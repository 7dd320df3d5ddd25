"""Validation in one place: the build's and `hfexport validate`'s, the PyTorch fp32 reference against each
stage and the bundle, measured through `hfexport.runtime.load` as a user's app runs it."""

from __future__ import annotations

from pathlib import Path

from hfexport._quiet import quiet_libraries
from hfexport.artifacts import Artifact, TorchModel
from hfexport.progress import Progress
from hfexport.report.schema import Report
from hfexport.tasks import TASKS
from hfexport.validation.evalset import make_eval_set


def validate_build(ctx, staging: Path, stages, reference_size: int, eval_set, threads) -> Report:
    import torch

    from hfexport import host
    from hfexport.build.bundle import tool_versions
    from hfexport.runtime import load
    from hfexport.runtime.loader import Predictor, open_encoder, open_model
    from hfexport.validation.encoder import PredictorRunner, TorchRunner, evaluate

    n_threads = threads or ctx.target.session.intra_op_threads or host.physical_cores()
    torch.set_num_threads(n_threads)
    if TASKS[ctx.source.task].generative:
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
    from hfexport.tasks import TASKS
    from hfexport.validation.memory import peak_rss_mb

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
    from hfexport.build.bundle import tool_versions
    from hfexport.runtime import load
    from hfexport.runtime.generation import TextGenerator
    from hfexport.runtime.loader import open_model
    from hfexport.validation.generation import BundleGeneration, TorchGeneration, evaluate_generation

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


def write_report(report: Report, folder: Path) -> None:
    from hfexport.report.html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")


def validate_bundle(path: str | Path, *, eval_data: str | Path | None = None, text_column: str | None = None,
                    label_column: str | None = None, report_dir: str | Path | None = None,
                    threads: int | None = None, progress: Progress | None = None) -> Report:
    """Re-run validation of an existing bundle on this host; writes a fresh report outside the bundle."""
    from transformers import AutoTokenizer

    from hfexport import data, host
    from hfexport.build.bundle import tool_versions
    from hfexport.loading import DEFAULT_MODEL_ID, load_torch_model, resolve_model
    from hfexport.recipes import Evaluation, Gates
    from hfexport.runtime import load
    from hfexport.validation.encoder import PredictorRunner, TorchRunner, evaluate

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
        if TASKS[meta["task"]].generative:
            from hfexport.validation.generation import BundleGeneration, TorchGeneration, evaluate_generation

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
    write_report(report, out)
    return report
