#!/usr/bin/env python
"""hfexport against the engines users would pick instead, side by side on this machine.

    python scripts/bench_peers.py --dry-run                  # the plan: virtual environments, builds, timings
    python scripts/bench_peers.py                            # MiniLM, both rows: ONNX Runtime and OpenVINO
    python scripts/bench_peers.py --targets openvino --threads 1 2 --processes 3 --markdown

Each peer gets its own virtual environment (made on demand under --venvs, reused after; the peers pin other
transformers versions than hfexport), builds its best artifact from the same local model folder, and every
side is timed in fresh processes, alternating sides, --processes per side and thread count: text in, sentence
vector out (tokenisation included), batch 1 (one ~128-token text, median of --runs calls after warm-up) and
batch 32. Fidelity is measured the same way for all: cosine of each side's vectors to PyTorch fp32's (mean
pooling, L2-normalised, as sentence-transformers does) on the 128 shipped held-out texts, embedded in batches of
32 and again one text at a time (dynamic int8 quantises a batch over one range, so the batch moves the numbers).
Check `uptime` first: a busy machine changes every number.

What each side is given (--targets picks the rows):
- cpu (ONNX Runtime): hfexport `--target cpu` bundles (--recipes), loaded with hfexport.runtime.load, ONNX
  Runtime's spinning off. Peer optimum-onnx: export -> ORTOptimizer O3 -> ORTQuantizer dynamic int8, per
  channel, the host's AVX preset; its model runs in a plain InferenceSession (intra-op threads = --threads,
  inter-op 1, spinning off).
- openvino: hfexport `--target openvino` bundles (--openvino-recipes: default = NNCF static int8 calibrated on
  the shipped texts; int8-weights = NNCF weight compression, activations quantised by the CPU plugin at run
  time), loaded with hfexport.runtime.load. Peer optimum-intel: OVModelForFeatureExtraction export, then
  OVQuantizer with OVQuantizationConfig (static int8, optimum-intel's defaults: transformer model type,
  asymmetric activations) calibrated on the same shipped calibration texts hfexport uses (hfexport.data, handed
  over as a JSON file; no hub access). Its IR is compiled with the options hfexport's openvino runtime gives
  a default bundle (runtime/backends/openvino.py): PERFORMANCE_HINT LATENCY, INFERENCE_PRECISION_HINT f32,
  and the CPU plugin's INFERENCE_NUM_THREADS = --threads; one InferRequest reused, inputs shared
  (share_inputs=True) as optimum-intel's own OVModel does, the output read in place. See decision 0190.
- Every peer's text path is the same: the model folder's tokenizer.json through the `tokenizers` library
  (truncation to the model's max length, padding to the longest), mean pooling, L2 norm, in numpy.

`--paired` adds a table where each hfexport bundle and its target's peer run in one process of the peer's
environment (hfexport on PYTHONPATH: one onnxruntime or OpenVINO for both), --paired-runs rounds of 15 batch-1
calls and one batch of 32, alternating, the order flipped each round; the ratio is the median of the per-round
speed ratios. Fresh processes on the 2-core VM spread wider than the gaps being measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
TARGETS = ("cpu", "openvino")


@dataclass(frozen=True)
class Peer:
    name: str
    target: str  # the hfexport target whose row it belongs to
    packages: tuple[str, ...]  # pip requirements of its virtual environment (torch pinned to the local CPU wheel)
    build: str  # Python run in that environment: argv = model folder, output folder, host ISA preset, texts JSON
    artifact: str  # the model file it builds, relative to the output folder
    kind: str  # how the timer runs it: "onnx" (ONNX Runtime) or "openvino"
    what: str
    # uninstalled after the install: pulled in as a dependency, unusable here and not needed by the build
    remove: tuple[str, ...] = ()


_OPTIMUM_ONNX_BUILD = r"""
import sys
from pathlib import Path

import onnx
import optimum.onnxruntime.quantization as quantization
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer, ORTQuantizer
from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

model, out, isa = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


class Quantizer(quantization.ONNXQuantizer):
    # onnxruntime >= 1.2x cannot infer tensor types after O3's contrib operators; its error message names this
    # option as the fix, and optimum-onnx 0.1.0 does not pass it.
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("extra_options", {})["DefaultTensorType"] = onnx.TensorProto.FLOAT
        super().__init__(*args, **kwargs)


