"""Decoder LLMs: exported with a KV cache and run by the runtime's generation loop.

Fidelity is measured by the generation validator (hfexport/validation/generation.py): next-token
top-1 agreement teacher-forced on evaluation text, greedy equality, perplexity ratio.
"""

from __future__ import annotations

from hfexport.tasks.base import Output, TaskSpec


class TextGeneration(TaskSpec):
    name = "text-generation"
    auto_class = "AutoModelForCausalLM"
    # Outputs past the logits are the KV cache (`present.<layer>.key/value`), named per model at export.
    outputs = (Output("logits", ("batch", "sequence", "vocab")),)
    aliases = ("causal-lm",)
    # GPT-2 and its relatives predate the ForCausalLM name
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    generative = True
    # NOTE: next-token agreement, not greedy equality: one flipped token in an int4 run changes the whole
    # tail of a greedy sequence. fp32 recipes add `greedy_agreement: 1.0`.
    default_gates = {"top1_agreement": 0.90}
    gate_metrics = frozenset({"top1_agreement", "greedy_agreement"})


SPEC = TextGeneration()
