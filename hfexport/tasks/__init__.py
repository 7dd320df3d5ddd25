"""The task registry: one module per task in this package, found by file, and task inference.

`get_task(name)` returns the TaskSpec of a task (aliases accepted); `TASKS` maps every task name to
its spec. A task module defines `SPEC`; nothing here lists the tasks by hand.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

from hfexport.errors import ModelLoadError
from hfexport.tasks.base import Output, TaskSpec

__all__ = ["TASKS", "Output", "TaskSpec", "get_task", "infer_task_from_folder", "normalize_task"]

# Architectures of tasks hfexport does not build yet: named in the error instead of guessed as another task.
_UNSUPPORTED_SUFFIXES = {"ForConditionalGeneration": "text2text-generation"}


def _discover() -> dict[str, TaskSpec]:
    specs = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_") or module.name == "base":
            continue
        spec = importlib.import_module(f"{__name__}.{module.name}").SPEC
        specs[spec.name] = spec
    return dict(sorted(specs.items()))


TASKS: dict[str, TaskSpec] = _discover()


def normalize_task(task: str) -> str:
    """The canonical name of a task or one of its aliases; ModelLoadError naming the supported ones."""
    if task in TASKS:
        return task
    for spec in TASKS.values():
        if task in spec.aliases:
            return spec.name
    from hfexport._shipped import did_you_mean

    names = sorted({*TASKS, *(alias for spec in TASKS.values() for alias in spec.aliases)})
    raise ModelLoadError(f"unsupported task {task!r}{did_you_mean(task, names)} (supported: {', '.join(sorted(TASKS))})")


def get_task(task: str) -> TaskSpec:
    return TASKS[normalize_task(task)]


def infer_task_from_folder(folder: Path) -> str:
    """Infer the task from files in a local model folder (optimum cannot do this for local folders)."""
    if (folder / "modules.json").is_file():
        return "feature-extraction"  # a sentence-transformers model
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: cannot read the model config ({exc})") from exc
    endings = sorted([(suffix, spec.name) for spec in TASKS.values() for suffix in spec.architecture_suffixes]
                     + list(_UNSUPPORTED_SUFFIXES.items()), key=lambda pair: -len(pair[0]))
    for architecture in config.get("architectures") or []:
        for suffix, task in endings:
            if architecture.endswith(suffix):
                if task not in TASKS:
                    raise ModelLoadError(
                        f"{folder}: {architecture} is a {task} model, which hfexport does not build yet "
                        f"(supported: {', '.join(sorted(TASKS))}); pass --task to export it as another task"
                    )
                return task
    return "feature-extraction"
