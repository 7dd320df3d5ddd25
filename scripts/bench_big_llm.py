"""Peak build memory of a large decoder LLM (issue 20, part 1; docs/decisions/0183-models-past-2gb.md).

Makes a random-init Llama (seed fixed, in a temporary folder; defaults: hidden 2048, intermediate 5632, 12 layers,
32 heads, 4 KV heads, vocab 32000 = 2.6 GB fp32), builds it with `hfexport build` in a child process per recipe,
samples the resident memory of the child and its children (psutil, every 0.1 s), and reports per stage (the
progress events of `--log-format json`) the peak RSS, plus the time, the bundle's size and, for llm-fp32, the
torch-free bundle's greedy tokens against PyTorch `generate` on a few prompts.

    python scripts/bench_big_llm.py                                    # the 2.6 GB model, both int4 recipes
    python scripts/bench_big_llm.py --hidden 1024 --layers 6 --intermediate 2816   # ~0.5 GB, to iterate
    python scripts/bench_big_llm.py --builds cpu:llm-fp32 --parity-prompts 3

`--builds` takes target:recipe pairs (default cpu:llm-int4 openvino:llm-int4 cpu:llm-fp32). Builds run with
--no-gates --no-cache and `--validation quick` (--validation full for the full evaluation). Memory figures are
RSS sums over the process tree; time figures depend on the host's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village"]


def make_model(folder: Path, *, hidden: int, intermediate: int, layers: int, vocab: int, heads: int,
               kv_heads: int, seed: int) -> Path:
    import torch
    import transformers

    from tests.conftest import _llm_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _llm_tokenizer(folder)
    eos = tokenizer.eos_token_id
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                                      max_position_embeddings=2048, bos_token_id=eos, eos_token_id=eos,
                                      pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder))
    return folder


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


class TreeSampler:
    """Peak RSS of a process and its children, overall and between progress events."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.window_peak = 0
        self.current = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            self.current = rss
            self.peak = max(self.peak, rss)
            self.window_peak = max(self.window_peak, rss)
            time.sleep(self.interval)

    def take_window(self) -> int:
        """The peak since the last call, and a new window."""
        value = max(self.window_peak, self.current)
        self.window_peak = self.current
        return value

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_build(model: Path, target: str, recipe: str, out: Path, validation: str, log: Path) -> dict:
    command = [sys.executable, "-m", "hfexport.cli", "build", "--model", str(model), "--target", target,
               "--recipe", recipe, "--output", str(out), "--force", "--no-gates", "--no-cache",
               "--log-format", "json", "--validation", validation]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    sampler = TreeSampler(child.pid)
    stages: list[dict] = []
    errors: list[str] = []
    with open(log, "w", encoding="utf-8") as handle:
        for line in child.stderr:
            handle.write(line)
            handle.flush()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                errors.append(line.rstrip())
                continue
            kind = event.get("event")
            if kind == "start":
                sampler.take_window()  # what ran before this stage (loading) is its own row
                stages.append({"stage": event.get("step"), "label": event.get("label"), "start": time.perf_counter()})
            elif kind == "done" and stages and stages[-1]["stage"] == event.get("step"):
                stages[-1].update(seconds=event.get("seconds"), peak_rss=sampler.take_window(),
                                  rss_after=sampler.current)
            elif kind == "info":
                print(f"  [{time.perf_counter() - started:6.0f}s rss {sampler.current / 1e9:5.2f} GB] "
                      f"{event.get('message')}", flush=True)
            if kind in ("start", "done"):
                peak = f", stage peak {stages[-1]['peak_rss'] / 1e9:.2f} GB" if kind == "done" and stages else ""
                print(f"  [{time.perf_counter() - started:6.0f}s rss {sampler.current / 1e9:5.2f} GB] {kind} "
                      f"{event.get('step')} {event.get('seconds', '')}{peak}", flush=True)
    stdout = child.stdout.read()
    code = child.wait()
    sampler.stop()
    seconds = time.perf_counter() - started
    for stage in stages:
        stage.pop("start", None)
    result = {"target": target, "recipe": recipe, "returncode": code, "seconds": round(seconds, 1),
              "peak_rss": sampler.peak, "stages": stages, "bundle_bytes": folder_bytes(out) if out.is_dir() else 0,
              "model_bytes": folder_bytes(out, "model.*") if out.is_dir() else 0}
    if code != 0:
        result["error"] = (errors[-5:] or [stdout[-2000:]])
    return result


