"""Validation in one place: the build's and `hfexport validate`'s.

The PyTorch fp32 reference against each stage and the bundle, the bundle measured through
`hfexport.runtime.load` as a user's app runs it. Both entry points make the same typed candidates and
call one evaluator: the encoder one (hfexport/validation/encoder.py) or the generation one
(hfexport/validation/generation.py), as the task says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfexport._quiet import quiet_libraries
from hfexport.artifacts import Artifact, TorchModel
from hfexport.progress import Progress
from hfexport.report.schema import Report
from hfexport.tasks import TaskSpec, get_task
from hfexport.validation.evalset import EvalSet, make_eval_set

__all__ = ["Candidate", "Judging", "validate_build", "validate_bundle", "write_report"]

# NOTE: side by side in one process, ONNX Runtime sessions whose idle threads spin for the next call
# steal the 2 cores from whichever side is being timed; validation switches spinning off.
_NO_SPIN = {"allow_spinning": False}
# The runtime backend that reads each intermediate artifact format.
_READERS = {"onnx": "onnxruntime", "openvino": "openvino", "stablehlo": "xla"}


@dataclass
class Candidate:
    """One row measured against the reference: an intermediate stage or the bundle."""

    name: str
    kind: str  # the artifact kind, or "bundle"
    runner: Any  # encoder: PredictorRunner / TorchRunner; generation: BundleGeneration
    size_bytes: int
    pass_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Judging:
    """What every evaluation of one validation shares: settings, gates and what the report says it measured."""

    settings: Any  # recipes.Evaluation
    threads: int
    gates: dict  # the recipe's gate overrides (None = the task's default)
    reference_size: int
    model_info: dict
    target_info: dict
    versions: dict
    progress: Progress


_STAGES_UP_TO_BYTES = 2_000_000_000  # a larger model's intermediate stages are not evaluated (see validate_build)


def validate_build(ctx, staging: Path, stages, reference_size: int, eval_set: EvalSet, threads,
                   also_on: EvalSet | None = None) -> Report:
    """Validate a staged bundle and every stage before it (`stages`: (pass name, artifact, seconds)).

    `also_on`: other text whose bundle fidelity the report shows beside the gated set (not gated).
    """
    from hfexport.runtime import load

    spec = get_task(ctx.source.task)
    n_threads = _set_threads(threads or ctx.target.session.intra_op_threads)
    bundle = load(staging, threads=n_threads, session_overrides=_NO_SPIN)
    # NOTE: past 2 GB an intermediate stage is one more copy of the weights beside PyTorch's and the bundle's (a
    # 2.6 GB Llama's OpenVINO validation: 8.2 GB resident with its fp32 stage, docs/decisions/0183-models-past-2gb.md);
    # the export's own greedy check against PyTorch (its stats in the manifest) stands for it.
    big = reference_size > _STAGES_UP_TO_BYTES
    if big:
        ctx.progress.info(f"model of {reference_size / 1e9:.1f} GB: the bundle alone is evaluated, not the stages "
                          "before it (each would hold another copy of the weights)")
    candidates = [] if big else [
        c for name, artifact, seconds in stages[:-1]
        if (c := _stage_candidate(ctx, spec, staging, bundle, name, artifact, seconds, n_threads))]
    last_name, last_artifact, last_seconds = stages[-1]
    # What the backend actually chose (OpenVINO: device, inference precision, streams), which can differ
    # from what the profile asked for; the report says which one was measured.
    target_info = _target_info(bundle)
    runtime_notes = _runtime_notes(target_info)
    for note in runtime_notes:
        ctx.progress.info(note)
    candidates.append(Candidate("bundle", "bundle", _runner(spec, bundle), last_artifact.size_bytes(), last_seconds,
                                [f"output of {last_name}, loaded through hfexport.runtime.load", *runtime_notes]))
    judging = Judging(ctx.recipe.evaluation, n_threads, ctx.recipe.gates.model_dump(), reference_size,
                      _model_info(ctx.source.model_id, ctx.source.revision, spec.name), target_info, _versions(),
                      ctx.progress)
    model = ctx.torch_module(ctx.source.local_dir).to(_reference_device(ctx.target.device))
    report = _evaluate(spec, model, ctx.input_processor(), bundle, candidates, eval_set, judging,
                       memory_paths={"pytorch": ctx.source.local_dir, "bundle": staging})
    if not spec.generative and ctx.recipe.evaluation.memory:
        _measure_memory(report, ctx, staging, stages, eval_set, n_threads)
    if also_on is not None:
        ctx.progress.info(f"bundle fidelity on {also_on.source} too (reported, not gated)")
        report.other_fidelity[also_on.source] = _fidelity_on(spec, model, ctx.input_processor(), bundle,
                                                             candidates[-1], also_on, judging)
    return report


def validate_bundle(path: str | Path, *, eval_data: str | Path | None = None, text_column: str | None = None,
                    label_column: str | None = None, report_dir: str | Path | None = None,
                    threads: int | None = None, progress: Progress | None = None) -> Report:
    """Re-run validation of an existing bundle on this host; writes a fresh report outside the bundle."""
    import transformers  # noqa: F401 - the reference needs it: the base install stops here, the CLI names the extra

    from hfexport import data
    from hfexport.loading import DEFAULT_MODEL_ID, load_torch_model, resolve_model
    from hfexport.recipes import Evaluation, Gates
    from hfexport.runtime import load

    progress = progress or Progress()
    bundle_path = Path(path).expanduser().resolve()
    predictor = load(bundle_path, threads=threads)
    manifest = predictor.manifest
    meta = manifest.model
    spec = get_task(meta.task)
    images = getattr(spec, "modality", "text") != "text"  # images or audio: a processor, no tokenizer
    readers = {"image": data.read_image_records, "audio": data.read_audio_records}
    records = readers.get(spec.modality, data.read_records)(eval_data) if eval_data else None
    settings = Evaluation(**manifest.recipe.evaluation)
    # The packaged default model is found again through its package; anything else by id and revision.
    packaged = meta.id == DEFAULT_MODEL_ID and str(meta.revision or "").startswith("gt-")
    model_ref = None if packaged else meta.id
    revision = None if packaged or Path(str(model_ref)).exists() else meta.revision
    with quiet_libraries():
        source = resolve_model(model_ref, task=spec.name, revision=revision, log=progress.info)
        n_threads = _set_threads(threads or manifest.target.session.get("intra_op_threads"))
        tokenizer = _bundle_processor(bundle_path, images)
        eval_set = make_eval_set(spec.name, records, samples=settings.samples,
                                 mask_token=None if images else tokenizer.mask_token,
                                 text_column=text_column, label_column=label_column,
                                 source=f"file {eval_data}" if eval_data else "hfexport held-out corpus")
        target_info = _target_info(predictor)
        size = sum(manifest.files[name].bytes for name in manifest.model_files)
        bundle = Candidate("bundle", "bundle", _runner(spec, predictor), size,
                           notes=[f"re-validated on this host from {bundle_path}", *_runtime_notes(target_info)])
        judging = Judging(settings, n_threads, Gates(**manifest.recipe.gates).model_dump(),
                          TorchModel(source.local_dir).size_bytes(),
                          _model_info(meta.id, meta.revision, spec.name), target_info, _versions(),
                          progress)
        model = load_torch_model(source).to(_reference_device(manifest.target.device))
        report = _evaluate(spec, model, tokenizer, predictor, [bundle], eval_set, judging,
                           memory_paths={"pytorch": source.local_dir, "bundle": bundle_path})
    write_report(report, Path(report_dir) if report_dir else bundle_path.with_name(bundle_path.name + ".validation"))
    return report


def _bundle_processor(bundle: Path, images: bool):
    """The transformers tokenizer or image processor a bundle ships, for the PyTorch reference."""
    if images:
        from transformers import AutoFeatureExtractor, AutoImageProcessor

        settings = bundle / "processor" / "preprocessor_config.json"
        if (bundle / "processor" / "vocab.json").is_file() or (  # speech (CTC, Whisper): the feature extractor
                settings.is_file() and "feature_extractor_type" in settings.read_text(encoding="utf-8")):
            return AutoFeatureExtractor.from_pretrained(str(bundle / "processor"))
        return AutoImageProcessor.from_pretrained(str(bundle / "processor"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bundle / "tokenizer"))


def write_report(report: Report, folder: Path) -> None:
    from hfexport.report.html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")


# -- the one evaluation both entry points run ----------------------------------------------------------


def _evaluate(spec: TaskSpec, model, tokenizer, bundle, candidates: list[Candidate], eval_set: EvalSet,
              judging: Judging, memory_paths: dict[str, Path]) -> Report:
    """The reference (PyTorch fp32 `model`) against the candidates, by the task's evaluator."""
    if spec.generative and not hasattr(spec, "reference_runner"):  # Whisper: compared clip by clip, as encoders
        from hfexport.validation.generation import TorchGeneration, evaluate_generation

        return evaluate_generation(TorchGeneration(model, bundle.eos_token_ids, bundle.pad_token_id), tokenizer,
                                   candidates, eval_set, judging, memory_paths)
    from hfexport.validation.encoder import evaluate

    reference = _reference_runner(spec, model, tokenizer, bundle)
    return evaluate(reference, candidates, eval_set, judging, bundle.manifest.model)


