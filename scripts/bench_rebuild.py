#!/usr/bin/env python
"""How much of a build the stage cache saves: a first build, then rebuilds with one thing changed.

    python scripts/bench_rebuild.py                 # 5 rounds on the default model, --target cpu
    python scripts/bench_rebuild.py --rounds 3 --markdown

Each round uses a fresh, empty cache folder and runs three `hfexport build` processes in turn:
(1) the default recipe on an empty cache, (2) the same recipe with only its gates changed, (3) the same
recipe with only the last pass changed (the quantize pass's `reduce_range` flipped, so its model differs).
Each process is timed from its start to the moment validation starts (read from `--log-format json`
progress events) and then stopped: validation measures this host now and is never reused, so the cache
cannot shorten it. Ratios are to build 1 of the same round; the table gives medians. Check `uptime`
first: on a busy machine the fixed start-up grows and every ratio with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

_REPO = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="hub id or folder [default: all-MiniLM-L6-v2]")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--recipe", default="default", help="the recipe whose copies are rebuilt")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args()


def variants(recipe_path: Path, folder: Path) -> dict[str, Path]:
    """The three recipes of a round: as shipped, gates only changed, last pass only changed."""
    recipe = yaml.safe_load(recipe_path.read_text())
    gates = dict(recipe, gates={**(recipe.get("gates") or {}), "cosine_min": 0.95, "cosine_mean": 0.99})
    last = dict(recipe["passes"][-1])
    last["reduce_range"] = not last.get("reduce_range", _host_reduce_range())
    changed = dict(recipe, passes=[*recipe["passes"][:-1], last])
    out = {}
    for name, body in (("first", recipe), ("gates", gates), ("last_pass", changed)):
        out[name] = folder / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(body, sort_keys=False))
    return out


def _host_reduce_range() -> bool:
    from hfexport.profiles import load_target

    return load_target("cpu").effective_isa() not in ("avx512_vnni", "amx", "arm64")


def time_to_validation(args, recipe: Path, output: Path, cache: Path) -> dict:
    """Process start to the validate event; the process is stopped there."""
    command = [sys.executable, "-m", "hfexport.cli", "build", "--target", args.target, "--recipe", str(recipe),
               "--output", str(output), "--log-format", "json", "--no-gates", "--force"]
    if args.model:
        command += ["--model", args.model]
    env = dict(os.environ, HFEXPORT_CACHE_DIR=str(cache))
    started = time.time()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                               cwd=_REPO)
    passes: dict[str, dict] = {}
    try:
        for line in process.stderr:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "done" and event.get("step") != "validate":
                passes[event["step"]] = {"seconds": event["seconds"], "cached": event.get("cached", False)}
            if event.get("event") == "start" and event.get("step") == "validate":
                return {"seconds": round(event["time"] - started, 2), "passes": passes}
            if event.get("event") == "error":
                raise SystemExit(f"{recipe.name}: the build failed: {event['message']}")
        raise SystemExit(f"{recipe.name}: the build ended before validation (exit {process.wait()})")
    finally:
        process.kill()
        process.wait()


def main() -> int:
    args = _parse()
    from hfexport.recipes import load_recipe  # noqa: F401 - fails early outside the project's environment

    recipe_path = _REPO / "recipes" / f"{args.recipe}.yaml"
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as temp:
        temp = Path(temp)
        recipes = variants(recipe_path, temp)
        print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
        for number in range(args.rounds):
            cache = temp / f"cache-{number}"
            row = {"load": round(os.getloadavg()[0], 2)}
            for name, recipe in recipes.items():
                row[name] = time_to_validation(args, recipe, temp / f"bundle-{name}", cache)
            for name in ("gates", "last_pass"):
                row[f"{name}_ratio"] = round(row[name]["seconds"] / row["first"]["seconds"], 3)
            rounds.append(row)
            print(f"round {number + 1} (load {row['load']}): first {row['first']['seconds']} s, gates only "
                  f"{row['gates']['seconds']} s ({row['gates_ratio']}), last pass only {row['last_pass']['seconds']}"
                  f" s ({row['last_pass_ratio']})", file=sys.stderr)
    median = {name: statistics.median(r[name]["seconds"] for r in rounds) for name in ("first", "gates", "last_pass")}
    ratios = {name: statistics.median(r[f"{name}_ratio"] for r in rounds) for name in ("gates", "last_pass")}
    spread = {name: (min(r[f"{name}_ratio"] for r in rounds), max(r[f"{name}_ratio"] for r in rounds))
              for name in ("gates", "last_pass")}
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "median_seconds": median, "median_ratio": ratios}, indent=1))
    if args.markdown:
        print("| build | start to validation (median) | ratio to the first build (median, range) |")
        print("|---|---|---|")
        print(f"| first, empty cache | {median['first']:.1f} s | 1 |")
        for name, label in (("gates", "gates only changed"), ("last_pass", "last pass only changed")):
            low, high = spread[name]
            print(f"| {label} | {median[name]:.1f} s | {ratios[name]:.2f} ({low:.2f}-{high:.2f}) |")
    else:
        print(json.dumps({"median_seconds": median, "median_ratio": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