quantization.ONNXQuantizer = Quantizer
exported = ORTModelForFeatureExtraction.from_pretrained(model, export=True)
ORTOptimizer.from_pretrained(exported).optimize(save_dir=out / "o3", optimization_config=AutoOptimizationConfig.O3())
preset = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=True)
ORTQuantizer.from_pretrained(out / "o3", file_name="model_optimized.onnx").quantize(save_dir=out / "int8",
                                                                                      quantization_config=preset)
"""

_OPTIMUM_INTEL_BUILD = r"""
import json
import sys
from pathlib import Path

import nncf
from optimum.intel import OVConfig, OVModelForFeatureExtraction, OVQuantizationConfig, OVQuantizer
from transformers import AutoTokenizer

model, out, texts = sys.argv[1], Path(sys.argv[2]), json.loads(Path(sys.argv[4]).read_text())
exported = OVModelForFeatureExtraction.from_pretrained(model, export=True, compile=False)
tokenizer = AutoTokenizer.from_pretrained(model)
names = [port.get_any_name() for port in exported.model.inputs]
# The calibration set as optimum-intel takes a custom one: an nncf.Dataset of the IR's feeds, one text each,
# padded to 128 tokens as optimum-intel's quantisation docs preprocess (cos min 0.9823 vs 0.9813 unpadded).
feeds = [dict(tokenizer(text, padding="max_length", max_length=128, truncation=True, return_tensors="np"))
         for text in texts]
calibration = nncf.Dataset([{name: feed[name] for name in names} for feed in feeds])
config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(texts)))
OVQuantizer.from_pretrained(exported).quantize(calibration_dataset=calibration, ov_config=config,
                                               save_directory=out / "int8")
"""

PEERS = {
    "optimum-onnx": Peer("optimum-onnx", "cpu", ("torch==2.13.0", "optimum-onnx[onnxruntime]==0.1.0"),
                         _OPTIMUM_ONNX_BUILD, "int8/model_optimized_quantized.onnx", "onnx",
                         "optimum-onnx export, ORTOptimizer O3, ORTQuantizer dynamic int8 per channel"),
    "optimum-intel": Peer("optimum-intel", "openvino", ("torch==2.13.0", "optimum-intel[openvino]==2.2.0"),
                          _OPTIMUM_INTEL_BUILD, "int8/openvino_model.xml", "openvino",
                          "optimum-intel OVModelForFeatureExtraction export, OVQuantizer OVQuantizationConfig "
                          "static int8 calibrated on hfexport's shipped calibration texts",
                          # PyPI's torchvision is built for CUDA torch: next to the local CPU wheel its operators
                          # fail to load and transformers then refuses AutoProcessor, which optimum-intel imports.
                          # Text feature extraction never uses torchvision.
                          remove=("torchvision",)),
}
DEFAULT_RECIPES = {"cpu": ["default", "int8-small"], "openvino": ["default", "int8-weights"]}

# Run by every side's own interpreter: load, embed the held-out texts, time batch 1 and batch 32.
_TIMER = r"""
import json, statistics, sys, time
import numpy as np

kind, path, threads, runs, texts_file, vectors_out = sys.argv[1:7]
threads, runs = int(threads), int(runs)
spec = json.loads(open(texts_file).read())


