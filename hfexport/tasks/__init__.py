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

__all__ = ["TASKS", "Output", "TaskSpec", "check_task_fits", "get_task", "infer_task_from_folder", "normalize_task",
           "specialise"]

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


def specialise(task: str, config: dict) -> str:
    """The task a model builds as when a user names `task`: a spec that is a `variant_of` it and `matches` the
    model's config (Whisper under automatic-speech-recognition, which is CTC otherwise), else `task` itself."""
    for spec in TASKS.values():
        if getattr(spec, "variant_of", None) == task and spec.matches(config):
            return spec.name
    return task


def get_task(task: str) -> TaskSpec:
    return TASKS[normalize_task(task)]


# transformers' auto mappings (model_type -> class names), most specific first, and what a class found in one
# is: the hfexport task (built or not yet) and the modality the refusal names. A class sits in several
# mappings (GPT2LMHeadModel: causal LM and pretraining): the first row that holds it wins.
_AUTO_TASKS = (
    ("ZERO_SHOT_IMAGE_CLASSIFICATION", "zero-shot-image-classification", "a CLIP-style image-text dual encoder"),
    ("IMAGE_TEXT_TO_TEXT", "image-text-to-text", "a vision-language model"),
    ("SPEECH_SEQ_2_SEQ", "speech-seq2seq", "a speech model"),  # Whisper: automatic-speech-recognition-seq2seq
    ("CTC", "automatic-speech-recognition", "a speech model"),
    ("AUDIO_CLASSIFICATION", "audio-classification", "an audio model"),
    ("AUDIO_FRAME_CLASSIFICATION", "audio-frame-classification", "an audio model"),
    ("AUDIO_XVECTOR", "audio-xvector", "an audio model"),
    ("TEXT_TO_WAVEFORM", "text-to-audio", "a speech synthesis model"),
    ("TEXT_TO_SPECTROGRAM", "text-to-audio", "a speech synthesis model"),
    ("IMAGE_CLASSIFICATION", "image-classification", "a vision model"),
    ("OBJECT_DETECTION", "object-detection", "a vision model"),
    ("ZERO_SHOT_OBJECT_DETECTION", "zero-shot-object-detection", "a vision model"),
    ("SEMANTIC_SEGMENTATION", "image-segmentation", "a vision model"),
    ("INSTANCE_SEGMENTATION", "image-segmentation", "a vision model"),
    ("UNIVERSAL_SEGMENTATION", "image-segmentation", "a vision model"),
    ("IMAGE_SEGMENTATION", "image-segmentation", "a vision model"),
    ("DEPTH_ESTIMATION", "depth-estimation", "a vision model"),
    ("MASKED_IMAGE_MODELING", "masked-image-modeling", "a vision model"),
    ("VIDEO_CLASSIFICATION", "video-classification", "a video model"),
    ("SEQ_TO_SEQ_CAUSAL_LM", "text2text-generation", "a text encoder-decoder model"),
    ("CAUSAL_LM", "text-generation", "a text decoder"),
    ("MASKED_LM", "fill-mask", "a text encoder"),
    ("SEQUENCE_CLASSIFICATION", "text-classification", "a text encoder"),
    ("TOKEN_CLASSIFICATION", "token-classification", "a text encoder"),
    ("QUESTION_ANSWERING", "question-answering", "a text encoder"),
    ("MULTIPLE_CHOICE", "multiple-choice", "a text encoder"),
    ("NEXT_SENTENCE_PREDICTION", "next-sentence-prediction", "a text encoder"),
    ("TEXT_ENCODING", "feature-extraction", "a text encoder"),
    ("IMAGE", "image-feature-extraction", "a vision model"),
)
# Base models (MODEL_MAPPING) have no head: they map by what their model_type is elsewhere.
_SPEECH = ("SPEECH_SEQ_2_SEQ", "CTC", "AUDIO_CLASSIFICATION", "AUDIO_FRAME_CLASSIFICATION", "AUDIO_XVECTOR")
_VISION = ("IMAGE", "IMAGE_CLASSIFICATION", "OBJECT_DETECTION", "SEMANTIC_SEGMENTATION", "DEPTH_ESTIMATION")
_ENCODER_DECODER = ("SEQ_TO_SEQ_CAUSAL_LM", "SPEECH_SEQ_2_SEQ")


def _mapping(name: str) -> dict:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, f"MODEL_FOR_{name}_MAPPING_NAMES", None) or {}


def _classes(mapping: dict) -> set[str]:
    return {c for value in mapping.values() for c in (value if isinstance(value, tuple | list) else (value,))}


def _built(task: str, mapping: str | None = None) -> str | None:
    """The canonical name of `task` when hfexport builds it, or of the built task whose Auto class serves
    `mapping` (so a task module that lands under another name is picked up); None when neither exists."""
    if task in TASKS:
        return task
    for spec in TASKS.values():
        if task in spec.aliases:
            return spec.name
    if mapping is None:
        return None
    from transformers.models.auto import modeling_auto

    for spec in TASKS.values():
        auto = getattr(modeling_auto, spec.auto_class, None) if spec.auto_class != "AutoModel" else None
        if auto is not None and getattr(auto._model_mapping, "_model_mapping", None) is _mapping(mapping):
            return spec.name
    return None


def _not_built(folder: Path, architecture: str, task: str, modality: str, hint: str = "") -> ModelLoadError:
    return ModelLoadError(f"{folder}: {architecture} is {modality} ({task}), not built yet by hfexport "
                          f"(supported tasks: {', '.join(sorted(TASKS))}){hint}")


