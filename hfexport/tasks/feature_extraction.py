"""Sentence embeddings: the model's token states, pooled (and normalised) as its folder declares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hfexport.runtime.tasks.feature_extraction import pool
from hfexport.tasks._labelled import batched, similarity_spearman, spearman
from hfexport.tasks.base import Output, TaskSpec

DEFAULT_POOLING = {"mode": "mean", "normalize": False}
# sentence-transformers' Pooling config flags -> the runtime's pooling modes
_ST_MODES = {"cls_token": "cls", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
             "mean_tokens": "mean", "lasttoken": "last"}


class FeatureExtraction(TaskSpec):
    name = "feature-extraction"
    auto_class = "AutoModel"
    outputs = (Output("last_hidden_state", ("batch", "sequence", "hidden")),)
    aliases = ("sentence-similarity", "default")
    architecture_suffixes = ("Model",)
    calibration_fidelity = True
    default_gates = {"cosine_mean": 0.99, "cosine_min": 0.975}
    gate_metrics = frozenset(default_gates)
    distill_kind = "embedding"
    distill_metric = "cosine_mean"

    def pooling(self, folder: Path) -> dict:
        """The pooling a sentence-transformers folder declares; mean without normalisation otherwise."""
        pooling = dict(DEFAULT_POOLING)
        modules_file = Path(folder) / "modules.json"
        if not modules_file.is_file():
            return pooling
        for module in json.loads(modules_file.read_text()):
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                cfg_file = Path(folder) / module.get("path", "") / "config.json"
                if cfg_file.is_file():
                    cfg = json.loads(cfg_file.read_text())
                    pooling["mode"] = next((mode for flag, mode in _ST_MODES.items()
                                            if cfg.get(f"pooling_mode_{flag}")), pooling["mode"])
            elif kind.endswith("Normalize"):
                pooling["normalize"] = True
        return pooling

    def manifest_fields(self, config: dict, tokenizer, pooling: dict | None) -> dict:
        return {"pooling": pooling}

    def fidelity_inputs(self, inputs: list, texts: list[str], mask_token: str | None) -> list:
        # Sentence pairs serve the STS metric; fidelity compares each embedded text.
        return texts if inputs and isinstance(inputs[0], tuple) else inputs

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        mode, normalize = (meta.pooling.mode, meta.pooling.normalize) if meta.pooling else ("mean", False)
        return pool(outputs["last_hidden_state"], attention_mask, mode, normalize)

    def fidelity(self, reference, candidate) -> dict[str, float]:
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        cos = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + 1e-12)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "similarity_spearman": _similarity_spearman(ref, cand)}

    def labelled_metrics(self, runner, inputs, labels, meta, batch) -> dict[str, float]:
        if not isinstance(inputs[0], tuple):
            return {}
        first = np.asarray(batched(runner.comparable, [a for a, _ in inputs], batch))
        second = np.asarray(batched(runner.comparable, [b for _, b in inputs], batch))
        return similarity_spearman(first, second, labels)

    # NOTE: the student matches the pooled vector before normalisation: the loss's cosine term is scale-free,
    # and its MSE term keeps the scale the distillation recipe was measured with (docs/decisions/0003).
    def distill_targets(self, outputs, attention_mask, pooling):
        return {"pooled": self.distill_compared(outputs, attention_mask, pooling)}

    def distill_compared(self, outputs, attention_mask, pooling):
        mode = (pooling or DEFAULT_POOLING)["mode"]
        return pool_torch(outputs.last_hidden_state, attention_mask, {"mode": mode, "normalize": False})


def pool_torch(hidden, attention_mask, pooling: dict):
    """The runtime's `pool` in torch (differentiable), every mode: cls, max, last, mean, mean_sqrt_len."""
    import torch
    import torch.nn.functional as F

    mode = pooling["mode"]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    elif mode == "last":
        last = attention_mask.sum(dim=1).long() - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    elif mode in ("mean", "mean_sqrt_len"):
        counts = mask.sum(dim=1).clamp(min=1e-9)
        pooled = (hidden * mask).sum(dim=1) / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")
    return F.normalize(pooled, dim=-1) if pooling.get("normalize") else pooled


def _similarity_spearman(ref: np.ndarray, cand: np.ndarray) -> float:
    """Rank correlation of the pairwise cosine-similarity matrices: does retrieval order survive?"""
    def sims(x):
        unit = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
        full = unit @ unit.T
        return full[np.triu_indices(len(x), k=1)]

    return spearman(sims(ref), sims(cand))


SPEC = FeatureExtraction()