def make(kind, path):
    # texts -> sentence vectors, for one engine
    if kind == "hfexport":
        from hfexport.runtime import load
        model = load(path, threads=threads, session_overrides={"allow_spinning": False, "intra_op_threads": threads})
        return lambda texts: np.asarray(model(texts))
    # a peer's encoder with a last_hidden_state output: tokenizer.json, mean pooling, L2 norm
    from tokenizers import Tokenizer
    if kind == "onnx":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        forward = lambda feed: session.run(["last_hidden_state"], feed)[0]
    else:  # openvino: the compile options hfexport's openvino runtime gives a default bundle
        import openvino as ov
        core = ov.Core()
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
        compiled = core.compile_model(path, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        names = [port.get_any_name() for port in compiled.inputs]
        request = compiled.create_infer_request()
        def forward(feed):
            request.infer(feed, share_inputs=True)
            return request.get_tensor("last_hidden_state").data
    tokenizer = Tokenizer.from_file(spec["tokenizer"])
    tokenizer.enable_truncation(spec["max_length"])
    tokenizer.enable_padding()
    def embed(texts):
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = forward({n: feed[n] for n in names})
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return embed


def timed(embed, texts, calls, warmup):
    for _ in range(warmup):
        embed(texts)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        embed(texts)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


one, many = [spec["long_text"]], [spec["long_text"]] * 32
if "+" not in kind:
    embed = make(kind, path)
    held_out = spec["held_out"]
    if vectors_out != "-":  # fidelity: once per side (the first process), not in every timing process
        np.save(vectors_out, np.concatenate([embed(held_out[i:i + 32]) for i in range(0, len(held_out), 32)]))
        np.save(vectors_out[:-len(".npy")] + "-b1.npy", np.concatenate([embed([text]) for text in held_out]))
    print(json.dumps({"b1_ms": timed(embed, one, runs, 10), "b32_ms": timed(embed, many, max(3, runs // 20), 1)}))
else:  # --paired: the engines in this one process; rounds of (15 batch-1 calls, one batch of 32) alternating
    engines = [make(k, p) for k, p in zip(kind.split("+"), path.split("+"))]
    for embed in engines:
        timed(embed, one, 1, 10), timed(embed, many, 1, 1)
    samples = [{"b1_ms": [], "b32_ms": []} for _ in engines]
    for number in range(runs):
        for i in (range(len(engines)) if number % 2 == 0 else reversed(range(len(engines)))):
            samples[i]["b1_ms"].append(timed(engines[i], one, 15, 0))
            samples[i]["b32_ms"].append(timed(engines[i], many, 1, 0))
    print(json.dumps({"paired": samples}))
"""


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="local model folder [default: the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS,
                        help="which rows run: hfexport's bundles for these targets and their peers")
    parser.add_argument("--peers", nargs="+", default=None, choices=sorted(PEERS),
                        help="[default: every peer of the chosen targets]")
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES["cpu"],
                        help="hfexport cpu recipes (names or YAML paths)")
    parser.add_argument("--openvino-recipes", nargs="+", default=DEFAULT_RECIPES["openvino"],
                        help="hfexport openvino recipes (names or YAML paths)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per side and thread count")
    parser.add_argument("--runs", type=int, default=100, help="batch-1 calls timed in each process")
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "hfexport-peers",
                        help="where the peers' virtual environments live (made on demand, then reused)")
    parser.add_argument("--work", type=Path, default=None,
                        help="builds go here and are reused when there [default: a temporary folder]")
    parser.add_argument("--paired", action="store_true",
                        help="also time each hfexport bundle against its target's peer in one process (the peer's "
                             "environment, hfexport on PYTHONPATH), alternating: process-to-process spread cancels")
    parser.add_argument("--paired-runs", type=int, default=8, help="rounds per side in a --paired process")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; install, build and time nothing")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.peers is None:
        args.peers = [name for name, peer in PEERS.items() if peer.target in args.targets]
    stray = [name for name in args.peers if PEERS[name].target not in args.targets]
    if stray:
        parser.error(f"--peers {stray[0]} belongs to target {PEERS[stray[0]].target}: add it to --targets")
    return args


def host_isa_preset() -> str:
    """optimum's AutoQuantizationConfig preset for this CPU (the one its docs pick per host)."""
    from hfexport.host import cpu_flags

    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "arm64")


def _hfexport_sides(args) -> list[tuple[str, str, str]]:
    """(side name, target, recipe) for every hfexport bundle of the chosen targets."""
    recipes = {"cpu": args.recipes, "openvino": args.openvino_recipes}
    return [(f"hfexport {target} {Path(r).stem}", target, r) for target in args.targets for r in recipes[target]]


def _pairs(args) -> list[tuple[str, str]]:
    """(hfexport side, peer) on the same runtime library, for --paired."""
    return [(side, peer) for side, target, _ in _hfexport_sides(args) for peer in args.peers
            if args.paired and PEERS[peer].target == target]


def plan(args) -> dict:
    model = args.model or "the packaged all-MiniLM-L6-v2"
    venv_steps = [{"peer": p, "venv": str(args.venvs / p), "pip": list(PEERS[p].packages),
                   "pip_uninstall": list(PEERS[p].remove), "exists": (args.venvs / p / "bin" / "python").is_file()} for p in args.peers]
    ours = _hfexport_sides(args)
    builds = ([{"side": side, "how": f"hfexport build --target {target} --recipe {r} --model {model}"}
               for side, target, r in ours]
              + [{"side": p, "target": PEERS[p].target, "how": PEERS[p].what, "artifact": PEERS[p].artifact,
                  **({"isa_preset": host_isa_preset()} if PEERS[p].kind == "onnx" else
                     {"calibration": "hfexport.data.default_calibration_texts()"})} for p in args.peers])
    sides = [side for side, _, _ in ours] + list(args.peers)
    return {"model": model, "targets": args.targets, "venvs": venv_steps, "builds": builds, "sides": sides,
            "paired": [list(pair) for pair in _pairs(args)],
            "timings": {"threads": args.threads, "processes_per_side": args.processes, "batch1_runs": args.runs,
                        "processes_total": len(sides) * len(args.threads) * args.processes}}


def _venv_python(args, peer: Peer) -> Path:
    folder = args.venvs / peer.name
    python = folder / "bin" / "python"
    if not python.is_file():
        print(f"making {folder} ({' '.join(peer.packages)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *peer.packages], check=True)
        if peer.remove:
            subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", *peer.remove], check=True)
    return python


def model_size(kind: str, artifact: str) -> int:
    """Bytes of the model files a side loads: a bundle's model.* files, or the peer artifact's folder's."""
    folder = Path(artifact) if kind == "hfexport" else Path(artifact).parent
    patterns = ("model*.onnx*", "model*.xml", "model*.bin") if kind == "hfexport" else ("*.onnx*", "*.xml", "*.bin")
    return sum(p.stat().st_size for pattern in patterns for p in folder.glob(pattern))


def main(argv=None) -> int:
    started = time.monotonic()
    args = _parse(argv)
    the_plan = plan(args)
    if args.dry_run:
        print(json.dumps(the_plan, indent=1), flush=True)
        return 0
    import numpy as np

    from hfexport.api import build
    from hfexport.data import default_calibration_texts, default_eval_texts
    from hfexport.loading import packaged_default_model, resolve_model
    from hfexport.progress import Progress
    from hfexport.validation.timing import text_of_length

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else packaged_default_model()[0]
    source = resolve_model(str(model_dir), log=lambda _m: None)
    calibration = work / "calibration.json"  # the peers calibrate on the texts hfexport's own builds use
    calibration.write_text(json.dumps(default_calibration_texts()))
    sides: dict[str, tuple[str, str, str]] = {}  # name -> (python, kind, artifact)
    for side, target, recipe in _hfexport_sides(args):
        out = work / side.replace(" ", "-")
        if not (out / "manifest.json").is_file():
            print(f"building {side} ...", file=sys.stderr)
            with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars print to stdout: keep it the table's
                build(str(model_dir), target=target, recipe=recipe, output=out, gates=False, validation="quick",
                      progress=Progress("quiet"), force=True)
        sides[side] = (sys.executable, "hfexport", str(out))
    for name in args.peers:
        peer = PEERS[name]
        python, out = _venv_python(args, peer), work / name
        if not (out / peer.artifact).is_file():
            print(f"building {name} ...", file=sys.stderr)
            script = work / f"build-{name}.py"
            script.write_text(peer.build)
            subprocess.run([str(python), str(script), str(model_dir), str(out), host_isa_preset(), str(calibration)],
                           check=True, stdout=subprocess.DEVNULL)
        sides[name] = (str(python), peer.kind, str(out / peer.artifact))

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    held_out = default_eval_texts()[:128]
    spec = {"held_out": held_out, "long_text": text_of_length(tokenizer, default_eval_texts(), 128),
            "tokenizer": str(next(model_dir.glob("tokenizer.json"))), "max_length": source.max_length}
    (work / "texts.json").write_text(json.dumps(spec))
    (work / "timer.py").write_text(_TIMER)
    reference = _reference_vectors(source, tokenizer, held_out)

    load_before = os.getloadavg()[0]
    times: dict[tuple[str, int], list[dict]] = {}
    fidelity: dict[str, dict] = {}
    for threads in args.threads:
        for round_number in range(args.processes):
            order = list(sides) if round_number % 2 == 0 else list(reversed(sides))  # alternate who goes first
            for name in order:
                python, kind, artifact = sides[name]
                vectors = work / f"vectors-{name.replace(' ', '-')}.npy"
                done = subprocess.run([python, str(work / "timer.py"), kind, artifact, str(threads), str(args.runs),
                                       str(work / "texts.json"), "-" if name in fidelity else str(vectors)],
                                      capture_output=True, text=True, cwd=_REPO)
                if done.returncode:
                    sys.exit(f"{name}: the timer failed ({kind} {artifact}):\n{done.stderr[-2000:]}")
                times.setdefault((name, threads), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                if name not in fidelity:  # in batches of 32 and one text at a time: int8 ranges follow the batch
                    cos = (np.load(vectors) * reference).sum(1)
                    alone = (np.load(vectors.with_name(vectors.stem + "-b1.npy")) * reference).sum(1)
                    fidelity[name] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                                      "cosine_mean_b1": float(alone.mean()), "cosine_min_b1": float(alone.min())}
    paired = _paired(args, sides, work) if _pairs(args) else []
    rows = []
    for name, (_, kind, artifact) in sides.items():
        for threads in args.threads:
            runs = times[(name, threads)]
            b1 = [r["b1_ms"] for r in runs]
            b32 = [r["b32_ms"] for r in runs]
            rows.append({"side": name, "threads": threads, "b1_ms": statistics.median(b1),
                         "b1_range": [min(b1), max(b1)], "b32_texts_per_s": 32000 / statistics.median(b32),
                         "b32_range": [32000 / max(b32), 32000 / min(b32)],
                         "size_mb": model_size(kind, artifact) / 1e6, **fidelity[name]})
    result = {"model": str(model_dir), "isa_preset": host_isa_preset(), "load_before": load_before,
              "load_after": os.getloadavg()[0], "processes": args.processes,
              "wall_s": round(time.monotonic() - started), "rows": rows, "paired": paired}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        print(markdown(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


def _paired(args, sides: dict, work: Path) -> list[dict]:
    """Each (hfexport side, peer) in one process of the peer's interpreter: per-round speed ratios, ours / theirs."""
    rows = []
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    for threads in args.threads:
        for ours, peer in _pairs(args):
            (_, kind, artifact), (python, peer_kind, peer_artifact) = sides[ours], sides[peer]
            done = subprocess.run([python, str(work / "timer.py"), f"{kind}+{peer_kind}", f"{artifact}+{peer_artifact}",
                                   str(threads), str(args.paired_runs), str(work / "texts.json"), "-"],
                                  capture_output=True, text=True, cwd=_REPO, env=env)
            if done.returncode:
                sys.exit(f"{ours} / {peer}: the paired timer failed:\n{done.stderr[-2000:]}")
            mine, theirs = json.loads(done.stdout.strip().splitlines()[-1])["paired"]
            row = {"side": ours, "peer": peer, "threads": threads, "rounds": args.paired_runs}
            for key in ("b1_ms", "b32_ms"):
                ratios = [b / a for a, b in zip(mine[key], theirs[key])]  # speed, ours over theirs
                row.update({key: statistics.median(mine[key]), f"peer_{key}": statistics.median(theirs[key]),
                            f"{key}_ratio": statistics.median(ratios), f"{key}_ratio_range": [min(ratios), max(ratios)]})
            rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = [f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after; ISA preset "
             f"{result['isa_preset']}; medians of {result['processes']} processes (range); {result['wall_s']} s "
             "in all (builds included)\n",
             "| side | threads | b1 ms | b32 texts/s | cosine mean / min vs PyTorch, batches of 32 | one text at a "
             "time | size MB |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        alone = f"{r['cosine_mean_b1']:.4f} / {r['cosine_min_b1']:.4f}" if "cosine_min_b1" in r else "-"
        lines.append(f"| {r['side']} | {r['threads']} | {r['b1_ms']:.2f} ({r['b1_range'][0]:.2f}-"
                     f"{r['b1_range'][1]:.2f}) | {r['b32_texts_per_s']:.0f} ({r['b32_range'][0]:.0f}-"
                     f"{r['b32_range'][1]:.0f}) | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | {alone} | "
                     f"{r['size_mb']:.1f} |")
    if result.get("paired"):
        lines += ["", f"Same process, alternating ({result['paired'][0]['rounds']} rounds each; the peer's environment "
                  "with hfexport on PYTHONPATH); ratio = median of per-round speed ratios, ours / the peer's (range)", "",
                  "| hfexport side | peer | threads | b1 ms (peer) | b1 ratio | b32 ms (peer) | b32 ratio |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["paired"]:
            cells = [f"{r[k]:.1f} ({r['peer_' + k]:.1f}) | {r[k + '_ratio']:.2f}x ({r[k + '_ratio_range'][0]:.2f}-"
                     f"{r[k + '_ratio_range'][1]:.2f})" for k in ("b1_ms", "b32_ms")]
            lines.append(f"| {r['side']} | {r['peer']} | {r['threads']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _reference_vectors(source, tokenizer, texts):
    """PyTorch fp32 sentence vectors: mean pooling over the attention mask, L2-normalised."""
    import numpy as np
    import torch

    from hfexport.loading import load_torch_model

    model = load_torch_model(source)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            batch = tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=source.max_length,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out)


if __name__ == "__main__":
    sys.exit(main())
