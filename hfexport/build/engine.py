"""The build: load, plan, run the passes, stage the bundle, validate it, install it atomically."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hfexport._quiet import disable_telemetry
from hfexport.artifacts import Artifact, TorchModel
from hfexport.build.cache import StageCache
from hfexport.build.runner import PassRunner
from hfexport.errors import ModelLoadError, first_line
from hfexport.progress import Progress
from hfexport.report.schema import Report
from hfexport.runtime.manifest import Manifest
from hfexport.tasks import get_task
from hfexport.validation.evalset import make_eval_set


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    manifest: Manifest  # typed, as an app reads it back (hfexport.runtime.manifest)
    report: Report


def run_build(model, *, target, recipe=None, output="hfexport-bundle", task=None, revision=None,
              trust_remote_code=False, calibration_data=None, eval_data=None, train_data=None, text_column=None,
              label_column=None, gates=True, force=False, threads=None, progress: Progress | None = None,
              cache: bool = True, sign_with=None, validation: str | None = None) -> BuildResult:
    from hfexport import data
    from hfexport.build import bundle as bundles
    from hfexport.build.manifest import manifest_body
    from hfexport.context import BuildContext, PlanContext
    from hfexport.loading import resolve_model
    from hfexport.plan import make_plan
    from hfexport.profiles import load_target
    from hfexport.recipes import load_recipe, with_validation
    from hfexport.validation import validate_build, write_report

    disable_telemetry()  # OpenVINO's and NNCF's usage telemetry: a build never phones home
    progress = progress or Progress()
    output = Path(output).expanduser().resolve()
    # Every check that needs no heavy work runs before any: a bad argument fails in a second.
    profile = load_target(target)
    chosen = load_recipe(recipe) if recipe else None
    stage_cache = StageCache.from_env() if cache else None
    bundles.check_output(output, force)
    signer = None  # the name the bundle will be signed as, checked before any work
    if sign_with is not None:
        from hfexport.runtime.signing import check_private_key

        signer = check_private_key(sign_with)
    source = resolve_model(model, task=task, revision=revision, trust_remote_code=trust_remote_code,
                           log=progress.info)
    modality = getattr(get_task(source.task), "modality", "text")
    images = modality != "text"  # images or audio: a processor, no tokenizer
    if modality == "audio":  # speech: folders of .wav files, or the generated clips
        calibration = ([str(p) for p in data.audio_files(calibration_data)] if calibration_data
                       else data.default_calibration_audio())
        records = data.read_audio_records(eval_data) if eval_data else None
    elif images:  # image tasks: folders of image files, or the generated images
        calibration = (data.read_image_refs(calibration_data) if calibration_data
                       else data.default_calibration_images())
        records = data.read_image_records(eval_data) if eval_data else None
    else:
        calibration = (data.read_texts(calibration_data, text_column=text_column) if calibration_data
                       else data.default_calibration_texts())
        records = data.read_records(eval_data) if eval_data else None
    train_texts = data.read_texts(train_data, text_column=text_column) if train_data else None
    # The target's default recipe can depend on the task (an LLM needs a KV-cache export).
    chosen = with_validation(chosen or load_recipe(profile.recipe_for(source.task)), validation)  # --validation
    plan = make_plan(PlanContext(profile, chosen, source, has_calibration_data=bool(calibration)))
    progress.info(f"{source.model_id} ({source.task}) -> {profile.name} [{profile.effective_isa()}]: {plan.describe()}")
    for note in plan.notes:  # deprecated names, steps this target leaves out
        progress.info(note)
    # A recipe that trains on --train-data, with no --eval-data, is judged on the user's domain: a split of
    # that text it never trains on, with the shipped everyday-English set reported beside it.
    domain: list[str] = []
    if train_texts and records is None and any(step.trains for step in plan.steps):
        domain, train_texts = data.split_held_out(train_texts, chosen.evaluation.samples)
        if domain:
            progress.info(f"gates judged on {len(domain)} texts held out of --train-data (never trained on)")

    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
    try:
        prepare = getattr(get_task(source.task), "prepare_processor", _prepare_processor)  # audio has its own
        if images:
            tokenizer_dir, facts = prepare(source, workdir / "processor"), None
        else:  # reused from the stage cache when the model's files are the same: no transformers import
            tokenizer_dir, facts = _cached_tokenizer(source, workdir / "tokenizer", stage_cache)
        ctx = BuildContext(profile, chosen, source, workdir, tokenizer_dir, calibration, progress, train_texts)
        mask_token = None if images else facts.mask_token
        samples = chosen.evaluation.samples
        shipped = make_eval_set(source.task, None, samples=samples, mask_token=mask_token)
        if domain:
            eval_set = make_eval_set(source.task, [{"text": t} for t in domain], samples=samples,
                                     mask_token=mask_token, source=f"held-out split of --train-data {train_data} "
                                     f"({len(domain)} texts, never trained on)")
        elif records is not None:
            eval_set = make_eval_set(source.task, records, samples=samples, mask_token=mask_token,
                                     text_column=text_column, label_column=label_column, source=f"file {eval_data}")
        else:
            eval_set = shipped
        source_model = TorchModel(source.local_dir)
        reference_size = source_model.size_bytes()
        ran = PassRunner(plan.steps, ctx, stage_cache).run(source_model)
        artifact: Artifact = ran[-1].artifact
        pass_records = [stage.record for stage in ran]
        stages = [(stage.name, stage.artifact, stage.seconds) for stage in ran]

        staging = workdir / "bundle"
        extra = {"generation_config.json": _generation_config(source, workdir)} if get_task(source.task).generative else {}
        model_files = bundles.stage_bundle(staging, artifact, tokenizer_dir, source.local_dir / "config.json",
                                           extra)
        precision = next((r["params"]["precision"] for r in reversed(pass_records)
                          if r["name"] in ("quantize", "export") and r["params"].get("precision")), "fp32")
        body = manifest_body(source, profile, chosen, pass_records, artifact, model_files,
                             facts or ctx.input_processor(), precision)
        bundles.write_manifest(staging, body)

        progress.start("validate", "validate against PyTorch fp32")
        report = validate_build(ctx, staging, stages, reference_size, eval_set, threads,
                                also_on=shipped if domain else None)
        progress.done("validate", _summary_line(report))
        # What the report cannot measure but the build knows: compile-only checks, and who signs the bundle (the
        # signature covers the report, so the signer is named before signing).
        report.compile_checks = {name: value for record in pass_records for name, value in record["stats"].items()
                                 if name.endswith("compile_check") and isinstance(value, dict)}
        report.signed_by = signer
        write_report(report, staging / "report")
        body["validation"] = {"passed": report.passed, "summary": report.summary,
                              "gates": [g.model_dump() for g in report.gates], "report": "report/report.json",
                              "timing_warnings": report.timing_warnings}
        manifest = bundles.write_manifest(staging, body)

        if gates and not report.passed:
            from hfexport.validation.metrics import gate_failure

            kept = output.with_name(output.name + ".failed-report")
            shutil.rmtree(kept, ignore_errors=True)
            shutil.move(str(staging / "report"), kept)
            raise gate_failure(report.gates, kept)
        if sign_with is not None:
            from hfexport.runtime.signing import sign_bundle

            progress.info(f"signed by {sign_bundle(staging, sign_with).signer} ({staging.name}/model.sig)")
        bundles.install(staging, output, force)
        return BuildResult(output, manifest, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if stage_cache is not None:
            stage_cache.evict()  # after the build: its validation still reads the stages it used


def _generation_config(source, workdir: Path) -> Path:
    """The model's generation config as JSON (EOS ids, sampling defaults) for the runtime's generation loop."""
    import json

    from transformers import GenerationConfig, PretrainedConfig

    try:
        config = GenerationConfig.from_pretrained(str(source.local_dir))
    except OSError:  # no generation_config.json: derive it from config.json, as transformers does
        config = GenerationConfig.from_model_config(PretrainedConfig.from_dict(source.config))
    path = workdir / "generation_config.json"
    written = json.loads(config.to_json_string(use_diff=True))
    shipped = source.local_dir / "generation_config.json"
    if shipped.is_file():  # keys GenerationConfig drops on load (Whisper's lang_to_id, task_to_id, no_timestamps_token_id)
        kept = json.loads(shipped.read_text(encoding="utf-8"))
        written.update({k: v for k, v in (kept if isinstance(kept, dict) else {}).items() if k not in written
                        and not hasattr(config, k)})
    path.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class TokenizerFacts:
    """What the build reads from the transformers tokenizer besides its files (the manifest's tokenizer and
    mask fields), kept with the files in the stage cache so a rebuild needs neither transformers nor torch
    until validation."""

    pad_token: str | None = None
    pad_token_id: int | None = None
    padding_side: str = "right"
    mask_token: str | None = None
    mask_token_id: int | None = None


def _cached_tokenizer(source, folder: Path, cache: StageCache | None) -> tuple[Path, TokenizerFacts]:
    import time

    key = cache.preprocessing_key(source) if cache is not None else None
    hit = cache.lookup_folder(key) if key else None
    if hit:
        shutil.copytree(hit[0], folder)
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # cache entries are read-only; this copy is the build's
        return folder, TokenizerFacts(**hit[1])
    started = time.perf_counter()
    tokenizer = _save_tokenizer(source, folder)
    facts = TokenizerFacts(**{name: getattr(tokenizer, name, None) for name in TokenizerFacts.__dataclass_fields__})
    if key and cache.writable:
        try:
            cache.store_folder(key, "tokenizer", folder, dataclasses.asdict(facts), time.perf_counter() - started)
        except OSError:
            pass  # the cache only saves time
    return folder, facts


def _prepare_tokenizer(source, folder: Path) -> Path:
    """Save the model's fast tokenizer as tokenizer.json, which the torch-free runtime reads; return the folder."""
    _save_tokenizer(source, folder)
    return folder


