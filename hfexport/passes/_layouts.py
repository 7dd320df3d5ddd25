"""Where the prunable parts of each architecture family live, so prune and distill stay generic."""

from __future__ import annotations

from dataclasses import dataclass

from hfexport.errors import PlanError


@dataclass(frozen=True)
class Layout:
    layers: str  # dotted path, from the base model, to the ModuleList of blocks
    layers_key: str  # config key holding the number of blocks
    ffn_in: tuple[str, ...]  # linears producing the intermediate activation (gate and up for gated MLPs)
    ffn_out: str  # linear consuming it
    ffn_key: str  # config key holding the intermediate width
    # Decoders only: attention projections and config keys. Encoder configs derive the head size from
    # hidden_size / num_attention_heads, so their heads cannot be removed (see prune.py).
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    o_proj: str | None = None
    heads_key: str | None = None
    kv_heads_key: str | None = None


_BERT = Layout("encoder.layer", "num_hidden_layers", ("intermediate.dense",), "output.dense", "intermediate_size")
_DISTILBERT = Layout("transformer.layer", "n_layers", ("ffn.lin1",), "ffn.lin2", "hidden_dim")
_LLAMA = Layout("layers", "num_hidden_layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj",
                "intermediate_size", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj", "num_attention_heads", "num_key_value_heads")

LAYOUTS: dict[str, Layout] = {
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT, "camembert": _BERT,
    "distilbert": _DISTILBERT,
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
}  # fmt: skip


def layout_for(model_type: str) -> Layout:
    if model_type not in LAYOUTS:
        raise PlanError(f"pruning does not know the layout of {model_type!r} models "
                        f"(supported: {', '.join(sorted(LAYOUTS))})")
    return LAYOUTS[model_type]


def get_module(root, dotted: str):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def set_module(root, dotted: str, value) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(get_module(root, parent) if parent else root, name, value)


def blocks(model, layout: Layout):
    return get_module(model.base_model, layout.layers)