_PARITY = r"""
import json, sys
import numpy as np
bundle, model_dir, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompts = json.loads(sys.argv[4])
from hfexport.runtime import load
generator = load(bundle)
ids = [generator.encode(p) for p in prompts]
got = [generator.generate_ids([row], max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)[0] for row in ids]
del generator
import torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
want = []
with torch.inference_mode():
    for row in ids:
        x = torch.tensor([row])
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens,
                             do_sample=False, pad_token_id=0)
        want.append(out[0, x.shape[1]:].tolist())
print(json.dumps({"equal": [w == g for w, g in zip(want, got)], "want": want, "got": got}))
"""


_GENERATE = r"""
import json, sys
from hfexport.runtime import load
generator = load(sys.argv[1])
prompts, tokens = json.loads(sys.argv[2]), int(sys.argv[3])
rows = [generator.generate_ids([generator.encode(p)], max_new_tokens=tokens, min_new_tokens=tokens,
                               do_sample=False)[0] for p in prompts]
print(json.dumps({"tokens": rows, "torch_loaded": "torch" in sys.modules}))
"""


def generate(bundle: Path, tokens: int, prompts: list[str]) -> dict:
    """Greedy tokens of the bundle through the torch-free runtime, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _GENERATE, str(bundle), json.dumps(prompts), str(tokens)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parity(bundle: Path, model: Path, tokens: int, prompts: list[str]) -> dict:
    """Greedy tokens of the torch-free bundle against PyTorch `generate`, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _PARITY, str(bundle), str(model), str(tokens), json.dumps(prompts)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], model_bytes: int) -> str:
    gb = 1e9
    lines = ["| target | recipe | model fp32 | peak build RSS | ratio | time | bundle | greedy parity |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        par = r.get("parity")
        parity_text = ("-" if par is None else f"error {par['error']}" if "error" in par else
                       f"{sum(par['equal'])}/{len(par['equal'])} prompts x {r.get('parity_tokens')} tokens")
        status = "" if r["returncode"] == 0 else f" (exit {r['returncode']})"
        lines.append(f"| {r['target']} | {r['recipe']}{status} | {model_bytes / gb:.2f} GB | {r['peak_rss'] / gb:.2f} GB"
                     f" | {r['peak_rss'] / model_bytes:.2f}x | {r['seconds'] / 60:.1f} min | "
                     f"{r['bundle_bytes'] / gb:.2f} GB | {parity_text} |")
    lines += ["", "| target | recipe | stage | seconds | peak RSS in stage | RSS after |", "|---|---|---|---|---|---|"]
    for r in results:
        for s in r["stages"]:
            lines.append(f"| {r['target']} | {r['recipe']} | {s['stage']} | {s.get('seconds', '-')} | "
                         f"{s.get('peak_rss', 0) / gb:.2f} GB | {s.get('rss_after', 0) / gb:.2f} GB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=None, help="default: hidden / 64")
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--builds", nargs="+", default=["cpu:llm-int4", "openvino:llm-int4", "cpu:llm-fp32"],
                        help="target:recipe pairs")
    parser.add_argument("--validation", choices=["quick", "full"], default="quick")
    parser.add_argument("--parity-tokens", type=int, default=8)
    parser.add_argument("--parity-prompts", type=int, default=3)
    parser.add_argument("--generate-check", action="store_true",
                        help="generate from every bundle through the torch-free runtime (a fresh process)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--model", type=Path, default=None, help="reuse a model folder made before")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import shutil

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-big-llm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model = args.model
        if model is None:
            started = time.perf_counter()
            model = make_model(workdir / "model", hidden=args.hidden, intermediate=args.intermediate,
                               layers=args.layers, vocab=args.vocab, heads=args.heads or args.hidden // 64,
                               kv_heads=args.kv_heads, seed=args.seed)
            print(f"model made in {time.perf_counter() - started:.0f}s", flush=True)
        model_bytes = folder_bytes(model, "*.safetensors")
        print(f"model: {model} ({model_bytes / 1e9:.2f} GB fp32)", flush=True)
        results = []
        for pair in args.builds:
            target, recipe = pair.split(":")
            out = workdir / f"bundle-{target}-{recipe}"
            print(f"build {target} {recipe}", flush=True)
            result = run_build(model, target, recipe, out, args.validation, workdir / f"{target}-{recipe}.log")
            if args.generate_check and result["returncode"] == 0:
                result["generated"] = generate(out, args.parity_tokens, PROMPTS[: args.parity_prompts])
            if recipe == "llm-fp32" and result["returncode"] == 0:
                result["parity"] = parity(out, model, args.parity_tokens, PROMPTS[: args.parity_prompts])
                result["parity_tokens"] = args.parity_tokens
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "stages"}), flush=True)
            shutil.rmtree(out, ignore_errors=True)
        report = table(results, model_bytes)
        print(report)
        if args.out:
            args.out.write_text(json.dumps({"model_bytes": model_bytes, "results": results, "table": report},
                                           indent=2), encoding="utf-8")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
