"""Structured pruning (FFN neurons, whole layers, decoder attention heads) and unstructured magnitude pruning.

Importance comes from activations on calibration text, not gradients: it needs no labels and no task
loss (a feature-extraction model has none), costs one forward pass, and ranks well enough for the
distillation that follows to recover the rest.
- FFN neuron j: mean |activation_j| x ||W_out[:, j]|| (what the neuron actually adds to the residual).
- Layer: block influence, 1 - mean cos(h_in, h_out) over tokens (how much the block changes its input).
- Decoder KV group: the norm of its query heads' contribution through o_proj; a group's query heads and
  its key/value head go together, so grouped-query attention stays consistent.

NOTE: encoder heads are not pruned, decoder heads are (docs/decisions/0023-no-encoder-head-pruning.md).
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field, model_validator

from hfexport.artifacts import TorchModel
from hfexport.context import BuildContext, PlanContext
from hfexport.errors import PlanError
from hfexport.passes._checkpoint import save_checkpoint
from hfexport.passes._layouts import blocks, get_module, layout_for, set_module
from hfexport.passes.base import Pass, PassConfig

Keep = float | int  # float in (0, 1] = fraction kept; int >= 1 = count kept


class PruneConfig(PassConfig):
    method: Literal["structured", "magnitude"] = "structured"
    ffn_keep: Keep = Field(1.0, description="FFN neurons kept per layer (fraction or count)")
    layers_keep: Keep = Field(1.0, description="layers kept (fraction or count)")
    heads_keep: Keep = Field(1.0, description="decoders: key/value head groups kept per layer")
    protect_layers: list[int] = Field(default_factory=list, description="layer indices never dropped")
    # How layers are chosen: "output" drops, one at a time, the layer whose removal changes the final
    # output least on calibration text; "influence" drops the blocks that change their input least
    # (one pass, cheaper); "spread" keeps evenly spaced layers, as DistilBERT was initialised.
    layer_selection: Literal["output", "influence", "spread"] = "output"
    sparsity: float = Field(0.5, gt=0, lt=1, description="magnitude method: fraction of weights zeroed")
    calibration_samples: int = Field(128, ge=8, description="texts used to rank importance")

    @model_validator(mode="after")
    def _check_keeps(self) -> PruneConfig:
        for name in ("ffn_keep", "layers_keep", "heads_keep"):
            value = getattr(self, name)
            if isinstance(value, float) and not 0 < value <= 1:
                raise ValueError(f"{name}: a fraction must be in (0, 1], got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"{name}: a count must be at least 1, got {value}")
        return self


def _count(keep: Keep, total: int) -> int:
    return max(1, min(total, keep if isinstance(keep, int) else round(total * keep)))


class PrunePass(Pass[PruneConfig]):
    name = "prune"
    summary = "structured pruning of FFN neurons, layers and decoder heads (or magnitude sparsity)"
    consumes = TorchModel
    produces = TorchModel
    config_class = PruneConfig
    data_inputs = frozenset({"calibration_texts"})  # importance comes from activations on calibration text

    def describe(self) -> str:
        c = self.config
        if c.method == "magnitude":
            return f"prune(magnitude, sparsity {c.sparsity})"
        return f"prune(ffn {c.ffn_keep}, layers {c.layers_keep}, heads {c.heads_keep})"

    def stats_parts(self, stats: dict) -> list[str]:
        parts = []
        if "parameters_after" in stats:
            parts.append(f"{stats['parameters_before'] / 1e6:.1f}M -> {stats['parameters_after'] / 1e6:.1f}M parameters")
        if "kept_layers" in stats:
            parts.append(f"kept layers {stats['kept_layers']}, FFN {stats['ffn_width'][0]} -> {stats['ffn_width'][1]}")
        if "sparsity" in stats:
            parts.append(f"sparsity {stats['sparsity']:.2f}")
        return parts

    def check(self, plan: PlanContext) -> None:
        layout = layout_for(plan.source.model_type)
        total = int(plan.source.config.get(layout.layers_key, 0))
        if self.config.heads_keep != 1.0 and layout.heads_key is None:
            raise PlanError(f"heads_keep: {plan.source.model_type} heads cannot be pruned (transformers 5 "
                            "has no pruned_heads for encoders); prune ffn_keep and layers_keep instead")
        if any(not -total <= i < total for i in self.config.protect_layers):
            raise PlanError(f"protect_layers: the model has {total} layers (indices 0..{total - 1})")

    def run(self, artifact: TorchModel, ctx: BuildContext) -> TorchModel:
        import torch

        model = copy.deepcopy(ctx.torch_module(artifact.path)).eval()
        layout = layout_for(ctx.source.model_type)
        params_before = sum(p.numel() for p in model.parameters())
        if self.config.method == "magnitude":
            stats = _magnitude(model, layout, self.config.sparsity)
        else:
            texts = ctx.calibration_texts[: self.config.calibration_samples]
            with torch.inference_mode():
                stats = _structured(model, layout, self.config, _batches(ctx, texts))
        stats["parameters_before"] = params_before
        stats["parameters_after"] = sum(p.numel() for p in model.parameters())
        out = ctx.stage_dir(self.name)
        save_checkpoint(model, artifact.path, out, ctx, {"prune": stats})
        return TorchModel(out, stats=stats)


def _batches(ctx: BuildContext, texts: list[str], size: int = 16):
    tokenizer = ctx.hf_tokenizer()
    for start in range(0, len(texts), size):
        yield tokenizer(texts[start:start + size], padding=True, truncation=True,
                        max_length=min(ctx.source.max_length, 256), return_tensors="pt")


def _forward(model, batch) -> object:
    import inspect

    # No KV cache while ranking: its layer indices would not match a trial set of layers.
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    return model(**batch, output_hidden_states=True, return_dict=True, **extra)


def _structured(model, layout, config: PruneConfig, batches) -> dict:
    import torch

    batches = list(batches)
    batches_again = batches  # layer selection by output runs the calibration text again

    layers = blocks(model, layout)
    n_layers = len(layers)
    ffn_score = [None] * n_layers
    head_score = [None] * n_layers
    influence = torch.zeros(n_layers)
    hooks = []

    def ffn_hook(index):
        def hook(module, args):
            act = args[0].detach().abs().flatten(0, -2).mean(0)
            ffn_score[index] = act if ffn_score[index] is None else ffn_score[index] + act
        return hook

    def head_hook(index, n_heads, head_dim):
        def hook(module, args):
            x = args[0].detach().flatten(0, -2)  # [tokens, heads * head_dim]
            w = module.weight.detach()  # [hidden, heads * head_dim]
            contrib = torch.stack([(x[:, h * head_dim:(h + 1) * head_dim] @ w[:, h * head_dim:(h + 1) * head_dim].T)
                                   .norm(dim=-1).mean() for h in range(n_heads)])
            head_score[index] = contrib if head_score[index] is None else head_score[index] + contrib
        return hook

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for i, block in enumerate(layers):
        hooks.append(get_module(block, layout.ffn_out).register_forward_pre_hook(ffn_hook(i)))
        if layout.o_proj and config.heads_keep != 1.0:
            hooks.append(get_module(block, layout.o_proj).register_forward_pre_hook(
                head_hook(i, cfg.num_attention_heads, head_dim)))
    try:
        for batch in batches:
            out = _forward(model, batch)
            mask = batch["attention_mask"].bool()
            for i in range(n_layers):
                h_in, h_out = out.hidden_states[i][mask], out.hidden_states[i + 1][mask]
                influence[i] += (1 - torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)).mean()
    finally:
        for hook in hooks:
            hook.remove()

    stats: dict = {"method": "structured", "importance": "calibration activations"}
    # 1. FFN neurons: the same count in every layer, since the config holds one intermediate width.
    width = get_module(layers[0], layout.ffn_out).in_features
    keep_ffn = _count(config.ffn_keep, width)
    if keep_ffn < width:
        for i, block in enumerate(layers):
            out_linear = get_module(block, layout.ffn_out)
            score = ffn_score[i] * out_linear.weight.detach().norm(dim=0)
            index = torch.topk(score, keep_ffn).indices.sort().values
            for name in layout.ffn_in:
                set_module(block, name, _slice_linear(get_module(block, name), index, dim=0))
            set_module(block, layout.ffn_out, _slice_linear(out_linear, index, dim=1))
        setattr(model.config, layout.ffn_key, keep_ffn)
    stats["ffn_width"] = [width, keep_ffn]
    # 2. Decoder heads, by key/value group so grouped-query attention stays consistent.
    if layout.o_proj and config.heads_keep != 1.0:
        stats["kv_heads"] = _prune_heads(model, layers, layout, head_score, head_dim, config.heads_keep)
    # 3. Whole layers: drop the ones that change their input least.
    keep_layers = _count(config.layers_keep, n_layers)
    protected = {i % n_layers for i in config.protect_layers}
    if keep_layers < len(protected):
        raise PlanError(f"layers_keep {keep_layers} is fewer than the {len(protected)} protected layers")
    kept = _choose_layers(model, layout, config.layer_selection, keep_layers, protected, influence, batches_again)
    if len(kept) < n_layers:
        new_blocks = torch.nn.ModuleList([layers[i] for i in kept])
        set_module(model.base_model, layout.layers, new_blocks)
        for new_index, block in enumerate(new_blocks):
            for module in block.modules():  # caches index layers by position
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
        setattr(model.config, layout.layers_key, len(kept))
        layer_types = getattr(model.config, "layer_types", None)
        if layer_types:
            model.config.layer_types = [layer_types[i] for i in kept]
    stats["kept_layers"] = kept
    stats["block_influence"] = [round(float(v), 5) for v in influence]
    return stats


def _choose_layers(model, layout, how: str, keep: int, protected: set[int], influence, batches) -> list[int]:
    import torch

    n_layers = len(blocks(model, layout))
    candidates = sorted(set(range(n_layers)) - protected)
    if keep >= n_layers:
        return list(range(n_layers))
    if how == "spread":
        spread = [int(i * n_layers / keep) for i in range(keep)]
        return sorted((sorted(protected) + [i for i in spread if i not in protected])[:keep])
    if how == "influence":
        order = sorted(candidates, key=lambda i: -float(influence[i]))
        return sorted(protected | set(order[: keep - len(protected)]))
    # "output": greedy, one layer at a time, judged by the final hidden state on calibration text.
    all_layers = blocks(model, layout)
    reference = [_forward(model, b).hidden_states[-1] for b in batches]
    kept = list(range(n_layers))
    while len(kept) > keep:
        best, best_score = None, -2.0
        for drop in (i for i in kept if i not in protected):
            trial = [i for i in kept if i != drop]
            set_module(model.base_model, layout.layers, torch.nn.ModuleList([all_layers[i] for i in trial]))
            score = 0.0
            for b, ref in zip(batches, reference):
                mask = b["attention_mask"].bool()
                out = _forward(model, b).hidden_states[-1]
                score += float(torch.nn.functional.cosine_similarity(out[mask], ref[mask], dim=-1).mean())
            if score > best_score:
                best, best_score = drop, score
        kept.remove(best)
    set_module(model.base_model, layout.layers, all_layers)
    return kept


def _prune_heads(model, layers, layout, head_score, head_dim, heads_keep) -> list[int]:
    import torch

    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    per_group = n_heads // n_kv
    keep_kv = _count(heads_keep, n_kv)
    for i, block in enumerate(layers):
        groups = head_score[i].view(n_kv, per_group).sum(1)
        kv_index = torch.topk(groups, keep_kv).indices.sort().values
        q_heads = torch.cat([torch.arange(g * per_group, (g + 1) * per_group) for g in kv_index.tolist()])
        q_rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in q_heads.tolist()])
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in kv_index.tolist()])
        set_module(block, layout.q_proj, _slice_linear(get_module(block, layout.q_proj), q_rows, dim=0))
        set_module(block, layout.k_proj, _slice_linear(get_module(block, layout.k_proj), kv_rows, dim=0))
        set_module(block, layout.v_proj, _slice_linear(get_module(block, layout.v_proj), kv_rows, dim=0))
        set_module(block, layout.o_proj, _slice_linear(get_module(block, layout.o_proj), q_rows, dim=1))
        attention = get_module(block, layout.o_proj.rpartition(".")[0])
        for attr, value in (("num_heads", keep_kv * per_group), ("num_key_value_heads", keep_kv)):
            if hasattr(attention, attr):
                setattr(attention, attr, value)
    cfg.head_dim = head_dim
    cfg.num_attention_heads = keep_kv * per_group
    cfg.num_key_value_heads = keep_kv
    return [n_kv, keep_kv]


def _slice_linear(linear, index, dim: int):
    """A new Linear holding only the chosen output rows (dim 0) or input columns (dim 1)."""
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, index).clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias.detach())
    return new


def _magnitude(model, layout, sparsity: float) -> dict:
    """Zero the smallest weights of every block's linears, made permanent (no masks left in the model)."""
    import torch
    from torch.nn.utils import prune

    linears = [m for block in blocks(model, layout) for m in block.modules() if isinstance(m, torch.nn.Linear)]
    for linear in linears:
        prune.l1_unstructured(linear, name="weight", amount=sparsity)
        prune.remove(linear, "weight")
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    total = sum(m.weight.numel() for m in linears)
    return {"method": "magnitude", "sparsity": round(zeros / total, 4),
            "note": "zeros shrink the compressed size only; dense kernels run as fast as before"}