def _fidelity_on(spec: TaskSpec, model, tokenizer, bundle, candidate: Candidate, eval_set: EvalSet,
                 judging: Judging) -> dict[str, float]:
    """The candidate's fidelity to the reference on other text (no timing)."""
    if spec.generative and not hasattr(spec, "reference_runner"):
        from hfexport.validation.generation import TorchGeneration, teacher_forced_fidelity

        reference = TorchGeneration(model, bundle.eos_token_ids, bundle.pad_token_id)
        return teacher_forced_fidelity(reference, candidate.runner, tokenizer, eval_set.texts, judging.settings)
    from hfexport.tasks._labelled import batched

    batch = judging.settings.batch_size
    reference = _reference_runner(spec, model, tokenizer, bundle)
    return spec.fidelity(batched(reference, eval_set.inputs, batch),
                         batched(candidate.runner.comparable, eval_set.inputs, batch))


def _reference_runner(spec: TaskSpec, model, tokenizer, bundle):
    """PyTorch fp32 behind the task's own preprocessing (`tokenizer`: the image processor for image tasks)."""
    from hfexport.validation.encoder import ImageTorchRunner, TorchRunner

    manifest = bundle.manifest
    if hasattr(spec, "reference_runner"):  # a dual encoder: both towers, its tokenizer beside the image processor
        return spec.reference_runner(model, tokenizer, bundle)
    if getattr(spec, "modality", "text") == "audio":
        from hfexport.validation.audio import AudioTorchRunner

        return AudioTorchRunner(model, tokenizer, spec.name, manifest.model, bundle.encoder.vocabulary)
    if getattr(spec, "modality", "text") == "image":
        return ImageTorchRunner(model, tokenizer, spec.name, manifest.model)
    return TorchRunner(model, tokenizer, spec.name, manifest.model, manifest.model.max_length,
                       [i.name for i in manifest.signature.inputs])


