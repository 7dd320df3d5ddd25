#!/usr/bin/env python
"""hfexport's LLM bundles against the engines users would pick instead, side by side on this machine (issue 17).

    python scripts/bench_peers_llm.py --dry-run              # the plan: virtual environments, builds, timings
    python scripts/bench_peers_llm.py --markdown             # everything: build, fidelity, timings, the table
    python scripts/bench_peers_llm.py --sides "hfexport cpu llm-int4" "onnxruntime-genai int4" --threads 2

The model is one local Llama folder: by default scripts/bench_generation.py's bench model (random-init Llama
4 x 512, vocab 32000, its byte-level BPE tokenizer; made with its make_model), else `--model FOLDER`
(e.g. the same model trained with `bench_generation.py --train-data`). Sides:

- hfexport: cpu llm-fp32 and llm-int4 (ONNX Runtime), openvino llm-int4 and llm-fp32, built with
  hfexport.api.build (gates off, quick validation) and run by hfexport.runtime.load.
- onnxruntime-genai 0.18, fp32 and int4: its model builder (`python -m onnxruntime_genai.models.builder -i
  MODEL -o OUT -p fp32|int4 -e cpu`), run with og.Generator.
- openvino-genai 2026.4 int4: optimum-intel's `optimum-cli export openvino --weight-format int4` (the
  defaults, plus `--group-size-fallback adjust`: the default group of 128 does not divide the MLP's 1376
  and NNCF refuses without it), run with openvino_genai.LLMPipeline. optimum-intel pins another
  transformers than hfexport, hence its own environment (torchvision is removed from it: the wheel pip picks
  does not match the local torch and breaks the import).
- llama.cpp q8_0 and q4_K_M: the llama.cpp sources' convert_hf_to_gguf.py (from the llama-cpp-python sdist,
  never built) writes an f32 GGUF, llama_model_quantize (through cyllama, a prebuilt wheel: no compile)
  quantises it, cyllama runs it. cyllama 0.7 needs Python >= 3.12, so this environment is made with a
  python3.12 from PATH or pyenv. Two shims, both in the conversion only: the tokenizer_config's
  transformers-5 class name is read as PreTrainedTokenizerFast by the converter's transformers 4.57, and an
  unrecognised byte-level BPE pre-tokenizer (a locally trained tokenizer has no registered hash) is given
  llama.cpp's "gpt-2" pre-tokenizer, which is the same ByteLevel regex.

Each peer has its own virtual environment under --venvs (made on demand, then reused; torch is pinned to the
local CPU wheel torch==2.13.0). Artifacts are built once under --work and reused. Measured here (2 cores, other
jobs running): `--markdown` with the venvs and builds made took 485 s (54 timer processes, fidelity, the
PyTorch reference); the first run, building the 4 hfexport bundles and the q4_K_M GGUF as well, 433 s (the
load differed); each virtual environment takes ~3-4 min to make.

Timing, every side the same: fresh processes, alternating the order of sides, --processes per side and
thread count; ONNX Runtime's spinning is off (hfexport's cpu bundles and onnxruntime-genai). Each process
times, after one warm-up, --runs rounds of: a 1-token generation (time to first token) on a --prompt-tokens
prompt, a --new-tokens greedy generation with EOS suppressed, another 1-token generation. TTFT is the median of
the 1-token runs (with --sample the generations sample, every engine with its own sampler at temperature 0.6,
top-k 50, top-p 0.9, a fixed seed); decode tokens/s = (new tokens - 1) / the median over rounds of (full - the
round's mean TTFT), paired so that drift in the machine's speed cancels (timed in separate blocks,
onnxruntime-genai's decode read 1.4x too fast in one process: its prefill, LM head over every prompt position, is
half its full generation).
The table gives medians over processes and their range.

`--paired` adds a second table: each hfexport side against its peer on the same runtime library (PAIRS: cpu
fp32 and int4 against onnxruntime-genai's, openvino int4 against openvino-genai's: the default, bf16 on a CPU
with native bf16 as openvino-genai computes, and the same bundle in f32), both in one process of the
peer's environment with hfexport on PYTHONPATH (one onnxruntime or OpenVINO build for both), --paired-runs rounds
each, alternating and flipping the order each round; the ratio is the median of the per-round decode ratios. On
this 2-core VM the same engine varied up to 1.5x between fresh processes (onnxruntime-genai int4 at 2 threads:
517-853 tok/s across 5 processes), so the fresh-process table cannot resolve gaps under ~15%; the paired one can.

Fidelity, the same for all sides, against PyTorch fp32 (transformers, eager) on --prompts prompts of
--prompt-tokens tokens cut from the shipped evaluation text. PyTorch's reference continuation is its plain
greedy argmax for --new-tokens tokens (EOS not stopping it).
- greedy = PyTorch: share of prompts whose own greedy --new-tokens tokens equal PyTorch's, and the mean
  length of the common prefix.
- teacher-forced top-1: the share of positions t where the side's next-token argmax, given the prompt and
  PyTorch's tokens up to t, equals PyTorch's token t+1. How each side's argmax is obtained:
  hfexport: the bundle's own decoder through the KV cache (runtime decoder.step: the prompt, then one token a
  step); onnxruntime-genai: og.Generator.append_tokens (the prompt, then one token at a time) and
  get_logits(); llama.cpp: llama_decode of the prompt, then one token a call, and llama_get_logits_ith(-1);
  openvino-genai exposes no logits: LLMPipeline.generate(prompt + PyTorch's first t tokens,
  max_new_tokens=1) for every t (a fresh prefill per position). Each side's own greedy run uses the same
  step path (argmax of each step's logits, fed back) except openvino-genai (generate with ignore_eos).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    name: str  # also its virtual environment's folder name
    packages: tuple[str, ...]
    python: str | None = None  # "3.12": the interpreter version its wheels need; None: this one
    remove: tuple[str, ...] = ()  # pip uninstall after the install
    sources: str | None = None  # an sdist whose llama.cpp conversion scripts are unpacked (never built)


PEERS = {
    "onnxruntime-genai": Peer("onnxruntime-genai", ("torch==2.13.0", "onnxruntime-genai==0.18.0", "transformers",
                                                    "onnx", "onnx-ir")),
    "openvino-genai": Peer("openvino-genai", ("torch==2.13.0", "openvino-genai==2026.4.1.0",
                                              "optimum-intel[openvino]==2.2.0"), remove=("torchvision",)),
    "llama-cpp": Peer("llama-cpp", ("cyllama==0.7.0", "torch==2.13.0", "transformers==4.57.6", "sentencepiece",
                                    "numpy"), python="3.12", sources="llama-cpp-python==0.3.36"),
}


@dataclass(frozen=True)
class Side:
    name: str
    peer: str | None  # None: hfexport, in this interpreter
    kind: str  # the timer's engine: hfexport, ortgenai, ovgenai, llamacpp
    artifact: str  # folder (or file) under --work
    how: str


SIDES = {s.name: s for s in [
    Side("hfexport cpu llm-fp32", None, "hfexport", "hfexport-cpu-llm-fp32", "hfexport build --target cpu --recipe llm-fp32"),
    Side("hfexport cpu llm-int4", None, "hfexport", "hfexport-cpu-llm-int4", "hfexport build --target cpu --recipe llm-int4"),
    Side("hfexport openvino llm-int4", None, "hfexport", "hfexport-openvino-llm-int4",
         "hfexport build --target openvino --recipe llm-int4"),
    Side("hfexport openvino llm-fp32", None, "hfexport", "hfexport-openvino-llm-fp32",
         "hfexport build --target openvino --recipe llm-fp32"),
    # The llm-int4 bundle run in f32: the target's int4 LLMs compute bf16 where the CPU has it natively (as
    # openvino-genai does by default); this side shows what f32 compute costs and keeps (decision 0197).
    Side("hfexport openvino llm-int4 f32", None, "hfexport-f32", "hfexport-openvino-llm-int4",
         "hfexport build --target openvino --recipe llm-int4; load(..., session_overrides={'openvino': "
         "{'inference_precision': 'f32'}})"),
    Side("onnxruntime-genai fp32", "onnxruntime-genai", "ortgenai", "ortgenai-fp32",
         "python -m onnxruntime_genai.models.builder -i MODEL -o OUT -p fp32 -e cpu"),
    Side("onnxruntime-genai int4", "onnxruntime-genai", "ortgenai", "ortgenai-int4",
         "python -m onnxruntime_genai.models.builder -i MODEL -o OUT -p int4 -e cpu"),
    Side("openvino-genai int4", "openvino-genai", "ovgenai", "ovgenai-int4",
         "optimum-cli export openvino --model MODEL --task text-generation-with-past --weight-format int4 "
         "--group-size-fallback adjust OUT"),
    Side("llama.cpp q8_0", "llama-cpp", "llamacpp", "llamacpp/model-q8_0.gguf",
         "convert_hf_to_gguf.py --outtype f32, then llama_model_quantize Q8_0"),
    Side("llama.cpp q4_K_M", "llama-cpp", "llamacpp", "llamacpp/model-q4_K_M.gguf",
         "convert_hf_to_gguf.py --outtype f32, then llama_model_quantize Q4_K_M"),
]}

# --paired: hfexport's side and the peer on the same runtime library, timed in one process (the peer's environment,
# hfexport on PYTHONPATH: one onnxruntime or OpenVINO for both), whole rounds alternating.
# --sample: a chat's usual settings, in transformers' order (temperature, top-k, top-p) for every engine.
SAMPLING = {"temperature": 0.6, "top_k": 50, "top_p": 0.9, "seed": 0}
PAIRS = [("hfexport cpu llm-fp32", "onnxruntime-genai fp32"), ("hfexport cpu llm-int4", "onnxruntime-genai int4"),
         ("hfexport openvino llm-int4", "openvino-genai int4"), ("hfexport openvino llm-int4 f32", "openvino-genai int4")]

# Run in the llama-cpp environment: argv = llama.cpp source folder, model folder, output GGUF (f32).
_GGUF_CONVERT = r'''
import json, runpy, sys
from pathlib import Path

source, model, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
sys.path[:0] = [str(source), str(source / "gguf-py")]
import conversion.base as base

original = base.TextModel.get_vocab_base_pre


def pre_tokenizer(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:  # no registered hash: a byte-level BPE is GPT-2's regex, anything else stays an error
        spec = json.loads((Path(self.dir_model) / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
        if spec.get("type") == "ByteLevel" and spec.get("use_regex", True):
            return "gpt-2"
        raise


base.TextModel.get_vocab_base_pre = pre_tokenizer
stage = out.parent / "hf-stage"  # the model folder as links, tokenizer_config readable by transformers 4.57
stage.mkdir(parents=True, exist_ok=True)
for f in model.iterdir():
    target = stage / f.name
    if f.name == "tokenizer_config.json":
        config = json.loads(f.read_text())
        if config.get("tokenizer_class") == "TokenizersBackend":
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        target.write_text(json.dumps(config))
    elif not target.exists():
        target.symlink_to(f.resolve())
sys.argv = ["convert_hf_to_gguf.py", str(stage), "--outtype", "f32", "--outfile", str(out)]
runpy.run_path(str(source / "convert_hf_to_gguf.py"), run_name="__main__")
'''

# argv = f32 GGUF, output GGUF, llama_ftype number, its expected name
_GGUF_QUANTIZE = r'''
import sys
import cyllama.llama.llama_cpp as L

params = L.LlamaModelQuantizeParams()
params.ftype, params.nthread = int(sys.argv[3]), 2
assert L.ftype_name(params.ftype) == sys.argv[4], L.ftype_name(params.ftype)
L.model_quantize(sys.argv[1], sys.argv[2], params)
'''
_FTYPES = {"q8_0": (7, "Q8_0"), "q4_K_M": (15, "Q4_K - Medium")}  # llama.h's llama_ftype


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="local Llama folder [default: bench_generation.py's bench model, made under --work]")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES), metavar="SIDE")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per side and thread count")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds per process (two 1-token generations and one full)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4, help="prompts for greedy match and teacher-forced top-1")
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "hfexport-llm-peers",
                        help="the peers' virtual environments (made on demand, then reused)")
    parser.add_argument("--work", type=Path, default=None,
                        help="model and builds; what is there is reused [default: VENVS/work for the bench model, "
                             "VENVS/work-NAME-HASH for --model, one folder per model]")
    parser.add_argument("--paired", action="store_true",
                        help="also time each hfexport side against its peer in one process (see PAIRS), "
                             "alternating: process-to-process spread cancels")
    parser.add_argument("--paired-runs", type=int, default=10, help="rounds per side in a --paired process")
    parser.add_argument("--sample", action="store_true",
                        help=f"time sampled decoding ({', '.join(f'{k} {v}' for k, v in SAMPLING.items())}) instead "
                             "of greedy; fidelity stays greedy")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; install, build and time nothing")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.prompts < 1 or args.new_tokens < 2:
        parser.error("--processes and --prompts must be >= 1, --new-tokens >= 2")
    if args.work is None and args.model is not None:  # builds of one model are never reused for another
        digest = hashlib.sha1(str(args.model.resolve()).encode()).hexdigest()[:8]
        args.work = args.venvs / f"work-{args.model.name}-{digest}"
    args.work = args.work or args.venvs / "work"
    return args


def plan(args) -> dict:
    peers = sorted({SIDES[s].peer for s in args.sides} - {None})
    venvs = [{"peer": p, "venv": str(args.venvs / p), "python": PEERS[p].python or "this interpreter",
              "pip": list(PEERS[p].packages), "pip_uninstall": list(PEERS[p].remove),
              "sources": PEERS[p].sources, "exists": (args.venvs / p / ".ready").is_file()} for p in peers]
    return {"model": str(args.model or args.work / "model") + ("" if args.model else " (bench_generation.make_model"
                                                                 ": random Llama 4 x 512, vocab 32000)"),
            "venvs": venvs, "builds": [{"side": s, "how": SIDES[s].how, "artifact": str(args.work / SIDES[s].artifact)}
                                       for s in args.sides],
            "sides": list(args.sides), "paired": [list(pair) for pair in _pairs(args)],
            "timings": {"threads": args.threads, "processes_per_side": args.processes, "runs": args.runs,
                        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                        "decoding": dict(SAMPLING) if args.sample else "greedy",
                        "processes_total": len(args.sides) * len(args.threads) * args.processes},
            "fidelity": {"prompts": args.prompts, "reference": "PyTorch fp32 greedy argmax, EOS not stopping",
                         "metrics": ["greedy = PyTorch (share of prompts, mean common prefix)",
                                     "teacher-forced top-1 over PyTorch's sequence"]}}


def _pairs(args) -> list[tuple[str, str]]:
    return [pair for pair in PAIRS if args.paired and all(side in args.sides for side in pair)]


def _paired(args, interpreters: dict, spec: dict, env: dict) -> list[dict]:
    """Each pair in one process of the peer's interpreter, per thread count: decode tok/s, TTFT, the ratio."""
    paired_spec = args.work / "spec-paired.json"
    paired_spec.write_text(json.dumps({**spec, "runs": args.paired_runs}))
    rows = []
    for threads in args.threads:
        for ours, peer in _pairs(args):
            out = args.work / "timer-paired.json"
            sides = [SIDES[ours], SIDES[peer]]
            done = subprocess.run([interpreters[peer], str(args.work / "llm_timer.py"), "+".join(s.kind for s in sides),
                                   "+".join(str(args.work / s.artifact) for s in sides), str(threads), str(paired_spec),
                                   str(out), "0"], cwd=args.work, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: the paired timer of {ours} / {peer} failed:\n{done.stderr[-3000:]}")
            mine, theirs = json.loads(out.read_text())["paired"]
            ratios = [b / a for a, b in zip(mine["gaps"], theirs["gaps"])]  # decode speed, ours over theirs
            mine_rate, their_rate = ((args.new_tokens - 1) / s["decode_ms"] * 1000 for s in (mine, theirs))
            rows.append({"side": ours, "peer": peer, "threads": threads, "decode_tok_s": mine_rate,
                         "peer_decode_tok_s": their_rate, "ratio": statistics.median(ratios),
                         "ratio_range": [min(ratios), max(ratios)], "ttft_ms": mine["ttft_ms"],
                         "peer_ttft_ms": theirs["ttft_ms"], "rounds": args.paired_runs})
    return rows


def _python_for(version: str | None) -> str:
    if version is None:
        return sys.executable
    candidates = [shutil.which(f"python{version}"),  # a pyenv shim of an inactive version is on PATH yet fails
                  *map(str, sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")))]
    found = next((c for c in candidates if c and subprocess.run([c, "-c", ""], capture_output=True).returncode == 0),
                 None)
    if not found:
        sys.exit(f"error: the llama.cpp peer needs python{version} (cyllama's wheels): install one "
                 f"(e.g. `pyenv install {version}`) or leave the llama.cpp sides out with --sides")
    return found


def _venv_python(args, peer: Peer) -> Path:
    folder = args.venvs / peer.name
    python = folder / "bin" / "python"
    if not (folder / ".ready").is_file():
        print(f"making {folder} ({' '.join(peer.packages)}) ...", file=sys.stderr)
        subprocess.run([_python_for(peer.python), "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *peer.packages], check=True)
        if peer.remove:
            subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", *peer.remove], check=True)
        if peer.sources:
            _unpack_llama_cpp_sources(python, peer.sources, folder / "src")
        (folder / ".ready").write_text(" ".join(peer.packages))
    return python


def _unpack_llama_cpp_sources(python: Path, requirement: str, into: Path) -> None:
    """convert_hf_to_gguf.py with its conversion/ and gguf-py/ from an sdist's vendored llama.cpp."""
    subprocess.run([str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d",
                    str(into), requirement], check=True)
    sdist = next(into.glob("*.tar.gz"))
    with tarfile.open(sdist) as archive:
        wanted = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name and
                  m.name.split("/vendor/llama.cpp/", 1)[1].split("/")[0] in ("convert_hf_to_gguf.py", "conversion",
                                                                               "gguf-py")]
        for member in wanted:
            member.name = "llama.cpp/" + member.name.split("/vendor/llama.cpp/", 1)[1]
        archive.extractall(into, members=wanted, filter="data")


def _build_peer(args, side: Side, python: Path, model: Path) -> None:
    out = args.work / side.artifact
    run = lambda cmd: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=args.work)  # noqa: E731
    if side.kind == "ortgenai":
        run([str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out), "-p",
             side.artifact.split("-")[-1], "-e", "cpu", "-c", str(args.work / "ortgenai-cache")])
    elif side.kind == "ovgenai":
        run([str(python.parent / "optimum-cli"), "export", "openvino", "--model", str(model), "--task",
             "text-generation-with-past", "--weight-format", "int4", "--group-size-fallback", "adjust", str(out)])
    else:
        f32 = out.parent / "model-f32.gguf"
        if not f32.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            (args.work / "gguf_convert.py").write_text(_GGUF_CONVERT)
            run([str(python), str(args.work / "gguf_convert.py"), str(args.venvs / "llama-cpp" / "src" / "llama.cpp"),
                 str(model), str(f32)])
        (args.work / "gguf_quantize.py").write_text(_GGUF_QUANTIZE)
        number, name = _FTYPES[out.stem.split("-", 1)[1]]
        run([str(python), str(args.work / "gguf_quantize.py"), str(f32), str(out), str(number), name])


def _size_mb(side: Side, path: Path) -> float:
    if side.kind.startswith("hfexport"):
        files = [path / f for f in json.loads((path / "manifest.json").read_text())["model_files"]]
    elif side.kind == "ortgenai":
        files = list(path.glob("model.onnx*"))
    elif side.kind == "ovgenai":
        files = list(path.glob("openvino_model.*"))
    else:
        files = [path]
    return sum(f.stat().st_size for f in files) / 1e6


def _reference(model_dir: Path, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """PyTorch fp32's plain greedy continuation of each prompt (argmax every step, EOS not stopping)."""
    import torch
    import transformers

    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            step = model(input_ids=torch.tensor([prompt]), use_cache=True)
            tokens = [int(step.logits[0, -1].argmax())]
            for _ in range(new_tokens - 1):
                step = model(input_ids=torch.tensor([[tokens[-1]]]), cache=step.cache, use_cache=True)
                tokens.append(int(step.logits[0, -1].argmax()))
            out.append(tokens)
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    the_plan = plan(args)
    if args.dry_run:
        print(json.dumps(the_plan, indent=1), flush=True)
        return 0
    import numpy as np
    from transformers import AutoTokenizer

    from hfexport.api import build
    from hfexport.data import default_eval_texts, token_windows
    from hfexport.progress import Progress

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or args.work / "model"
    if not (model / "config.json").is_file():
        if args.model:
            sys.exit(f"error: --model {model}: no config.json there; give a local transformers model folder")
        sys.path.insert(0, str(_HERE))
        from bench_generation import make_model

        make_model(model, 4, 512, 32000)
    interpreters: dict[str, str] = {}
    for name in args.sides:
        side, out = SIDES[name], args.work / SIDES[name].artifact
        done = (out / "manifest.json").is_file() if side.kind.startswith("hfexport") else out.exists()
        if side.peer is None:
            interpreters[name] = sys.executable
            if not done:
                print(f"building {name} ...", file=sys.stderr)
                target, recipe = name.split()[1:3]
                with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout stays the table
                    build(str(model), target=target, recipe=recipe, output=out, gates=False, validation="quick",
                          progress=Progress("quiet"), force=True)
            continue
        python = _venv_python(args, PEERS[side.peer])
        interpreters[name] = str(python)
        if not done:
            print(f"building {name} ...", file=sys.stderr)
            _build_peer(args, side, python, model)

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = token_windows(tokenizer, default_eval_texts(), args.prompts, args.prompt_tokens)
    reference = _reference(model, prompts, args.new_tokens)
    spec = args.work / "spec.json"
    spec_values = {"timing_prompt": prompts[0], "prompts": prompts, "reference": reference,
                   "new_tokens": args.new_tokens, "runs": args.runs, "sampling": SAMPLING if args.sample else None}
    spec.write_text(json.dumps(spec_values))
    (args.work / "llm_timer.py").write_text(_TIMER)

    load_before = os.getloadavg()[0]
    times: dict[tuple[str, int], list[dict]] = {}
    fidelity: dict[str, dict] = {}
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    for threads in args.threads:
        for round_number in range(args.processes):
            order = list(args.sides) if round_number % 2 == 0 else list(reversed(args.sides))
            for name in order:
                side, out = SIDES[name], args.work / f"timer-{name.replace(' ', '-')}.json"
                done = subprocess.run([interpreters[name], str(args.work / "llm_timer.py"), side.kind,
                                       str(args.work / side.artifact), str(threads), str(spec), str(out),
                                       "1" if name not in fidelity else "0"], cwd=args.work, env=env,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"error: the timer of {name} failed ({args.work / side.artifact}):\n"
                             f"{done.stderr[-3000:]}")
                result = json.loads(out.read_text())
                times.setdefault((name, threads), []).append(result)
                if name not in fidelity:
                    fidelity[name] = _fidelity(reference, result["greedy"], result["forced"], np)
    rows = []
    for name in args.sides:
        for threads in args.threads:
            runs = times[(name, threads)]
            ttft = [r["ttft_ms"] for r in runs]
            decode = [(args.new_tokens - 1) / r.get("decode_ms", r["full_ms"] - r["ttft_ms"]) * 1000 for r in runs]
            rows.append({"side": name, "threads": threads, "ttft_ms": statistics.median(ttft),
                         "ttft_range": [min(ttft), max(ttft)], "decode_tok_s": statistics.median(decode),
                         "decode_range": [min(decode), max(decode)],
                         "size_mb": _size_mb(SIDES[name], args.work / SIDES[name].artifact), **fidelity[name]})
    paired = _paired(args, interpreters, spec_values, env) if _pairs(args) else []
    result = {"model": str(model), "load_before": load_before, "load_after": os.getloadavg()[0],
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "prompts": args.prompts,
              "sampling": SAMPLING if args.sample else None,
              "processes": args.processes, "rows": rows, "paired": paired}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(_markdown(result) if args.markdown else json.dumps(result, indent=1))
    return 0


def _fidelity(reference, greedy, forced, np) -> dict:
    prefix = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), min(len(r), len(g)))
              for r, g in zip(reference, greedy)]
    top1 = np.concatenate([np.asarray(f) == np.asarray(r) for f, r in zip(forced, reference)])
    return {"greedy_match": float(np.mean([r == g for r, g in zip(reference, greedy)])),
            "greedy_common_prefix": float(np.mean(prefix)), "top1_agreement": float(top1.mean()),
            "top1_positions": int(top1.size)}


