"""What keeping the whole KV cache of sliding-window layers costs (docs/decisions/0160-sliding-window-full-cache.md).

hfexport's generation graph keeps every layer's past and applies a Gemma-style window in the mask; transformers'
PyTorch cache crops sliding layers to the window. This script builds a Gemma-3-shaped random-init model (most
layers sliding), exports it with hfexport (ONNX, cpu target), and at several past lengths reports:

- the KV cache bytes per sequence: the bundle's full cache against a cropped one (exact, from the shapes);
- the time of one decode step: the bundle (ONNX Runtime) and PyTorch eager with transformers' cropping cache
  and with a full cache of the same model, medians over --runs steps.

    python scripts/bench_sliding_window.py --window 128 --lengths 128 512 2048 --out bench-sliding.json

Timings mean something only on an otherwise idle host; the script records the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_model(folder: Path, *, layers: int, hidden: int, window: int, full_every: int, positions: int) -> Path:
    """A Gemma3 text model: one full-attention layer every `full_every`, the rest sliding; byte-level BPE."""
    import torch
    import transformers

    from tests.conftest import _llm_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _llm_tokenizer(folder)
    types = ["full_attention" if (i + 1) % full_every == 0 else "sliding_attention" for i in range(layers)]
    config = transformers.Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=hidden // 4, sliding_window=window,
        layer_types=types, max_position_embeddings=positions, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    torch.manual_seed(0)
    transformers.Gemma3ForCausalLM(config).save_pretrained(str(folder))
    return folder


def _median_ms(step, runs: int) -> float:
    step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def measure(folder: Path, bundle: Path, lengths: list[int], runs: int) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from hfexport.runtime.backends.onnxruntime import open_session

    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    decoder = open_session(bundle / "model.onnx", {"execution_providers": ["CPUExecutionProvider"]}).decoder()
    rows = []
    for length in lengths:
        rows.append(_one_length(model, decoder, length, runs))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _one_length(model, decoder, length: int, runs: int) -> dict:
    """One decode step after `length` tokens: the bundle, and PyTorch with a cropped and with a full cache."""
    import numpy as np
    import torch
    from transformers import DynamicCache

    from hfexport.backends._generation_graph import full_layers

    config = model.config
    ids = torch.randint(0, config.vocab_size, (1, length))
    caches = {"cropped": DynamicCache(config=config), "full": full_layers(DynamicCache(config=config))}
    with torch.inference_mode():
        for cache in caches.values():
            model(input_ids=ids, past_key_values=cache, use_cache=True)
    _, past = decoder.step(ids.numpy(), np.ones((1, length), np.int64), np.arange(length)[None],
                           decoder.empty_cache(1))
    token, mask, position = np.array([[1]]), np.ones((1, length + 1), np.int64), np.array([[length]])

    def torch_step(kind: str) -> None:
        # a fresh copy per step: the cache grows in place, and each timed step must start at `length`
        cache = DynamicCache(config=config)
        if kind == "full":
            full_layers(cache)
        for i, (layer, source) in enumerate(zip(cache.layers, caches[kind].layers)):
            cache.update(source.keys, source.values, i)
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = source.cumulative_length
        with torch.inference_mode():
            model(input_ids=torch.tensor(token), attention_mask=torch.tensor(mask), past_key_values=cache,
                  position_ids=torch.tensor(position), use_cache=True)

    sliding = sum(t == "sliding_attention" for t in config.layer_types)
    per_token = 2 * config.num_key_value_heads * config.head_dim * 4  # K and V, fp32
    return {
        "past": length,
        "kv_bytes_full": config.num_hidden_layers * (length + 1) * per_token,
        "kv_bytes_cropped": ((config.num_hidden_layers - sliding) * (length + 1)
                             + sliding * min(length + 1, config.sliding_window)) * per_token,
        "bundle_step_ms": _median_ms(lambda: decoder.step(token, mask, position, past), runs),
        "torch_cropped_step_ms": _median_ms(lambda: torch_step("cropped"), runs),
        "torch_full_step_ms": _median_ms(lambda: torch_step("full"), runs),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--full-every", type=int, default=6, help="one full-attention layer in this many")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from hfexport.api import build
    from hfexport.progress import Progress

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "model", layers=args.layers, hidden=args.hidden, window=args.window,
                            full_every=args.full_every, positions=max(args.lengths) + 64)
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(json.dumps({"schema_version": 1, "passes": [{"type": "export"}], "gates": {},
                                      "evaluation": {"samples": 8, "latency_runs": 5, "sequence_length": 8,
                                                     "generation_tokens": 4}}))
        build(str(folder), recipe=str(recipe), output=Path(tmp) / "bundle", progress=Progress("quiet"),
              gates=False, validation="quick")
        result = {"settings": vars(args) | {"out": str(args.out)},
                  "rows": measure(folder, Path(tmp) / "bundle", args.lengths, args.runs)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