def _infer_from_class(folder: Path, architecture: str, model_type: str) -> str | None:
    """The task of a transformers class, from the auto mappings; None when transformers does not know it."""
    for mapping, task, modality in _AUTO_TASKS:
        if architecture in _classes(_mapping(mapping)):
            built = _built(task, mapping)
            if built:
                return built
            hint = ("; --task feature-extraction exports its encoder's hidden states"
                    if task == "text2text-generation" else "")
            raise _not_built(folder, architecture, task, modality, hint)
    if architecture in _classes(_mapping("PRETRAINING")):  # BertForPreTraining: its model type's LM head
        for mapping, task in (("MASKED_LM", "fill-mask"), ("CAUSAL_LM", "text-generation"),
                              ("SEQ_TO_SEQ_CAUSAL_LM", "text2text-generation")):
            if model_type in _mapping(mapping):
                return _built(task, mapping) or _infer_from_class(folder, _mapping(mapping)[model_type], model_type)
    from transformers.models.auto import modeling_auto

    if architecture not in _classes(modeling_auto.MODEL_MAPPING_NAMES):
        return None
    return _infer_base_model(folder, architecture, model_type)


def _infer_base_model(folder: Path, architecture: str, model_type: str) -> str:
    """A base model (no head) by its modality: text encoder, vision model, speech model, encoder-decoder."""
    def of(names) -> bool:
        return any(model_type in _mapping(name) for name in names)

    if of(_ENCODER_DECODER):
        head = (_mapping("SEQ_TO_SEQ_CAUSAL_LM").get(model_type) or _mapping("SPEECH_SEQ_2_SEQ").get(model_type))
        task = "text2text-generation" if of(("SEQ_TO_SEQ_CAUSAL_LM",)) else "automatic-speech-recognition"
        encoder = "; or pass --task feature-extraction to export its encoder's hidden states" if task.startswith(
            "text2") else ""
        raise ModelLoadError(f"{folder}: {architecture} is an encoder-decoder base model with no generation head; "
                             f"save it as {head} for {task}{encoder}")
    if of(_SPEECH) or "Audio" in architecture or "Speech" in architecture:
        built = _built("audio-feature-extraction")
        if built:
            return built
        raise _not_built(folder, architecture, "audio-feature-extraction", "a speech model")
    if of(("IMAGE_TEXT_TO_TEXT",)):
        raise _not_built(folder, architecture, "image-text-to-text", "a vision-language model")
    if of(_VISION) or "Vision" in architecture:
        built = _built("image-feature-extraction")
        if built:
            return built
        raise _not_built(folder, architecture, "image-feature-extraction", "a vision model")
    return "feature-extraction"


# The inputs a class reads, by the modality words of its row: what an explicit --task must read too.
_INPUTS = {"a speech model": "audio", "an audio model": "audio", "a vision model": "images",
           "a CLIP-style image-text dual encoder": "images and text"}
_SPEC_INPUTS = {"text": "text", "image": "images", "audio": "audio"}  # TaskSpec.modality -> the words above


def check_task_fits(folder: Path, config: dict, task: str) -> None:
    """An explicit --task that reads other inputs than the folder's class (text for a speech or vision model)
    is refused here in one line, before a tokenizer error deep in the build hides the modality."""
    try:
        from transformers.models.auto import modeling_auto  # noqa: F401 - the mappings need transformers
    except ImportError:
        return
    reads = _SPEC_INPUTS.get(getattr(TASKS[task], "modality", "text"), "text")
    for architecture in [a for a in config.get("architectures") or [] if isinstance(a, str)]:
        for mapping, row_task, modality in _AUTO_TASKS:
            if architecture not in _classes(_mapping(mapping)):
                continue
            inputs = _INPUTS.get(modality)
            if inputs is not None and inputs != reads and _built(row_task) != task:
                raise ModelLoadError(f"{folder}: {architecture} is {modality} ({row_task}, reading {inputs}); "
                                     f"--task {task} reads {reads}: leave out --task")
            break


def infer_task_from_folder(folder: Path) -> str:
    """Infer the task of a local model folder from `config.architectures` (or `model_type`) through
    transformers' auto mappings; ModelLoadError in one line for a task hfexport does not build yet."""
    if (folder / "modules.json").is_file():
        return "feature-extraction"  # a sentence-transformers model
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: cannot read the model config ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: the model config should be a JSON object")
    model_type = str(config.get("model_type") or "")
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    try:
        from transformers.models.auto import modeling_auto
    except ImportError:
        modeling_auto = None
    if modeling_auto is not None:
        if not architectures and model_type in modeling_auto.MODEL_MAPPING_NAMES:
            base = modeling_auto.MODEL_MAPPING_NAMES[model_type]
            architectures = [base[0] if isinstance(base, tuple | list) else base]
        for architecture in architectures:
            task = _infer_from_class(folder, architecture, model_type)
            if task is not None:
                return task
    # Classes transformers does not know (custom code): the task modules' class-name endings.
    endings = sorted(((suffix, spec.name) for spec in TASKS.values() for suffix in spec.architecture_suffixes),
                     key=lambda pair: -len(pair[0]))
    for architecture in architectures:
        for suffix, task in endings:
            if architecture.endswith(suffix):
                return task
    return "feature-extraction"