def _save_tokenizer(source, folder: Path):
    """_prepare_tokenizer's work; returns the transformers tokenizer it saved."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.local_dir), trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source.model_id}: {first_line(exc)}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{source.model_id} has no fast tokenizer; the runtime needs tokenizer.json")
    tokenizer.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{source.model_id}: the tokenizer did not produce tokenizer.json")
    return tokenizer


def _prepare_processor(source, folder: Path) -> Path:
    """Save the model's image processor as preprocessor_config.json with every setting written out, and check
    that the torch-free runtime preprocesses sample images exactly as transformers does."""
    import json

    import numpy as np
    from transformers import AutoImageProcessor

    from hfexport._quiet import quiet_libraries
    from hfexport.data import synthetic_image
    from hfexport.runtime.image import ImageEncoder, explicit_config

    try:
        with quiet_libraries():  # "requires torchvision ... falling back to the PIL backend"
            processor = AutoImageProcessor.from_pretrained(str(source.local_dir),
                                                           trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the image processor of {source.model_id} "
                             f"({first_line(exc)}); the folder needs a preprocessor_config.json") from exc
    folder.mkdir(parents=True)
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps(explicit_config(processor), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    try:
        encoder = ImageEncoder(path)
    except ValueError as exc:
        raise ModelLoadError(f"{source.model_id}: {exc}") from None
    images = [synthetic_image(index) for index in range(4)]
    want = processor(images=images, return_tensors="np")["pixel_values"]
    got = encoder.encode(images).pixel_values
    worst = float(np.abs(want - got).max()) if want.shape == got.shape else float("inf")
    if worst > 1e-4:
        raise ModelLoadError(f"{source.model_id}: the runtime's image preprocessing differs from "
                             f"{type(processor).__name__} by {worst:.2e}; this processor is not supported yet")
    return folder


def _summary_line(report: Report) -> str:
    s = report.summary
    fid = ", ".join(f"{k} {v:.4f}" for k, v in report.stages[-1].fidelity.items())
    verdict = "gates passed" if report.passed else "GATES FAILED"
    return f"{report.speed_phrase()}, {s['size_ratio']:.2f}x size, {fid}; {verdict}"


