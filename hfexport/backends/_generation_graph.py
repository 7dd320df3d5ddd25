"""What both generation exports share: the tensor-only KV-cache wrapper, its sample inputs and names,
and the greedy check of an exported graph against PyTorch `generate`, run through the runtime's decoder.

The graph's layout (ONNX and OpenVINO alike):

    inputs   input_ids [batch, sequence], attention_mask [batch, past + sequence],
             position_ids [batch, sequence], logits_to_keep [] (int64),
             past_key_values.<i>.key/value [batch, kv_heads, past, head_dim]
    outputs  logits [batch, kept, vocab], present.<i>.key/value [batch, kv_heads, past + sequence, head_dim]

`logits_to_keep` = k computes the LM head for the last k positions only (0: every position), so a prefill
that wants the next token costs one position's LM head, not the prompt's (docs/decisions/0171-last-position-
lm-head.md). A model whose forward takes no `logits_to_keep`, and every bundle built before it, has no such
input and returns every position; the runtime feeds it only to graphs that have it.

The fused ONNX graph of Llama-family models (`_onnx/fused_decoder.py`) keeps these names but right-pads its
rows, has no `position_ids`, and reads `logits_to_keep` > 0 as "each row's last real position".
"""

from __future__ import annotations

from hfexport.errors import ExportError, first_line

SAMPLE_PROMPT = "hfexport checks the exported graph by greedy decoding this prompt"
FIXED_INPUTS = ("input_ids", "attention_mask", "position_ids")
KEEP_INPUT = "logits_to_keep"


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


def keeps_logits(model) -> bool:
    """Whether the model's forward takes transformers' `logits_to_keep` (every causal LM of transformers 5 but a
    few speech and music decoders)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def graph_inputs(layers: int, keep: bool) -> list[str]:
    """The graph's input names in the wrapper's argument order."""
    return [*FIXED_INPUTS, *([KEEP_INPUT] if keep else []), *past_names(layers)]


def generation_wrapper(model, layers: int, *, past_4d: bool = False, keep: bool = False):
    """Tensors in, tensors out: the cache object exists only inside forward, where tracing sees through it.
    With `keep` the fourth argument is `logits_to_keep` (a 0-D int64 tensor; see the module docstring).

    NOTE: `past_4d`: a fresh cache layer starts from a 1-D empty tensor, and the first `update` concatenates
    the past onto it. The ONNX exporter drops that empty constant; OpenVINO's converter rejects the Concat
    (rank 1 with rank 4). With `past_4d` the layer starts from a [batch, heads, 0, head_dim] slice of the past
    instead, which OpenVINO removes as a zero-size Concat input, so the past feeds attention directly.

    NOTE: sliding-window layers (Mistral, Gemma2/3, chunked attention) keep their whole past, and the window is
    applied by the mask alone. transformers' DynamicSlidingWindowLayer crops the cache to the window with
    Python arithmetic that tracing bakes in: past the window the traced graph's shapes disagree (ONNX Runtime:
    `Concat ... Shape mismatch`) or its mask is wrong. A full layer and the model's own sliding-window mask
    give the same tokens at any length, for cache memory that grows with the sequence instead of stopping at
    the window (docs/decisions/0160-sliding-window-full-cache.md).
    """
    import torch
    from transformers import DynamicCache

    class GenerationGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *rest):
            past = rest[1:] if keep else rest
            extra = {"logits_to_keep": kept_positions(input_ids, rest[0])} if keep else {}
            cache = full_layers(DynamicCache(config=self.model.config))  # the window lives in the mask
            for i in range(layers):
                key, value = past[2 * i], past[2 * i + 1]
                if past_4d:
                    layer = cache.layers[i]
                    layer.lazy_initialization(key, value)
                    layer.keys, layer.values = key[:, :, :0], value[:, :, :0]
                cache.update(key, value, i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, return_dict=True, **extra)
            present = out.past_key_values.layers
            return (out.logits, *[t for i in range(layers) for t in (present[i].keys, present[i].values)])

    return GenerationGraph().eval()


def kept_positions(input_ids, logits_to_keep):
    """The positions whose logits the graph computes, as a 1-D tensor (transformers slices the hidden states
    with it before the LM head): the last `logits_to_keep`, or every one for 0 or more than the sequence.
    NOTE: a Range from a traced start, so one graph serves every k; an int would be baked in by tracing."""
    import torch

    length = input_ids.shape[1]
    count = torch.where(logits_to_keep > 0, torch.clamp(logits_to_keep, max=length), length)
    return torch.arange(length - count, length, device=input_ids.device)


def full_layers(cache):
    """`cache` with each sliding-window layer replaced by a full one (see `generation_wrapper`'s NOTE)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache.layers = [DynamicLayer() if isinstance(layer, DynamicSlidingWindowLayer) else layer
                    for layer in cache.layers]
    return cache


def sample_inputs(model, layers: int, kv_heads: int, head_dim: int, *, keep: bool = False) -> tuple:
    """Distinct batch (2), past (3) and sequence (5) lengths keep every dynamic axis apart; with `keep`, a
    `logits_to_keep` of 2 (neither 0 nor 1, nor the sequence)."""
    import torch

    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    batch, past, seq = 2, 3, 5
    return (torch.randint(0, vocab, (batch, seq), generator=generator),
            torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).unsqueeze(0).expand(batch, -1).contiguous(),
            *([torch.tensor(2, dtype=torch.long)] if keep else []),
            *[torch.randn(batch, kv_heads, past, head_dim, generator=generator) for _ in range(2 * layers)])


