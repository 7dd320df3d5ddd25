"""The fused decoder graph: a Llama-family LLM written straight from its weights as ONNX Runtime's own
operators (GroupQueryAttention with rotary inside, SkipSimplifiedLayerNormalization, packed projections),
instead of traced from PyTorch.

Why: traced, a 4-layer Llama decode step is ~200 operators (shape plumbing, Concat, Transpose, the cache's
Python arithmetic) whose cache is concatenated anew each step; written here it is 11 per layer and the cache
is one buffer the attention writes in place (docs/decisions/0191-fused-decoder-graph.md). Per layer:

    SkipSimplifiedLayerNorm -> MatMul(q|k|v packed) [-> Add bias] [-> Split, per-head RMSNorm (Qwen3)]
      -> GroupQueryAttention (rotary inside) -> MatMul(o)
    SkipSimplifiedLayerNorm -> MatMul(gate|up packed) -> Split -> Sigmoid, Mul, Mul -> MatMul(down)

Layout (differs from the traced graph's in `_generation_graph.py`; model metadata `FUSED_DECODER` tells the
runtime):
- rows are right-padded: GroupQueryAttention places row b's new tokens, and their rotary positions, after its
  `seqlens_k[b] + 1 - sequence` cached ones. The runtime's decoder moves a left-padded prompt's tokens to the
  front of each row.
- no attention mask and no `position_ids`: the runtime feeds GroupQueryAttention's own `seqlens_k` (int32
  [batch], each row's length - 1) and `total_sequence_length` (int32 scalar), and `logits_index` (int64
  [batch, kept, 1]: the positions of this step whose logits to compute). Computed in the graph from a mask and
  a `logits_to_keep`, as graphs before decision 0199 did, they were 19 of its 67 operators for a 4-layer
  Llama, and ~45 us of an int4 step's ~520 (docs/decisions/0199-fused-graph-fed-lengths.md);
  `fused_feeds` (runtime) computes them from a mask.
With a past buffer longer than the step (bound as input and output at once, `total_sequence_length` its width)
the attention writes the new positions into it in place; with a past of exactly the cached length it
concatenates, as the traced graph.

Supported: model types in `ARCHITECTURES` with SiLU MLPs, full-width rotary with a length-independent
frequency table, and no sliding window; `fused_refusal` says why any other model is not (it is then traced).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hfexport.runtime.backends.onnxruntime import FED_INPUTS, FUSED_DECODER

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
_MS = "com.microsoft"
_EXTERNAL_FROM = 1_800_000_000  # float bytes past which weights go to a sidecar (protobuf caps a file at 2 GB)


def fused_inputs(layers: int) -> list[str]:
    from hfexport.backends._generation_graph import past_names

    return ["input_ids", *FED_INPUTS, *past_names(layers)]


def fused_refusal(model) -> str | None:
    """Why the fused graph cannot express `model` exactly (None when it can)."""
    from hfexport.backends._generation_graph import sliding_window

    config = model.config
    if config.model_type not in ARCHITECTURES:
        return f"model type {config.model_type!r} is not one of {', '.join(ARCHITECTURES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} (the fused MLP is SiLU)"
    rope = (getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in _STATIC_ROPE:
        return f"rope type {kind!r} changes its frequencies with the length"
    window, positions = sliding_window(model), getattr(config, "max_position_embeddings", None)
    if window is not None and not (isinstance(positions, int) and window >= positions):  # a window never reached
        return f"sliding-window attention (window {window})"
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if dtype != "float32":
        return f"weights in {dtype} (the graph is written from float32)"
    return None


class _Graph:
    """Nodes and initialisers, named in order. With a `sidecar` open, large initialisers are written to it as
    they come (aligned, as onnx's writer does) and the proto keeps only their location: a model past 2 GB is
    never held twice in memory besides PyTorch's copy."""

    def __init__(self, sidecar=None):
        self.nodes, self.inits, self.count, self.sidecar, self.named = [], [], 0, sidecar, set()

    def const(self, name: str, array) -> str:
        """`name` as an initialiser holding `array`; a name already given (a shared constant) is reused."""
        from onnx import TensorProto, helper, numpy_helper

        if name in self.named:
            return name
        self.named.add(name)
        array = np.ascontiguousarray(array)
        if self.sidecar is None or array.nbytes < 4096:
            self.inits.append(numpy_helper.from_array(array, name))
            return name
        position = self.sidecar.tell()
        if position % 4096:
            self.sidecar.write(b"\0" * (4096 - position % 4096))
            position = self.sidecar.tell()
        self.sidecar.write(array.tobytes())
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", Path(self.sidecar.name).name), ("offset", str(position)),
                           ("length", str(array.nbytes))):
            tensor.external_data.add(key=key, value=value)
        self.inits.append(tensor)
        return name

    def op(self, kind: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs):
        from onnx import helper

        self.count += 1
        names = outputs if isinstance(outputs, list) else [f"/{kind}_{self.count}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, names, name=f"/{kind}_{self.count}", domain=domain,
                                           **attrs))
        return names[0] if len(names) == 1 else names


