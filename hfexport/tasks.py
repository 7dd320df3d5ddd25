"""The tasks hfexport builds, what each exports, and how a task is inferred from a model folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hfexport.errors import ModelLoadError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    auto_class: str  # transformers Auto class that loads the model for this task
    outputs: tuple[str, ...]  # graph outputs, in order
    pair_input: bool = False  # question answering feeds (question, context)
    generative: bool = False  # exported with a KV cache and run by the runtime's generation loop


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("feature-extraction", "AutoModel", ("last_hidden_state",)),
        TaskSpec("text-classification", "AutoModelForSequenceClassification", ("logits",)),
        TaskSpec("token-classification", "AutoModelForTokenClassification", ("logits",)),
        TaskSpec("question-answering", "AutoModelForQuestionAnswering", ("start_logits", "end_logits"), True),
        TaskSpec("fill-mask", "AutoModelForMaskedLM", ("logits",)),
        # Outputs past the logits are the KV cache (`present.<layer>.key/value`), named per model at export.
        TaskSpec("text-generation", "AutoModelForCausalLM", ("logits",), generative=True),
    )
}

ALIASES = {
    "sentence-similarity": "feature-extraction",
    "default": "feature-extraction",
    "sequence-classification": "text-classification",
    "ner": "token-classification",
    "masked-lm": "fill-mask",
    "causal-lm": "text-generation",
}

# Architecture class-name endings -> task. Order matters: the longest ending is tried first.
_ARCHITECTURE_SUFFIXES = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),  # GPT-2 and its relatives predate the ForCausalLM name
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForPreTraining", "fill-mask"),
    ("Model", "feature-extraction"),
)


def normalize_task(task: str) -> str:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        supported = ", ".join(sorted(TASKS))
        raise ModelLoadError(f"unsupported task {task!r} (supported: {supported})")
    return name


def infer_task_from_folder(folder: Path) -> str:
    """Infer the task from files in a local model folder (optimum cannot do this for local folders)."""
    if (folder / "modules.json").is_file():
        return "feature-extraction"  # a sentence-transformers model
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: cannot read the model config ({exc})") from exc
    for architecture in config.get("architectures") or []:
        for suffix, task in _ARCHITECTURE_SUFFIXES:
            if architecture.endswith(suffix):
                if task not in TASKS:
                    raise ModelLoadError(
                        f"{folder}: {architecture} is a {task} model, which hfexport does not build yet "
                        f"(supported: {', '.join(sorted(TASKS))}); pass --task to export it as another task"
                    )
                return task
    return "feature-extraction"
