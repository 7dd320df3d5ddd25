"""Text generation for the xla backend: one jax.export function over a fixed-size (static) KV cache.

TPUs want static shapes, so the cache is `[batch, kv_heads, cache_length, head_dim]` per layer from the first
step: each call writes its new keys and values at slots `cache_start .. cache_start + sequence` (an
out-of-place `index_copy`, so the exported function is pure) and attends over the whole cache under the
`[batch, cache_length]` attention mask. Prefill and decode are the same function at sequence length
`s` and 1; the runtime pads a prompt to the next sequence bucket and compiles each shape once.

    inputs   input_ids [batch, sequence], attention_mask [batch, cache_length], position_ids [batch, sequence],
             cache_start [] (int32), past_key_values.<i>.key/value [batch, kv_heads, cache_length, head_dim]
    outputs  logits [batch, sequence, vocab], present.<i>.key/value (the cache with this step written in)

Checked by greedy decoding against PyTorch `generate`, through the runtime's decoder, like every target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from hfexport.artifacts import StableHLOModel, TorchModel
from hfexport.backends._generation_graph import (
    cache_layout,
    greedy_check,
    past_names,
    present_names,
    raise_on_mismatch,
)
from hfexport.backends._xla.export import MODEL_FILE, WEIGHTS_FILE, export_facts, jax_function, save_weights
from hfexport.context import BuildContext
from hfexport.errors import ExportError, first_line
from hfexport.passes.base import PassConfig

FIXED_INPUTS = ("input_ids", "attention_mask", "position_ids", "cache_start")


class ExportXlaGenerationConfig(PassConfig):
    """Options of an XLA (jax.export) text-generation export."""

    precision: Literal["fp32", "bf16"] | None = Field(None, description="xla: compute and KV-cache precision "
                                                       "(null = fp32)")
    check_tokens: int = Field(8, ge=1, le=256, description="greedy tokens that must equal PyTorch's generate")

    def describe_parts(self) -> list[str]:
        return ["static KV"]


def export_generation(config: ExportXlaGenerationConfig, artifact: TorchModel, ctx: BuildContext,
                      out_dir: Path) -> StableHLOModel:
    import copy

    import torch

    precision = config.precision or "fp32"
    xla = ctx.target.xla_options()
    model = ctx.torch_module(artifact.path)
    layers, kv_heads, head_dim = cache_layout(model)
    length = min(int(ctx.source.max_length), xla.cache_length)
    inputs = [*FIXED_INPUTS, *past_names(layers)]
    outputs = ["logits", *present_names(layers)]
    # bf16: weights, compute and the KV cache in bf16 (the TPU's numerics, half the cache memory); logits in fp32.
    traced = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16" else model
    sample = _sample(traced, layers, kv_heads, head_dim, length)
    try:
        batch = torch.export.Dim("batch", min=1, max=256)
        sequence = torch.export.Dim("sequence", min=1, max=length)
        shapes = ({0: batch, 1: sequence}, {0: batch}, {0: batch, 1: sequence}, None,
                  tuple({0: batch} for _ in range(2 * layers)))
        program = torch.export.export(_wrapper(traced, layers), sample, dynamic_shapes=shapes)
        specs = _specs(layers, kv_heads, head_dim, length, "bfloat16" if precision == "bf16" else "float32")
        exported, weights, names = jax_function(program, specs, ("b, t", ("b >= 1", "t >= 1", f"t <= {length}")),
                                                xla.platforms)
    except ExportError:
        raise
    except Exception as exc:  # torch.export, torchax and jax raise anything; the first line is what matters
        raise ExportError(f"XLA export of {ctx.source.model_type} for generation failed: "
                          f"{first_line(exc)}") from exc
    path = out_dir / MODEL_FILE
    path.write_bytes(exported.serialize())
    axes = {"logits": ["batch", "sequence", "vocab"], **{n: ["batch", "kv_heads", "cache", "head_dim"]
                                                          for n in present_names(layers)}}
    layout = {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "cache_length": length,
              "cache_dtype": "bfloat16" if precision == "bf16" else "float32"}
    save_weights(out_dir / WEIGHTS_FILE, names, weights, inputs, axes, length, generation=layout)
    from hfexport.runtime.backends.xla import open_session

    decoder = open_session(path, {"xla": {"device": "cpu"}}).decoder()
    # fp32: greedy tokens equal PyTorch fp32's. bf16: checked against the same bf16 weights in PyTorch, and
    # recorded rather than required (bf16 sums in another order can flip a near tie); the fidelity gates
    # judge the bundle against PyTorch fp32 (docs/decisions/0104-xla-bf16-generation.md).
    want, got, diff = greedy_check(traced, ctx.hf_tokenizer(), decoder, config.check_tokens)
    if precision == "fp32":
        raise_on_mismatch(want, got, diff, "XLA")
    agree = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), len(want))
    return StableHLOModel(path, tuple(inputs), tuple(outputs),
                          stats={"precision": precision, "greedy_tokens_equal": agree, **export_facts(exported),
                                 "weights": len(set(names)),
                                 "module_bytes": path.stat().st_size, "layers": layers, "kv_heads": kv_heads,
                                 "head_dim": head_dim, "cache_length": length,
                                 "greedy_tokens_checked": len(want), "max_abs_logit_diff_vs_torch": diff})


def _wrapper(model, layers: int):
    import torch
    from transformers.cache_utils import Cache, StaticLayer

    class SlotLayer(StaticLayer):
        """A static layer over given tensors, written out of place at `start` (a traced scalar)."""

        def __init__(self, keys, values, start):
            super().__init__(max_cache_len=keys.shape[2])
            self.keys, self.values, self.start = keys, values, start
            self.batch_size, self.num_heads = keys.shape[:2]
            self.k_head_dim, self.v_head_dim = keys.shape[-1], values.shape[-1]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            slots = torch.arange(key_states.shape[-2], device=key_states.device) + self.start
            self.keys = self.keys.index_copy(2, slots, key_states)
            self.values = self.values.index_copy(2, slots, value_states)
            return self.keys, self.values

        def get_seq_length(self):
            return self.start

    class StaticGeneration(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, cache_start, *past):
            cache = Cache(layers=[SlotLayer(past[2 * i], past[2 * i + 1], cache_start) for i in range(layers)])
            slots = torch.arange(input_ids.shape[1], device=input_ids.device) + cache_start
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, cache_position=slots, use_cache=True, return_dict=True)
            return (out.logits.float(), *[t for layer in cache.layers for t in (layer.keys, layer.values)])

    return StaticGeneration().eval()


def _sample(model, layers: int, kv_heads: int, head_dim: int, length: int) -> tuple:
    """Distinct batch (2) and sequence (5) lengths, 3 tokens already in the cache."""
    import torch

    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    batch, start, seq = 2, 3, 5
    mask = torch.zeros(batch, length, dtype=torch.int32)
    mask[:, :start + seq] = 1
    return (torch.randint(0, vocab, (batch, seq), generator=generator, dtype=torch.int32), mask,
            (torch.arange(seq, dtype=torch.int32) + start).unsqueeze(0).expand(batch, -1).contiguous(),
            torch.tensor(start, dtype=torch.int32),
            *[torch.randn(batch, kv_heads, length, head_dim, generator=generator).to(model.dtype)
              for _ in range(2 * layers)])


def _specs(layers: int, kv_heads: int, head_dim: int, length: int, cache_dtype: str = "float32"):
    """The jax argument shapes, with the symbolic b (batch) and t (sequence) filled in by `jax_function`."""
    return lambda b, t: [((b, t), "int32"), ((b, length), "int32"), ((b, t), "int32"), ((), "int32"),
                         *[((b, kv_heads, length, head_dim), cache_dtype)] * (2 * layers)]
