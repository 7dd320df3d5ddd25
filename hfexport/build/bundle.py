"""Bundle writing: staged in a temporary folder, moved into place in one step at the very end."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from hfexport._version import __version__
from hfexport.artifacts import Artifact
from hfexport.build.manifest import Manifest as ManifestModel
from hfexport.build.manifest import tool_versions
from hfexport.errors import OutputExistsError
from hfexport.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, file_table, parse_manifest

__all__ = ["check_output", "install", "stage_bundle", "tool_versions", "write_manifest"]

# Files copied from the tokenizer folder: JSON only, so a bundle never holds a pickle.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# Image tasks: the image processor's settings (runtime/image.py reads them), in processor/.
# Speech adds the CTC tokenizer's vocabulary (runtime/audio.py decodes with it).
PROCESSOR_FILES = ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")


def check_output(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise OutputExistsError(f"output {output} already exists (use --force to replace it)")
    if not output.parent.exists():
        output.parent.mkdir(parents=True)


def stage_bundle(staging: Path, artifact: Artifact, tokenizer_dir: Path, model_config_file: Path,
                 extra_files: dict[str, Path] | None = None) -> list[str]:
    """Copy the final model, tokenizer, model config and extra JSON files (e.g. generation_config.json)
    into the staging folder; return the model's files."""
    staging.mkdir(parents=True)
    files = artifact.bundle_files()
    for name, source in files.items():
        shutil.copyfile(source, staging / name)
    processor = (tokenizer_dir / PROCESSOR_FILES[0]).is_file()
    folder, names = ("processor", PROCESSOR_FILES) if processor else ("tokenizer", TOKENIZER_FILES)
    (staging / folder).mkdir()
    for name in names:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, staging / folder / name)
    text = tokenizer_dir / "tokenizer"  # a dual encoder (CLIP) reads text too: its tokenizer beside the processor
    if processor and (text / TOKENIZER_FILES[0]).is_file():
        (staging / "tokenizer").mkdir()
        for name in TOKENIZER_FILES:
            if (text / name).is_file():
                shutil.copyfile(text / name, staging / "tokenizer" / name)
    shutil.copyfile(model_config_file, staging / "config.json")
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, staging / name)
    return list(files)


def write_manifest(staging: Path, body: dict) -> Manifest:
    """Write manifest.json with the sha256 of every file now in the staging folder; return it as an app
    reads it back. The whole manifest is checked against the schema (build/manifest.py) first."""
    document = ManifestModel(format_version=FORMAT_VERSION, hfexport_version=__version__,
                             created=datetime.now(timezone.utc).isoformat(timespec="seconds"), **body,
                             files=file_table(staging))
    # NOTE: model_dump() then json.dumps(default=str), as format 1 was written: a stats value that is not
    # JSON (a numpy scalar, a Path) is written as its text instead of failing the build.
    text = json.dumps(document.model_dump(), indent=2, default=str) + "\n"
    (staging / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return parse_manifest(json.loads(text), source=str(staging / MANIFEST_NAME))


def install(staging: Path, output: Path, force: bool) -> None:
    """Move the finished bundle into place. An old bundle is replaced only once the new one is complete."""
    old = None
    if output.exists():
        if not force:
            raise OutputExistsError(f"output {output} already exists (use --force to replace it)")
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(output, old)
    os.rename(staging, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