def _array(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _linear(g: _Graph, x: str, name: str, modules: list) -> str:
    """x @ [W1 | W2 | ...]^T (+ bias): one MatMul over the modules' packed weights, which int4/int8 quantise as
    one matrix."""
    out = g.op("MatMul", [x, g.const(f"{name}.weight", np.concatenate([_array(m.weight).T for m in modules], 1))])
    if any(m.bias is not None for m in modules):
        bias = np.concatenate([_array(m.bias) if m.bias is not None else np.zeros(m.weight.shape[0], np.float32)
                               for m in modules])
        out = g.op("Add", [out, g.const(f"{name}.bias", bias)])
    return out


def _rotary_tables(model, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [positions, head_dim / 2] from the model's own rotary module (its scaling and attention factor)."""
    import torch

    rotary = model.model.rotary_emb
    with torch.inference_mode():
        cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(positions)[None])
    half = cos.shape[-1] // 2
    return cos[0, :, :half].float().numpy(), sin[0, :, :half].float().numpy()


def write_fused_graph(model, path: Path, *, layers: int, kv_heads: int, head_dim: int, positions: int,
                      opset: int) -> int:
    """Write `model` as the fused decoder graph to `path` (one external-data file past 2 GB); returns its node
    count. Inputs: `fused_inputs(layers)`; outputs: logits and `present_names(layers)`."""
    import onnx
    from onnx import TensorProto, helper

    from hfexport.backends._generation_graph import past_names, present_names

    config = model.config
    heads = int(config.num_attention_heads)
    eps = float(config.rms_norm_eps)
    external = sum(p.numel() for p in model.parameters()) * 4 > _EXTERNAL_FROM
    sidecar = open(f"{path}.data", "wb") if external else None  # noqa: SIM115 - closed below, also on error
    try:
        g = _Graph(sidecar)
        _write_nodes(g, model, layers=layers, kv_heads=kv_heads, head_dim=head_dim, positions=positions,
                     heads=heads, eps=eps)
    finally:
        if sidecar is not None:
            sidecar.close()
    vocab = int(model.get_output_embeddings().weight.shape[0])
    floats = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
              helper.make_tensor_value_info("logits_index", TensorProto.INT64, ["batch", "kept", 1]),
              *[helper.make_tensor_value_info(n, floats, ["batch", kv_heads, "past", head_dim])
                for n in past_names(layers)]]
    outputs = [helper.make_tensor_value_info("logits", floats, ["batch", "kept", vocab]),
               *[helper.make_tensor_value_info(n, floats, ["batch", kv_heads, "total", head_dim])
                 for n in present_names(layers)]]
    graph = helper.make_graph(g.nodes, "hfexport-fused-decoder", inputs, outputs, g.inits)
    # NOTE: opset 21 at least: ONNX Runtime's int4 quantiser upgrades older graphs with onnx's version converter,
    # which has no schema for ONNX Runtime's SimplifiedLayerNormalization (in the default domain) and fails.
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 21)),
                                                    helper.make_opsetid(_MS, 1)],
                              producer_name="hfexport")
    # Tells the runtime's decoder this graph's layout (right-padded rows, an in-place cache buffer).
    helper.set_model_props(proto, dict([FUSED_DECODER]))
    onnx.save_model(proto, str(path))
    return len(g.nodes)