def _markdown(result: dict) -> str:
    decoding = "greedy" if not result.get("sampling") else "sampled (" + ", ".join(
        f"{k} {v}" for k, v in result["sampling"].items()) + ")"
    lines = [f"{result['prompt_tokens']}-token prompt, {result['new_tokens']} {decoding} tokens (EOS suppressed); "
             f"medians of {result['processes']} fresh processes (range); load average {result['load_before']:.2f} "
             f"before, {result['load_after']:.2f} after; fidelity vs PyTorch fp32 on {result['prompts']} prompts", "",
             "| side | threads | TTFT ms | decode tok/s | greedy = PyTorch (common prefix) | teacher-forced top-1 "
             "| size MB |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['side']} | {r['threads']} | {r['ttft_ms']:.1f} ({r['ttft_range'][0]:.1f}-"
                     f"{r['ttft_range'][1]:.1f}) | {r['decode_tok_s']:.0f} ({r['decode_range'][0]:.0f}-"
                     f"{r['decode_range'][1]:.0f}) | {r['greedy_match']:.2f} ({r['greedy_common_prefix']:.1f} of "
                     f"{result['new_tokens']}) | {r['top1_agreement']:.3f} ({round(r['top1_agreement'] * r['top1_positions'])}"
                     f"/{r['top1_positions']}) | {r['size_mb']:.1f} |")
    if result.get("paired"):
        lines += ["", f"Same process, alternating ({result['paired'][0]['rounds']} rounds each; the peer's environment "
                  "with hfexport on PYTHONPATH): decode tok/s, ratio = median of per-round ratios (range)", "",
                  "| hfexport side | peer | threads | decode tok/s | peer tok/s | ratio | TTFT ms | peer TTFT ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["paired"]:
            lines.append(f"| {r['side']} | {r['peer']} | {r['threads']} | {r['decode_tok_s']:.0f} | "
                         f"{r['peer_decode_tok_s']:.0f} | {r['ratio']:.2f}x ({r['ratio_range'][0]:.2f}-"
                         f"{r['ratio_range'][1]:.2f}) | {r['ttft_ms']:.1f} | {r['peer_ttft_ms']:.1f} |")
    return "\n".join(lines)


# Run by each side's own interpreter: argv = kind, artifact, threads, spec.json, output json, fidelity (1/0).
_TIMER = r'''
import json, statistics, sys, time
from pathlib import Path
import numpy as np

kind, path, threads, spec_file, out_file, with_fidelity = sys.argv[1:7]
threads = int(threads)
spec = json.loads(Path(spec_file).read_text())
new, runs = spec["new_tokens"], spec["runs"]
sampling = spec.get("sampling")  # timed generations sample with these (--sample); fidelity stays greedy
last = lambda logits: int(np.asarray(logits, dtype=np.float32).reshape(-1, np.shape(logits)[-1])[-1].argmax())

def make(kind, path):
    """(generate, Stepper or None, the generate-only runner or None) of one engine."""
    if kind in ("hfexport", "hfexport-f32"):
        from hfexport.runtime import load
        onnx = any(Path(path).glob("*.onnx"))
        overrides = {"allow_spinning": False} if onnx else None
        if kind == "hfexport-f32":
            overrides = {"openvino": {"inference_precision": "f32"}}
        generator = load(path, threads=threads, session_overrides=overrides)
        decoder = generator.decoder

        options = {"do_sample": False} if not sampling else {
            "do_sample": True, "temperature": sampling["temperature"], "top_k": sampling["top_k"],
            "top_p": sampling["top_p"], "seed": sampling["seed"]}

        def generate(prompt, n):
            return len(generator.generate_ids([prompt], max_new_tokens=n, min_new_tokens=n, **options)[0])

        class Stepper:
            def __init__(self, prompt):
                self.length, self.cache = len(prompt), decoder.empty_cache(1)
                self.first = self._step(np.asarray([prompt], np.int64), 0)
            def _step(self, ids, start):
                mask = np.ones((1, start + ids.shape[1]), np.int64)
                logits, self.cache = decoder.step(ids, mask, np.arange(start, start + ids.shape[1])[None], self.cache)
                return last(logits)
            def feed(self, token):
                self.length += 1
                return self._step(np.asarray([[token]], np.int64), self.length - 1)
    elif kind == "ortgenai":
        import onnxruntime_genai as og
        config = og.Config(path)
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1, "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0"}}}}))
        model = og.Model(config)

        def _generator(length, minimum=0, sample=False):
            params = og.GeneratorParams(model)
            options = {"do_sample": False} if not sample else {
                "do_sample": True, "temperature": sampling["temperature"], "top_k": sampling["top_k"],
                "top_p": sampling["top_p"], "random_seed": sampling["seed"]}
            params.set_search_options(max_length=length, min_length=minimum, **options)
            return og.Generator(model, params)

        def generate(prompt, n):
            g = _generator(len(prompt) + n, len(prompt) + n, bool(sampling))  # min_length: EOS suppressed
            g.append_tokens(np.asarray([prompt], np.int32))
            while not g.is_done():
                g.generate_next_token()
            return len(g.get_sequence(0)) - len(prompt)

        class Stepper:
            def __init__(self, prompt):
                self.g = _generator(len(prompt) + new + 1)
                self.g.append_tokens(np.asarray([prompt], np.int32))
                self.first = last(self.g.get_logits())
            def feed(self, token):
                self.g.append_tokens(np.asarray([[token]], np.int32))
                return last(self.g.get_logits())
    elif kind == "ovgenai":
        import openvino as ov
        import openvino_genai
        # The default pipeline caches prompt prefixes: a repeated prompt's TTFT then skips the prefill (measured
        # 5.6 ms vs 56 ms for a fresh prompt). Off here, the latency-oriented scheduler otherwise as by default.
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.enable_prefix_caching, scheduler.max_num_batched_tokens = False, 2 ** 31
        pipe = openvino_genai.LLMPipeline(path, "CPU", INFERENCE_NUM_THREADS=threads, scheduler_config=scheduler)

        def _run(prompt, n, sample=False):
            config = pipe.get_generation_config()
            config.max_new_tokens, config.ignore_eos, config.do_sample = n, True, sample
            if sample:
                config.temperature, config.top_k, config.top_p = (sampling[k] for k in ("temperature", "top_k", "top_p"))
                config.rng_seed = sampling["seed"]
            ids = np.asarray([prompt], np.int64)
            return list(pipe.generate(openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids))),
                                      config).tokens[0])

        generate = lambda prompt, n: len(_run(prompt, n, bool(sampling)))
        Stepper = None
    else:
        import cyllama.llama.llama_cpp as L
        L.disable_logging()
        L.ggml_backend_load_all()
        model = L.LlamaModel(path, L.LlamaModelParams())
        params = L.LlamaContextParams()
        params.n_ctx = params.n_batch = 1024
        params.n_threads = params.n_threads_batch = threads
        ctx = L.LlamaContext(model, params)
        chain = L.LlamaSamplerChainParams()
        sampler = L.LlamaSampler(chain)
        sampler.add_greedy()
        drawing = sampler
        if sampling:  # llama.cpp's own sampler chain, in transformers' order
            drawing = L.LlamaSampler(L.LlamaSamplerChainParams())
            drawing.add_temp(sampling["temperature"])
            drawing.add_top_k(sampling["top_k"])
            drawing.add_top_p(sampling["top_p"], 1)
            drawing.add_dist(sampling["seed"])

        def generate(prompt, n):  # llama.cpp's own sampler (greedy unless --sample); EOS does not stop the loop
            ctx.kv_cache_clear()
            ctx.decode(L.llama_batch_get_one(prompt, 0))
            for i in range(n):
                token = drawing.sample(ctx, -1)
                if i < n - 1:
                    ctx.decode(L.llama_batch_get_one([token], len(prompt) + i))
            return n

        class Stepper:
            def __init__(self, prompt):
                ctx.kv_cache_clear()
                self.length = len(prompt)
                ctx.decode(L.llama_batch_get_one(prompt, 0))
                self.first = last(ctx.get_logits_ith(-1))
            def feed(self, token):
                ctx.decode(L.llama_batch_get_one([token], self.length))
                self.length += 1
                return last(ctx.get_logits_ith(-1))
    return generate, Stepper, (_run if kind == "ovgenai" else None)

result = {}
kinds, paths = kind.split("+"), path.split("+")
prompt = spec["timing_prompt"]


def timed(generate, n):
    started = time.perf_counter()
    generate(prompt, n)
    return (time.perf_counter() - started) * 1000


def rounds(generate):
    """(TTFT samples, decode gap) of one round: each full generation between two 1-token ones, so a drift in the
    machine's speed moves both sides of the difference alike (a side whose prefill is half of the full generation,
    as onnxruntime-genai's, is otherwise at the mercy of two separately timed blocks)."""
    before, full, after = timed(generate, 1), timed(generate, new), timed(generate, 1)
    return [before, after], full, full - (before + after) / 2


if len(kinds) == 1:
    generate, Stepper, _run = make(kind, path)
    if with_fidelity == "1":
        greedy, forced = [], []
        for p, ref in zip(spec["prompts"], spec["reference"]):
            if Stepper is None:  # generate only: one fresh 1-token generation per teacher-forced position
                greedy.append(_run(p, new))
                forced.append([_run(p + ref[:t], 1)[0] for t in range(new)])
                continue
            s = Stepper(p)
            tokens = [s.first]
            while len(tokens) < new:
                tokens.append(s.feed(tokens[-1]))
            greedy.append(tokens)
            s = Stepper(p)
            forced.append([s.first] + [s.feed(t) for t in ref[:new - 1]])
        result.update(greedy=greedy, forced=forced)
    made = generate(prompt, new)  # warm-up, and a check that every side makes exactly `new` tokens
    assert made == new, f"{kind} generated {made} tokens, not {new}"
    firsts, fulls, gaps = [], [], []
    for _ in range(runs):
        first, full, gap = rounds(generate)
        firsts += first
        fulls.append(full)
        gaps.append(gap)
    result.update(ttft_ms=statistics.median(firsts), full_ms=statistics.median(fulls),
                  decode_ms=statistics.median(gaps))
else:  # --paired: the engines in this one process, whole rounds alternating, the order flipped each round
    engines = [make(k, p)[0] for k, p in zip(kinds, paths)]
    for k, generate in zip(kinds, engines):
        made = generate(prompt, new)
        assert made == new, f"{k} generated {made} tokens, not {new}"
    samples = [{"firsts": [], "gaps": []} for _ in engines]
    for number in range(runs):
        for i in (range(len(engines)) if number % 2 == 0 else reversed(range(len(engines)))):
            first, _, gap = rounds(engines[i])
            samples[i]["firsts"] += first
            samples[i]["gaps"].append(gap)
    result["paired"] = [{"ttft_ms": statistics.median(s["firsts"]), "decode_ms": statistics.median(s["gaps"]),
                         "gaps": s["gaps"]} for s in samples]
Path(out_file).write_text(json.dumps(result))
'''


if __name__ == "__main__":
    sys.exit(main())
