"""What both generation exports share: the tensor-only KV-cache wrapper, its sample inputs and names,
and the greedy check of an exported graph against PyTorch `generate`, run through the runtime's decoder.

The graph's layout (ONNX and OpenVINO alike):

    inputs   input_ids [batch, sequence], attention_mask [batch, past + sequence],
             position_ids [batch, sequence], past_key_values.<i>.key/value [batch, kv_heads, past, head_dim]
    outputs  logits [batch, sequence, vocab], present.<i>.key/value [batch, kv_heads, past + sequence, head_dim]
"""

from __future__ import annotations

from hfexport.errors import ExportError

SAMPLE_PROMPT = "hfexport checks the exported graph by greedy decoding this prompt"
FIXED_INPUTS = ("input_ids", "attention_mask", "position_ids")


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def cache_layout(model) -> tuple[int, int, int]:
    """(layers, kv heads, head dim), read from a real cache so every architecture's naming is covered."""
    import torch

    with torch.inference_mode():
        cache = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True).past_key_values
    keys = cache.layers[0].keys
    return len(cache.layers), int(keys.shape[1]), int(keys.shape[3])


def generation_wrapper(model, layers: int, *, past_4d: bool = False):
    """Tensors in, tensors out: the cache object exists only inside forward, where tracing sees through it.

    NOTE: `past_4d`: a fresh cache layer starts from a 1-D empty tensor, and the first `update` concatenates
    the past onto it. The ONNX exporter drops that empty constant; OpenVINO's converter rejects the Concat
    (rank 1 with rank 4). With `past_4d` the layer starts from a [batch, heads, 0, head_dim] slice of the past
    instead, which OpenVINO removes as a zero-size Concat input, so the past feeds attention directly.
    `update` still runs, so sliding-window layers count the past as they do in PyTorch.
    """
    import torch
    from transformers import DynamicCache

    class GenerationGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for i in range(layers):
                key, value = past[2 * i], past[2 * i + 1]
                if past_4d:
                    layer = cache.layers[i]
                    layer.lazy_initialization(key, value)
                    layer.keys, layer.values = key[:, :, :0], value[:, :, :0]
                cache.update(key, value, i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, return_dict=True)
            present = out.past_key_values.layers
            return (out.logits, *[t for i in range(layers) for t in (present[i].keys, present[i].values)])

    return GenerationGraph().eval()


def sample_inputs(model, layers: int, kv_heads: int, head_dim: int) -> tuple:
    """Distinct batch (2), past (3) and sequence (5) lengths keep every dynamic axis apart."""
    import torch

    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    batch, past, seq = 2, 3, 5
    return (torch.randint(0, vocab, (batch, seq), generator=generator),
            torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).unsqueeze(0).expand(batch, -1).contiguous(),
            *[torch.randn(batch, kv_heads, past, head_dim, generator=generator) for _ in range(2 * layers)])


def greedy_check(model, tokenizer, decoder, tokens: int) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's decoder over the exported graph: greedy tokens and the worst
    prompt-logit gap. `decoder` has the runtime's `empty_cache(batch)` / `step(...)` interface."""
    import numpy as np
    import torch

    prompt = tokenizer(SAMPLE_PROMPT, return_tensors="pt")
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    with torch.inference_mode():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                              do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
        reference = model(input_ids=ids, attention_mask=mask).logits.numpy()
    # min_new_tokens makes `generate` mask the end-of-sequence ids at every step; the loop below masks the same
    # ones, or a trained model that wants to stop would fail the check on a token PyTorch was not allowed to pick.
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    length = ids.shape[1]
    logits, cache = decoder.step(ids.numpy(), mask.numpy(), np.arange(length, dtype=np.int64)[None],
                                 decoder.empty_cache(1), all_logits=True)
    diff = float(np.abs(logits - reference).max())
    got = [_greedy(logits[0, -1], eos)]
    for step in range(1, tokens):
        total = length + step
        logits, cache = decoder.step(np.array([[got[-1]]], np.int64), np.ones((1, total), np.int64),
                                     np.array([[total - 1]], np.int64), cache)
        got.append(_greedy(logits[0], eos))
    return want, got, diff


def _greedy(logits, eos: list[int]) -> int:
    logits = logits.astype("float32", copy=True).reshape(-1)
    logits[eos] = float("-inf")
    return int(logits.argmax())


def raise_on_mismatch(want: list[int], got: list[int], diff: float, what: str) -> None:
    if want != got:
        first = next(i for i, (w, g) in enumerate(zip(want, got)) if w != g)
        raise ExportError(f"exported graph's greedy tokens differ from PyTorch's generate at token {first} "
                          f"(PyTorch {want}, {what} {got}; max logit difference {diff:.2e})")
