"""Masked language modelling: the top tokens for each mask position."""

from __future__ import annotations

import numpy as np

from hfexport.tasks.base import Output, TaskSpec


class FillMask(TaskSpec):
    name = "fill-mask"
    auto_class = "AutoModelForMaskedLM"
    outputs = (Output("logits", ("batch", "sequence", "vocab")),)
    aliases = ("masked-lm",)
    architecture_suffixes = ("ForMaskedLM", "ForPreTraining")
    default_gates = {"top1_agreement": 0.90, "top5_overlap": 0.80}
    gate_metrics = frozenset(default_gates)

    def manifest_fields(self, config: dict, tokenizer, pooling) -> dict:
        return {"mask_token": tokenizer.mask_token, "mask_token_id": tokenizer.mask_token_id}

    def eval_inputs(self, texts, mask_token=None) -> list:
        """Each text with one word replaced by the mask token, at a position spread by a large prime."""
        masked = []
        for i, text in enumerate(texts):
            words = text.split()
            if len(words) < 2:
                words.append("here")
            position = (i * 7919) % len(words)
            masked.append(" ".join(mask_token if j == position else w for j, w in enumerate(words)))
        return masked

    def fidelity_inputs(self, inputs, texts, mask_token):
        # A user's text with no mask token gets masked as the shipped corpus is.
        return inputs if any(mask_token and mask_token in t for t in texts) else self.eval_inputs(texts, mask_token)

    def comparable(self, outputs, attention_mask, input_ids, sequence_ids, meta):
        mask_id = meta.mask_token_id
        return [np.argsort(-outputs["logits"][row, pos])[:5]
                for row in range(input_ids.shape[0]) for pos in np.flatnonzero(input_ids[row] == mask_id)]

    def fidelity(self, reference, candidate) -> dict[str, float]:
        top1 = np.mean([r[0] == c[0] for r, c in zip(reference, candidate)])
        top5 = np.mean([len(set(r) & set(c)) / 5 for r, c in zip(reference, candidate)])
        return {"top1_agreement": float(top1), "top5_overlap": float(top5)}


SPEC = FillMask()
