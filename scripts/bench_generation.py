#!/usr/bin/env python
"""Text generation, side by side in one process: PyTorch `generate` vs text-generation bundles.

    python scripts/bench_generation.py                 # the issue's model: random Llama, 4 x 512, vocab 32000
    python scripts/bench_generation.py --recipes llm-fp32 llm-int4 --new-tokens 64 --runs 5 --markdown
    python scripts/bench_generation.py --recipes openvino:llm-fp32 openvino:llm-int4 --markdown   # openvino
    python scripts/bench_generation.py --train-data train.txt --train-steps 1500   # the same model, trained first

A recipe whose export pass is export_openvino_generation builds for the openvino target, any other for
cpu (ONNX Runtime); both kinds can share one run. Each bundle's size is also given against the fp32
bundle of its own target (llm-fp32 or openvino:llm-fp32) when that is in the run.

Builds each recipe's bundle from a random-init model (nothing is downloaded), then times every side
in alternating blocks: time to first token on a `--prompt-tokens` prompt, and a full greedy run of
`--new-tokens` tokens (EOS suppressed) from which decode tokens/s is (new tokens - 1) / (full - TTFT).
Fidelity is against PyTorch fp32 on the shipped evaluation text: top-1 next-token agreement and
perplexity, teacher-forced, and greedy-token equality on 8 prompts. Random weights have flat logits,
so for quantised bundles these numbers check the arithmetic, not the quality of a real model.

`--train-data FILE --train-steps N` first trains that model as a causal LM on a local text file (no
download: `scripts/make_train_text.py` writes one), so its logits have the margins a real model's have and
top-1 agreement says what int4 rounding costs a model that has learnt something (1,500 steps: 30-55
minutes on 2 cores with bf16 matmul, training loss 10.5 -> 3.1-3.2; an AVX2-only host trains in fp32: 300 steps
at batch 8 took 11 min, loss 4.06).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["llm-fp32", "llm-int4"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="full generations per side (TTFT gets 4x)")
    parser.add_argument("--windows", type=int, default=32, help="evaluation windows for top-1 and perplexity")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--train-data", type=Path, default=None, help="text file to train the model on first")
    parser.add_argument("--train-steps", type=int, default=1500, help="with --train-data: optimiser steps")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the model and bundles here; bundles already there are reused")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args()


def make_model(folder: Path, layers: int, hidden: int, vocab: int) -> Path:
    """A random-init Llama with a byte-level BPE tokenizer trained on the shipped corpus."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    from hfexport.data import default_calibration_texts

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(default_calibration_texts(), vocab_size=min(vocab, 4000),
                            special_tokens=["<|endoftext|>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                                     eos_token="<|endoftext|>", model_max_length=2048)
    tokenizer.save_pretrained(str(folder))
    # Llama's MLP ratio (11008 / 4096), 64-wide heads.
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 43 // 16,
                                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                      num_key_value_heads=hidden // 64, max_position_embeddings=2048,
                                      bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def train_model(folder: Path, data: Path, steps: int, sequence: int = 64, batch: int = 32) -> None:
    """Train the saved model in place as a causal LM on `data` (one text per line): random windows of the
    concatenated token stream, AdamW at 1e-3 with 100 warm-up steps and cosine decay, seeded; bf16 autocast where
    the CPU has bf16 matmul (AVX512-BF16 or AMX), fp32 elsewhere: on an AVX2-only host one bf16 step of the bench
    model took 202 s, an fp32 one ~2.4 s (batch 8)."""
    import contextlib
    import math

    import torch
    import transformers

    from hfexport.host import cpu_flags

    bf16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    stream = []
    for line in data.read_text(encoding="utf-8").splitlines():
        if line.strip():
            stream += tokenizer(line.strip())["input_ids"] + [tokenizer.eos_token_id]
    stream = torch.tensor(stream)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    generator = torch.Generator().manual_seed(0)
    model.train()
    started, losses = time.perf_counter(), []
    for step in range(steps):
        starts = torch.randint(0, len(stream) - sequence - 1, (batch,), generator=generator)
        ids = torch.stack([stream[s:s + sequence] for s in starts])
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"training step {step + 1}/{steps}  loss {loss.item():.3f}  "
                  f"{time.perf_counter() - started:.0f}s", file=sys.stderr)
    model.eval().save_pretrained(str(folder))
    (folder / "training.json").write_text(json.dumps(
        {"data": str(data), "tokens": len(stream), "steps": steps, "seconds": time.perf_counter() - started,
         "precision": "bf16" if bf16 else "fp32",
         "loss_first": losses[0], "loss_last_100": sum(losses[-100:]) / len(losses[-100:])}))


def target_of(spec: str) -> tuple[str, str]:
    """(target, recipe) of a `--recipes` entry: `TARGET:RECIPE`, or a recipe alone for cpu (the deprecated
    openvino-* names still mean the openvino target)."""
    target, _, recipe = spec.rpartition(":")
    if not target:
        target = "openvino" if recipe.startswith("openvino-") else "cpu"
    return target, recipe


def main() -> int:
    args = _parse()
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from hfexport.api import build
    from hfexport.data import default_eval_texts, token_windows
    from hfexport.loading import load_torch_model, resolve_model
    from hfexport.progress import Progress
    from hfexport.runtime import load
    from hfexport.validation.generation import (
        BundleGeneration,
        TorchGeneration,
        generation_fidelity,
        peak_rss_mb,
        perplexity,
    )
    from hfexport.validation.timing import time_alternating

    torch.set_num_threads(args.threads)
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="hfexport-bench-gen-"))
    model_dir = scratch / "model"
    if not (model_dir / "config.json").is_file():
        make_model(model_dir, args.layers, args.hidden, args.vocab)
        if args.train_data:
            train_model(model_dir, args.train_data, args.train_steps)
    training = model_dir / "training.json"
    bundles, build_seconds, targets = {}, {}, {}
    for entry in args.recipes:
        target, recipe = target_of(entry)
        # a shipped recipe's name, or a recipe file's, with its target unless cpu
        name = Path(recipe).stem if target == "cpu" else f"{target}:{Path(recipe).stem}"
        targets[name] = target
        if (scratch / name.replace(":", "-") / "manifest.json").is_file():
            bundles[name] = scratch / name.replace(":", "-")
            continue
        print(f"building {name} ...", file=sys.stderr)
        started = time.perf_counter()
        # Gates off: the point is to measure; a random model's int4 top-1 is reported, not enforced.
        build(str(model_dir), target=targets[name], recipe=recipe, output=scratch / name.replace(":", "-"), threads=args.threads,
              gates=False, progress=Progress("quiet"))
        build_seconds[name] = time.perf_counter() - started
        bundles[name] = scratch / name.replace(":", "-")

    model = load_torch_model(resolve_model(str(model_dir)))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    generators = {name: load(path, threads=args.threads) for name, path in bundles.items()}
    first = next(iter(generators.values()))
    runners = {"pytorch": TorchGeneration(model, first.eos_token_ids, first.pad_token_id),
               **{name: BundleGeneration(g) for name, g in generators.items()}}

    windows = token_windows(tokenizer, default_eval_texts(), args.windows, args.prompt_tokens * 4)
    prompts = [w[:args.prompt_tokens] for w in windows[:8]]
    ref = runners["pytorch"]
    ref_logits = [ref.logits(w) for w in windows]
    ref_greedy = [ref.greedy(p, args.new_tokens) for p in prompts]
    ref_ppl = perplexity(ref_logits, windows)
    fidelity = {name: generation_fidelity(ref_logits, [r.logits(w) for w in windows], windows, ref_greedy,
                                          [r.greedy(p, args.new_tokens) for p in prompts], ref_ppl)
                for name, r in runners.items() if name != "pytorch"}

    prompt = prompts[0]
    ttft = time_alternating({k: (lambda r=r: r.timed(prompt, 1)) for k, r in runners.items()}, args.runs * 4)
    full = time_alternating({k: (lambda r=r: r.timed(prompt, args.new_tokens)) for k, r in runners.items()},
                            args.runs, warmup=1)
    rows = []
    sizes = {name: sum((path / f).stat().st_size for f in json.loads((path / "manifest.json").read_text())
                       ["model_files"]) for name, path in bundles.items()}
    sizes["pytorch"] = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    for name in runners:
        first_ms = float(np.median(ttft[name]))
        full_ms = float(np.median(full[name]))
        rows.append({"path": name, "ttft_ms": first_ms, "prefill_tok_s": args.prompt_tokens / first_ms * 1000,
                     "decode_tok_s": (args.new_tokens - 1) / (full_ms - first_ms) * 1000,
                     "end_to_end_tok_s": args.new_tokens / full_ms * 1000, "size_mb": sizes[name] / 1e6,
                     "build_s": build_seconds.get(name), **fidelity.get(name, {})})
    if not args.no_memory:
        paths = {"pytorch": model_dir, **bundles}
        for row in rows:
            side = "pytorch" if row["path"] == "pytorch" else "bundle"
            row["peak_rss_mb"] = peak_rss_mb(side, paths[row["path"]], args.threads, args.new_tokens)
    base = rows[0]
    fp32_names = {"cpu": "llm-fp32", "openvino": "openvino:llm-fp32"}
    for row in rows:
        row["decode_vs_pytorch"] = row["decode_tok_s"] / base["decode_tok_s"]
        fp32_size = sizes.get(fp32_names.get(targets.get(row["path"]), ""))
        row["size_vs_fp32_bundle"] = sizes[row["path"]] / fp32_size if fp32_size else None
        row["target"] = targets.get(row["path"])
    result = {"model": {"layers": args.layers, "hidden": args.hidden, "vocab": args.vocab,
                        "training": json.loads(training.read_text()) if training.is_file() else None},
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "threads": args.threads,
              "reference_perplexity": ref_ppl, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        print(_markdown(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def _markdown(result: dict) -> str:
    def f(value, fmt):
        return "" if value is None else format(value, fmt)

    trained = result["model"].get("training")
    kind = (f"Llama trained {trained['steps']} steps (loss {trained['loss_last_100']:.2f})" if trained
            else "random Llama")
    lines = [f"{kind} {result['model']['layers']} x {result['model']['hidden']}, vocab "
             f"{result['model']['vocab']}; {result['prompt_tokens']}-token prompt, {result['new_tokens']} new tokens, "
             f"{result['threads']} threads; PyTorch perplexity {result['reference_perplexity']:.1f}", "",
             "| path | TTFT ms | prefill tok/s | decode tok/s | decode vs PyTorch | size MB | size vs fp32 bundle "
             "| peak RSS MB | greedy = PyTorch | top-1 vs PyTorch | perplexity ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['path']} | {r['ttft_ms']:.1f} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.0f} | "
                     f"{r['decode_vs_pytorch']:.2f}x | {r['size_mb']:.1f} | {f(r['size_vs_fp32_bundle'], '.2f')} | "
                     f"{f(r.get('peak_rss_mb'), '.0f')} | "
                     f"{f(r.get('greedy_agreement'), '.2f')} | {f(r.get('top1_agreement'), '.3f')} | "
                     f"{f(r.get('perplexity_ratio'), '.4f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