def _write_nodes(g: _Graph, model, *, layers: int, kv_heads: int, head_dim: int, positions: int, heads: int,
                 eps: float) -> None:
    from hfexport.backends._generation_graph import past_names, present_names

    cos, sin = _rotary_tables(model, positions)
    cos, sin = g.const("cos_cache", cos), g.const("sin_cache", sin)

    inner = model.model
    hidden = g.op("Gather", [g.const("model.embed_tokens.weight", _array(inner.embed_tokens.weight)), "input_ids"])
    residual, pending = hidden, None
    for i, block in enumerate(inner.layers):
        attn, mlp = block.self_attn, block.mlp
        norm = g.const(f"layers.{i}.input_layernorm.weight", _array(block.input_layernorm.weight))
        if pending is None:
            x = g.op("SimplifiedLayerNormalization", [hidden, norm], axis=-1, epsilon=eps)
        else:
            x, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [pending, residual, norm], 4, _MS, epsilon=eps)
        qkv = _linear(g, x, f"layers.{i}.attn.qkv", [attn.q_proj, attn.k_proj, attn.v_proj])
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head before rotary, so q, k, v apart
            sizes = g.const(f"/const/qkv_split{i}", np.array([heads * head_dim, kv_heads * head_dim,
                                                              kv_heads * head_dim], np.int64))
            q, k, v = g.op("Split", [qkv, sizes], 3, axis=-1)
            q = _head_norm(g, q, heads, head_dim, _array(attn.q_norm.weight), f"layers.{i}.attn.q_norm", eps)
            k = _head_norm(g, k, kv_heads, head_dim, _array(attn.k_norm.weight), f"layers.{i}.attn.k_norm", eps)
        else:  # packed: the operator splits q|k|v itself
            q, k, v = qkv, "", ""
        past_k, past_v = past_names(layers)[2 * i:2 * i + 2]
        out_k, out_v = present_names(layers)[2 * i:2 * i + 2]
        attended, _, _ = g.op("GroupQueryAttention", [q, k, v, past_k, past_v, *FED_INPUTS[:2], cos, sin],
                              [f"/attn_{i}/out", out_k, out_v], _MS, num_heads=heads, kv_num_heads=kv_heads,
                              scale=float(attn.scaling), do_rotary=1, rotary_interleaved=0)
        projected = _linear(g, attended, f"layers.{i}.attn.o", [attn.o_proj])
        norm = g.const(f"layers.{i}.post_attention_layernorm.weight", _array(block.post_attention_layernorm.weight))
        x, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [projected, residual, norm], 4, _MS, epsilon=eps)
        gate_up = _linear(g, x, f"layers.{i}.mlp.gate_up", [mlp.gate_proj, mlp.up_proj])
        width_mlp = int(mlp.gate_proj.weight.shape[0])
        gate, up = g.op("Split", [gate_up, g.const(f"/const/mlp_split{i}", np.array([width_mlp] * 2, np.int64))], 2,
                        axis=-1)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        pending = _linear(g, act, f"layers.{i}.mlp.down", [mlp.down_proj])
    norm = g.const("model.norm.weight", _array(inner.norm.weight))
    final, _, _, _ = g.op("SkipSimplifiedLayerNormalization", [pending, residual, norm], 4, _MS, epsilon=eps)
    _lm_head(g, final, model)



def _head_norm(g: _Graph, x: str, heads: int, head_dim: int, weight: np.ndarray, name: str, eps: float) -> str:
    split = g.op("Reshape", [x, g.const(f"{name}/shape", np.array([0, 0, heads, head_dim], np.int64))])
    normed = g.op("SimplifiedLayerNormalization", [split, g.const(f"{name}.weight", weight)], axis=-1, epsilon=eps)
    return g.op("Reshape", [normed, g.const(f"{name}/flat", np.array([0, 0, heads * head_dim], np.int64))])


def _lm_head(g: _Graph, hidden: str, model) -> None:
    """logits for the positions `logits_index` names in each row: [batch, kept, vocab]."""
    rows = g.op("GatherND", [hidden, "logits_index"], batch_dims=1)
    head = model.get_output_embeddings()
    out = g.op("MatMul", [rows, g.const("lm_head.weight", _array(head.weight).T)],
               ["logits"] if getattr(head, "bias", None) is None else 1)
    if getattr(head, "bias", None) is not None:
        g.op("Add", [out, g.const("lm_head.bias", _array(head.bias))], ["logits"])
