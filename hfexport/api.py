"""The Python API. Everything the CLI does is one call here."""

from __future__ import annotations

from pathlib import Path

from hfexport._quiet import quiet_libraries
from hfexport.build.engine import BuildResult
from hfexport.errors import BundleIntegrityError
from hfexport.progress import Progress
from hfexport.report.schema import Report

__all__ = ["BuildResult", "build", "inspect_bundle", "validate_bundle"]


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
    cache: bool = True,
    sign_with: str | Path | None = None,
    validation: str | None = None,
) -> BuildResult:
    """Build a bundle for `target` from a hub id or local folder (default: all-MiniLM-L6-v2).

    `cache=False` neither reuses nor stores finished stages (the stage cache: $HFEXPORT_CACHE_DIR, else
    ~/.cache/hfexport; bounded by $HFEXPORT_CACHE_SIZE, default 20GB). `sign_with` (a PEM private key)
    signs the bundle with model-signing before it is installed (hfexport[sign]). `validation="quick"`
    validates with fewer texts and runs and no memory measurement (the gates still apply; the report and
    manifest say so, and give no speed ratio); None or "full" validates as the recipe says."""
    from hfexport.build.engine import run_build
    from hfexport.errors import ConfigError
    from hfexport.recipes import VALIDATION_MODES

    if validation is not None and validation not in VALIDATION_MODES:
        raise ConfigError(f"validation={validation!r}: choose one of {', '.join(VALIDATION_MODES)}")

    if recipe == "auto":  # build the target's candidates, install the fastest that passes (hfexport/search.py)
        from hfexport.search import auto_build

        if not gates:
            raise ConfigError("--recipe auto keeps only candidates that pass the gates: drop --no-gates")
        if train_data is not None:
            raise ConfigError("--recipe auto searches recipes that need no training: drop --train-data, or name "
                              "a distillation recipe with --recipe")
        with quiet_libraries(not verbose):
            return auto_build(model, target=target, output=output, task=task, force=force, sign_with=sign_with,
                              progress=progress or Progress(), revision=revision,
                              trust_remote_code=trust_remote_code, calibration_data=calibration_data,
                              eval_data=eval_data, text_column=text_column, label_column=label_column,
                              threads=threads, cache=cache, validation=validation)
    with quiet_libraries(not verbose):
        return run_build(model, target=target, recipe=recipe, output=output, task=task, revision=revision,
                         trust_remote_code=trust_remote_code, calibration_data=calibration_data,
                         eval_data=eval_data, train_data=train_data, text_column=text_column,
                         label_column=label_column, gates=gates, force=force, threads=threads,
                         progress=progress or Progress(), cache=cache, sign_with=sign_with,
                         validation=validation)


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
    from hfexport.runtime.signing import signature_info

    return {"path": str(bundle), "manifest": manifest, "checksums": integrity, "signature": signature_info(bundle),
            "notes": _bundle_notes(manifest)}


def _bundle_notes(manifest) -> list[str]:
    """What the bundle's backend wants its owner to know (an XLA module nearing jax's compatibility window)."""
    if manifest.target.backend != "xla":
        return []
    from hfexport.runtime.backends.xla import reexport_note

    note = reexport_note(manifest)
    return [note] if note else []



def validate_bundle(path: str | Path, *, eval_data: str | Path | None = None, text_column: str | None = None,
                    label_column: str | None = None, report_dir: str | Path | None = None,
                    threads: int | None = None, progress: Progress | None = None) -> Report:
    """Re-run validation of an existing bundle on this host; writes a fresh report outside the bundle."""
    from hfexport.validation import validate_bundle as run

    return run(path, eval_data=eval_data, text_column=text_column, label_column=label_column,
               report_dir=report_dir, threads=threads, progress=progress)
