#!/usr/bin/env python
"""Side-by-side benchmark: bundles vs PyTorch eager fp32, timed in one process, alternating rounds.

    python scripts/bench.py                               # build default, fp32 and int8-small; time them
    python scripts/bench.py --bundle minilm-cpu           # time existing bundles instead
    python scripts/bench.py --markdown                    # print the README's results table

Text in, result out on both sides (tokenisation included). Only ratios are comparable across runs:
the absolute milliseconds of PyTorch itself drift by a third between runs on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or folder [default: all-MiniLM-L6-v2]")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--recipes", nargs="+", default=["default", "fp32", "int8-small"])
    parser.add_argument("--bundle", nargs="+", default=None, help="existing bundles (skips building)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32, help="batch for throughput")
    parser.add_argument("--runs", type=int, default=100, help="batch-1 rounds (each times every side once)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args()


def main() -> int:
    args = _parse()
    import torch
    from transformers import AutoTokenizer

    from hfexport.api import build
    from hfexport.data import default_eval_texts
    from hfexport.loading import load_torch_model, resolve_model
    from hfexport.progress import Progress
    from hfexport.runtime import load
    from hfexport.runtime.manifest import read_manifest
    from hfexport.validation.encoder import PredictorRunner, TorchRunner
    from hfexport.validation.timing import text_of_length, time_alternating

    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="hfexport-bench-"))
    bundles: dict[str, Path] = {}
    build_seconds: dict[str, float] = {}
    if args.bundle:
        bundles = {Path(b).name: Path(b) for b in args.bundle}
    else:
        for recipe in args.recipes:
            print(f"building {recipe} ...", file=sys.stderr)
            started = time.perf_counter()
            build(args.model, target=args.target, recipe=recipe, output=scratch / recipe, gates=False,
                  threads=args.threads, progress=Progress("quiet"))
            build_seconds[recipe] = time.perf_counter() - started
            bundles[recipe] = scratch / recipe

    first = load(next(iter(bundles.values())), threads=args.threads)
    meta = first.manifest.model
    source = resolve_model(args.model, task=meta.task, log=lambda _m: None)
    tokenizer = AutoTokenizer.from_pretrained(str(source.local_dir))
    reference = TorchRunner(load_torch_model(source), tokenizer, meta.task, meta, source.max_length,
                            [i.name for i in first.manifest.signature.inputs])
    runners = {"pytorch": reference}
    for name, path in bundles.items():
        runners[name] = PredictorRunner(load(path, threads=args.threads), meta)

    text = [text_of_length(tokenizer, default_eval_texts(), args.sequence_length)]
    tokens = len(tokenizer(text[0])["input_ids"])
    print(f"timing batch 1 x {tokens} tokens, {args.runs} alternating rounds ...", file=sys.stderr)
    # Blocks of 20 calls, each opened by 5 untimed ones: every side is timed warm, as an app running one
    # model sees it, and machine drift still falls on every side alike.
    single = time_alternating({k: (lambda r=r: r(text)) for k, r in runners.items()}, args.runs, warmup=5,
                              block=20, settle=5)
    many = text * args.batch
    rounds = max(5, args.runs // 10)
    print(f"timing batch {args.batch}, {rounds} rounds ...", file=sys.stderr)
    batched = time_alternating({k: (lambda r=r: r(many)) for k, r in runners.items()}, rounds, warmup=1)

    base_p50 = statistics.median(single["pytorch"])
    base_tput = args.batch / (statistics.median(batched["pytorch"]) / 1000)
    rows = []
    for name in runners:
        p50 = statistics.median(single[name])
        tput = args.batch / (statistics.median(batched[name]) / 1000)
        row = {"name": name, "p50_ms": round(p50, 2), "speedup": round(base_p50 / p50, 2),
               "throughput_per_s": round(tput, 1), "throughput_ratio": round(tput / base_tput, 2)}
        if name != "pytorch":
            manifest = read_manifest(bundles[name])
            row["size_mb"] = round(manifest.model_bytes() / 1e6, 1)
            row["fidelity"] = {k: round(v, 4) for k, v in manifest.validation.summary.items()
                               if k not in ("speedup", "throughput_ratio", "size_ratio")}
            row["gates_passed"] = manifest.validation.passed
            if name in build_seconds:
                row["build_s"] = round(build_seconds[name], 1)
        else:
            row["size_mb"] = round(sum(p.stat().st_size for p in source.local_dir.glob("*.safetensors")) / 1e6, 1)
        rows.append(row)

    result = {"model": meta.id, "task": meta.task, "threads": args.threads, "tokens": tokens,
              "batch": args.batch, "runs": args.runs, "rows": rows,
              "cpu": first.manifest.build_host.cpu, "isa": first.manifest.target.isa}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        print(f"| path ({meta.id}, batch 1 x {tokens} tokens, {args.threads} threads) | p50 ms | vs PyTorch "
              f"| batch {args.batch} texts/s | vs PyTorch | size MB | fidelity (held-out) | gates |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            fid = ", ".join(f"{k} {v}" for k, v in row.get("fidelity", {}).items() if k != "similarity_spearman")
            gates = "" if row["name"] == "pytorch" else ("pass" if row["gates_passed"] else "FAIL")
            print(f"| {row['name']} | {row['p50_ms']} | {row['speedup']}x | {row['throughput_per_s']} | "
                  f"{row['throughput_ratio']}x | {row['size_mb']} | {fid or 'reference'} | {gates} |")
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