def _runner(spec: TaskSpec, predictor):
    """How validation drives a loaded bundle (or stage) for the task."""
    if spec.generative and not hasattr(spec, "bundle_runner"):
        from hfexport.validation.generation import BundleGeneration

        return BundleGeneration(predictor)
    if hasattr(spec, "bundle_runner"):  # a dual encoder: its two graphs through the runtime's embed and score
        return spec.bundle_runner(predictor)
    from hfexport.validation.encoder import PredictorRunner

    return PredictorRunner(predictor, predictor.manifest.model)


def _stage_candidate(ctx, spec: TaskSpec, staging: Path, bundle, name: str, artifact: Artifact, seconds: float,
                     threads: int) -> Candidate | None:
    """An intermediate stage as a candidate: a torch checkpoint in PyTorch, a graph through the runtime."""
    from hfexport.runtime.loader import Predictor, open_encoder, open_model

    manifest = bundle.manifest
    if artifact.kind == "torch":
        if spec.generative:  # a pruned checkpoint has no generation loop to measure here
            return None
        module = ctx.torch_module(artifact.path).to(_reference_device(ctx.target.device))
        runner = _reference_runner(spec, module, ctx.input_processor(), bundle)
    else:
        model = open_model(artifact.path, manifest, threads=threads, backend=_stage_backend(ctx, artifact),
                           session_overrides=_NO_SPIN)
        if spec.generative and not hasattr(spec, "stage_predictor"):
            from hfexport.validation.generation import stage_generator

            stage = stage_generator(manifest, staging, model, artifact)
        elif hasattr(spec, "stage_predictor"):  # a dual encoder's two graphs
            stage = spec.stage_predictor(manifest, staging, model, artifact)
        else:
            stage = Predictor(manifest, open_encoder(staging, manifest), model)
        runner = _runner(spec, stage)
    return Candidate(name, artifact.kind, runner, artifact.size_bytes(), seconds)


