"""The Hugging Face checkpoint a torch-side pass writes, and the history of passes it carries.

Shared by the passes that change a PyTorch model (prune, distill), so neither imports the other: each
saves its result here, and distill reads prune's record (`kept_layers`) from the history, not from code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hfexport.context import BuildContext

HISTORY_FILE = "hfexport_history.json"


def save_checkpoint(model, source_dir: Path, out: Path, ctx: BuildContext, record: dict) -> None:
    """A real Hugging Face checkpoint (safetensors + config + tokenizer + sentence-transformers files).

    `record` ({pass name: its stats}) is appended to the history the source folder carried.
    """
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (ctx.tokenizer_dir / name).is_file():
            shutil.copyfile(ctx.tokenizer_dir / name, out / name)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, out / name)
    for folder in source_dir.glob("*_Pooling"):
        shutil.copytree(folder, out / folder.name, dirs_exist_ok=True)
    (out / HISTORY_FILE).write_text(json.dumps([*read_history(source_dir), record], indent=2, default=str))


def read_history(folder: Path) -> list[dict]:
    """The records of the torch-side passes that produced `folder`, oldest first ([] for an original model)."""
    history = folder / HISTORY_FILE
    return json.loads(history.read_text()) if history.is_file() else []