def sliding_window(model) -> int | None:
    """The smallest attention window of a model with sliding-window (or chunked) layers; None without one."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None)
    windows = [getattr(config, name, None) for name in ("sliding_window", "attention_chunk_size")]
    windows = [int(w) for w in windows if isinstance(w, int) and w > 0]
    if not windows or (types is not None and not any("sliding" in t or "chunked" in t for t in types)):
        return None
    return min(windows)


def check_prompts(model, tokenizer, tokens: int) -> list[list[int]]:
    """The prompts the greedy check decodes from: the sample prompt, and for a sliding-window model two more
    that cross the window, one while decoding and one within the prompt, as long as the model's positions
    allow. A graph that baked in a window's cropping passed the short check and failed at the window."""
    first = tokenizer(SAMPLE_PROMPT)["input_ids"]
    window = sliding_window(model)
    limit = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None) or 1 << 30
    if window is None:
        return [first]
    text = SAMPLE_PROMPT
    long = tokenizer(text)["input_ids"]
    wanted = [max(2, window - tokens // 2), window + 2]
    while len(long) < max(wanted):
        text += " " + SAMPLE_PROMPT
        long = tokenizer(text)["input_ids"]
    return [first, *[long[:length] for length in wanted if length + tokens <= limit]]


def greedy_check(model, tokenizer, decoder, tokens: int, *, past_window: bool = False, release=None
                 ) -> tuple[list[int], list[int], float]:
    """PyTorch `generate` vs the runtime's decoder over the exported graph: greedy tokens and the worst
    prompt-logit gap. `decoder` has the runtime's `empty_cache(batch)` / `step(...)` interface, or is a function
    that opens one. With `past_window` a sliding-window model is also checked on prompts that cross its window
    (`check_prompts`); the tokens returned are the first mismatching prompt's, or all of them.

    `model` may be a one-item list the check takes the model out of: PyTorch's tokens and logits for every prompt
    come first, then `release()` (which drops the caller's cached model) runs before the decoder is opened, so
    the PyTorch weights and the runtime's never sit in memory together (docs/decisions/0183-models-past-2gb.md).
    """
    if isinstance(model, list):
        model = model.pop()
    prompts = check_prompts(model, tokenizer, tokens) if past_window else [tokenizer(SAMPLE_PROMPT)["input_ids"]]
    references = [_reference(model, prompt, tokens) for prompt in prompts]
    del model
    if release is not None:
        release()
    if not hasattr(decoder, "step"):
        decoder = decoder()
    want, got, diff = [], [], 0.0
    for prompt, (w, reference, eos) in zip(prompts, references):
        g, d = _decode(decoder, prompt, tokens, reference, eos)
        diff = max(diff, d)
        if w != g:
            return w, g, diff
        want, got = want + w, got + g
    return want, got, diff


def _reference(model, prompt: list[int], tokens: int):
    """PyTorch's greedy tokens, prompt logits and end-of-sequence ids for one prompt."""
    import torch

    ids = torch.tensor([prompt], dtype=torch.long)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                              do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
        reference = model(input_ids=ids, attention_mask=mask).logits.float().numpy()  # a bf16 model too
    # min_new_tokens makes `generate` mask the end-of-sequence ids at every step; the loop below masks the same
    # ones, or a trained model that wants to stop would fail the check on a token PyTorch was not allowed to pick.
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return want, reference, eos


def _decode(decoder, prompt: list[int], tokens: int, reference, eos: list[int]) -> tuple[list[int], float]:
    import numpy as np

    ids = np.array([prompt], dtype=np.int64)
    mask = np.ones_like(ids)
    length, got = ids.shape[1], []
    try:
        positions = np.arange(length, dtype=np.int64)[None]
        every, _ = decoder.step(ids, mask, positions, decoder.empty_cache(1), all_logits=True)
        # The decode below starts from the prefill the runtime runs: the last position's logits only.
        logits, cache = decoder.step(ids, mask, positions, decoder.empty_cache(1))
        diff = max(float(np.abs(every - reference).max()), float(np.abs(logits - reference[:, -1]).max()))
        got.append(_greedy(logits[0], eos))
        for step in range(1, tokens):
            total = length + step
            logits, cache = decoder.step(np.array([[got[-1]]], np.int64), np.ones((1, total), np.int64),
                                         np.array([[total - 1]], np.int64), cache)
            got.append(_greedy(logits[0], eos))
    except Exception as exc:  # a runtime that cannot run its own graph: a failed export, said in one line
        raise ExportError(f"the exported graph fails at {length + len(got)} tokens (a {length}-token prompt, "
                          f"{len(got)} generated): {first_line(exc)}") from exc
    return got, diff


def _greedy(logits, eos: list[int]) -> int:
    logits = logits.astype("float32", copy=True).reshape(-1)
    logits[eos] = float("-inf")
    return int(logits.argmax())


def raise_on_mismatch(want: list[int], got: list[int], diff: float, what: str) -> None:
    if want != got:
        first = next(i for i, (w, g) in enumerate(zip(want, got)) if w != g)
        raise ExportError(f"exported graph's greedy tokens differ from PyTorch's generate at token {first} "
                          f"(PyTorch {want}, {what} {got}; max logit difference {diff:.2e})")