def _stage_backend(ctx, artifact: Artifact) -> str:
    """An intermediate graph runs on the target's backend when it is in the target's format, and on the
    runtime that reads its format otherwise (an ONNX stage before an OpenVINO conversion)."""
    return ctx.target.backend if artifact.kind == ctx.target.artifact else _READERS[artifact.kind]


def _set_threads(asked: int | None) -> int:
    import torch

    from hfexport import host

    threads = asked or host.physical_cores()
    torch.set_num_threads(threads)
    return threads


def _reference_device(target_device: str) -> str:
    """Where PyTorch runs as the baseline: on the GPU for a GPU target when the host has one, so the speed
    ratios compare like with like; on the CPU otherwise (also undoing a distill pass that trained there)."""
    import torch

    return "cuda" if target_device == "cuda" and torch.cuda.is_available() else "cpu"


def _model_info(model_id: str, revision: str | None, task: str) -> dict:
    return {"id": model_id, "revision": revision, "task": task}


def _versions() -> dict:
    from hfexport.build.bundle import tool_versions

    return tool_versions()


def _target_info(predictor) -> dict:
    """The manifest's target, plus what the backend actually chose (OpenVINO: device, inference
    precision, streams), which can differ from what the profile asked for."""
    target = predictor.manifest.target
    info = {k: getattr(target, k) for k in ("name", "backend", "isa", "precision", "execution_providers")}
    runtime = dict(getattr(predictor.backend, "effective", None) or {})
    if runtime:
        info["runtime"] = runtime
    return info


def _runtime_notes(target_info: dict) -> list[str]:
    runtime = target_info.get("runtime") or {}
    if "asked_for" in runtime:  # an ONNX Runtime bundle checked where its first provider is missing
        return [f"ran on {runtime['execution_providers']}: this host lacks {runtime['asked_for'].split(', ')[0]}. "
                f"Fidelity is the bundle graph's; speed and memory are this host's, not the target's"]
    notes = ["runtime: " + ", ".join(f"{k} {v}" for k, v in runtime.items() if v is not None)] if runtime else []
    if runtime.get("asked_precision") == "auto" and runtime.get("inference_precision") == "f32":
        notes.append("inference_precision auto computed f32 on this CPU (no native bf16): on a CPU with bf16 the "
                     "bundle computes bf16, which this validation did not measure")
    return notes


def _measure_memory(report: Report, ctx, staging: Path, stages, eval_set: EvalSet, threads: int) -> None:
    """Peak RSS of a fresh process per stage, running one evaluation batch."""
    from hfexport.validation.memory import peak_rss_mb

    ctx.progress.info("peak memory: one fresh process per stage")
    inputs = eval_set.inputs[: ctx.recipe.evaluation.batch_size]
    scratch, auto_class = ctx.workdir, get_task(ctx.source.task).auto_class
    by_name = {stage.name: stage for stage in report.stages}
    by_name["pytorch"].peak_rss_mb = peak_rss_mb("torch", ctx.source.local_dir, inputs, threads, scratch,
                                                 auto_class, str(ctx.tokenizer_dir))
    for name, artifact, _ in stages[:-1]:
        if name not in by_name:
            continue
        if artifact.kind == "torch":
            args = ("torch", artifact.path, inputs, threads, scratch, auto_class, str(ctx.tokenizer_dir))
        else:
            args = ("stage", artifact.path, inputs, threads, scratch, str(staging), _stage_backend(ctx, artifact))
        by_name[name].peak_rss_mb = peak_rss_mb(*args)
    by_name["bundle"].peak_rss_mb = peak_rss_mb("bundle", staging, inputs, threads, scratch)
