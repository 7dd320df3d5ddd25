"""Validation of text-generation bundles (decoder LLMs and encoder-decoders): PyTorch `generate` against the
bundle's generation loop.

Fidelity, per candidate (an intermediate graph or the bundle, each run by the runtime's TextGenerator):
- greedy_agreement: share of prompts whose greedy tokens equal PyTorch `generate(do_sample=False)`;
- top1_agreement: share of positions where the next-token argmax equals PyTorch's, teacher-forced on
  evaluation text (robust for quantised models, where one flipped token changes a greedy run's tail);
- perplexity and perplexity_ratio (candidate / PyTorch) on the same text.
Speed, batch 1, on a `sequence_length`-token prompt: time to first token (the `latency` column),
prefill tokens/s, and decode tokens/s (the `throughput` column) over `generation_tokens` new tokens.
Timings alternate between PyTorch and each candidate in blocks inside one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hfexport.data import token_windows
from hfexport.report.schema import Evaluation, Report, StageMetrics
from hfexport.validation.metrics import judged_report
from hfexport.validation.timing import LoadWatch, latency_of, time_alternating

_GREEDY_PROMPTS = 8


class TorchGeneration:
    """The reference: PyTorch fp32 eager and transformers' `generate` (a decoder LLM or an encoder-decoder).

    Teacher-forced items: a decoder LLM's are the token windows themselves; an encoder-decoder's are (window as
    the source, PyTorch's greedy decoder sequence for it, start token first), so top-1 agreement and perplexity
    are read over the sequence PyTorch generates.
    """

    def __init__(self, model, eos_ids: list[int], pad_id: int):
        self.model, self.eos_ids, self.pad_id = model, set(eos_ids), pad_id
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    def greedy(self, prompt: list[int], new_tokens: int) -> list[int]:
        out = self._generate(prompt, new_tokens, 0)
        return out[:next((i for i, t in enumerate(out) if t in self.eos_ids), len(out))]

    def items(self, windows: list[list[int]], new_tokens: int) -> tuple[list, list[list[int]]]:
        """(what `logits` takes per window, the token sequence each one's logits predict)."""
        if not self.seq2seq:
            return windows, windows
        sequences = [[self._start(), *self._generate(w, new_tokens, new_tokens)] for w in windows]
        return list(zip(windows, sequences)), sequences

    def logits(self, item) -> np.ndarray:
        import torch

        device = self.model.device
        with torch.inference_mode():
            if self.seq2seq:
                source, target = item
                logits = self.model(input_ids=torch.tensor([source], device=device),
                                    decoder_input_ids=torch.tensor([target], device=device)).logits
            else:
                logits = self.model(input_ids=torch.tensor([item], device=device)).logits
        return logits[0].float().cpu().numpy()

    def _start(self) -> int:
        start = self.model.generation_config.decoder_start_token_id
        return int(start if start is not None else self.model.config.decoder_start_token_id)

    def timed(self, prompt: list[int], new_tokens: int) -> None:
        self._generate(prompt, new_tokens, new_tokens)

    def _generate(self, prompt, new_tokens, min_new) -> list[int]:
        import torch

        ids = torch.tensor([prompt], device=self.model.device)
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=min_new, do_sample=False, num_beams=1, pad_token_id=self.pad_id)
        # an encoder-decoder returns the decoder's sequence, its start token first
        return out[0, 1 if self.seq2seq else len(prompt):].tolist()


class BundleGeneration:
    """A candidate through hfexport.runtime's TextGenerator: exactly what users run."""

    def __init__(self, generator):
        self.generator = generator

    def greedy(self, prompt: list[int], new_tokens: int) -> list[int]:
        return self.generator.generate_ids([prompt], max_new_tokens=new_tokens, do_sample=False)[0]

    def logits(self, item) -> np.ndarray:
        if isinstance(item, tuple):  # an encoder-decoder: (source, decoder sequence)
            return self.generator.teacher_forced_logits(*item)
        decoder = self.generator.decoder
        ids = np.asarray([item], np.int64)
        logits, _ = decoder.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], decoder.empty_cache(1),
                                 all_logits=True)
        return logits[0]

    def timed(self, prompt: list[int], new_tokens: int) -> None:
        self.generator.generate_ids([prompt], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False)


def stage_generator(manifest, staging: Path, session, artifact):
    """The runtime's generator over an intermediate stage (its graph, or an encoder-decoder's two graphs)."""
    if getattr(artifact, "parts", ()):
        from hfexport.runtime.tasks.text2text_generation import open_predictor

        return open_predictor(manifest, staging, session, artifact.path.with_name(artifact.parts[0]))
    from hfexport.runtime.generation import TextGenerator

    return TextGenerator(manifest, staging, session, staging / manifest.tokenizer.file)


# A fresh process loads one side and generates; VmHWM (not ru_maxrss, which Linux carries across exec
# from the parent) is its peak resident memory: what a deployment of that side pays.
_MEMORY_PROBE = """
import sys
side, path, threads, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prompt = list(range(1, 17))
if side == "pytorch":
    import json, torch, transformers
    torch.set_num_threads(threads)
    seq2seq = json.load(open(path + "/config.json")).get("is_encoder_decoder")
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(path, attn_implementation="eager").eval()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)
else:
    from hfexport.runtime import load
    load(path, threads=threads).generate_ids([prompt], max_new_tokens=new, min_new_tokens=new)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


def peak_rss_mb(side: str, path: Path, threads: int, new_tokens: int) -> float | None:
    """Peak RSS (MB) of a fresh process running `side` ("pytorch" or "bundle"); None where it cannot tell."""
    if not Path("/proc/self/status").is_file():
        return None  # VmHWM is Linux-only
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, side, str(path), str(threads), str(new_tokens)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return None
    return float(out.stdout.strip().splitlines()[-1])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def perplexity(logits: list[np.ndarray], windows: list[list[int]]) -> float:
    nll = [-_log_softmax(lg[:-1].astype(np.float64))[np.arange(len(w) - 1), w[1:]] for lg, w in zip(logits, windows)]
    return float(np.exp(np.concatenate(nll).mean()))


def generation_fidelity(ref_logits, cand_logits, windows, ref_greedy, cand_greedy, ref_ppl) -> dict[str, float]:
    top1 = np.concatenate([r.argmax(-1) == c.argmax(-1) for r, c in zip(ref_logits, cand_logits)])
    ppl = perplexity(cand_logits, windows)
    # top1_agreement first: the report's charts plot the first fidelity metric.
    return {"top1_agreement": float(top1.mean()),
            "greedy_agreement": float(np.mean([r == c for r, c in zip(ref_greedy, cand_greedy)])),
            "perplexity": ppl, "perplexity_ratio": ppl / ref_ppl}


def teacher_forced_fidelity(reference: TorchGeneration, runner, tokenizer, texts: list[str],
                            settings) -> dict[str, float]:
    """Next-token top-1 agreement and perplexity ratio on windows of `texts` (no greedy runs, no timing)."""
    windows = token_windows(tokenizer, texts, settings.samples, settings.sequence_length)
    items, sequences = reference.items(windows, settings.generation_tokens)
    ref_logits = [reference.logits(i) for i in items]
    cand_logits = [runner.logits(i) for i in items]
    top1 = np.concatenate([r.argmax(-1) == c.argmax(-1) for r, c in zip(ref_logits, cand_logits)])
    return {"top1_agreement": float(top1.mean()),
            "perplexity_ratio": perplexity(cand_logits, sequences) / perplexity(ref_logits, sequences)}


def evaluate_generation(reference: TorchGeneration, tokenizer, candidates: list, eval_set, judging,
                        memory_paths: dict[str, Path] | None = None) -> Report:
    """Each candidate (runner: BundleGeneration) against PyTorch `generate` on windows of the evaluation text.

    `memory_paths`: {"pytorch": model folder, "bundle": bundle folder} to measure peak memory of each.
    """
    settings, progress, texts = judging.settings, judging.progress, eval_set.texts
    length, new_tokens = settings.sequence_length, settings.generation_tokens
    windows = token_windows(tokenizer, texts, settings.samples, length)
    prompts = windows[:_GREEDY_PROMPTS]

    progress.info(f"fidelity: {len(windows)} windows of {length} tokens; greedy {new_tokens} tokens "
                  f"on {len(prompts)} prompts")
    items, sequences = reference.items(windows, new_tokens)
    ref_logits = [reference.logits(i) for i in items]
    ref_ppl = perplexity(ref_logits, sequences)
    ref_greedy = [reference.greedy(p, new_tokens) for p in prompts]
    fid = {}
    for c in candidates:
        runner = c.runner
        fid[c.name] = generation_fidelity(ref_logits, [runner.logits(i) for i in items], sequences, ref_greedy,
                                             [runner.greedy(p, new_tokens) for p in prompts], ref_ppl)

    progress.info(f"speed: {length}-token prompt, {new_tokens} new tokens, {settings.latency_runs} runs each")
    prompt = windows[0]
    watch = LoadWatch()
    runners = {"pytorch": reference, **{c.name: c.runner for c in candidates}}
    first = time_alternating({k: (lambda r=r: r.timed(prompt, 1)) for k, r in runners.items()},
                             settings.latency_runs, progress=progress, what="time to first token")
    runs = max(3, settings.latency_runs // 3)
    full = time_alternating({k: (lambda r=r: r.timed(prompt, new_tokens)) for k, r in runners.items()}, runs,
                            warmup=1, block=3, progress=progress, what="decode")
    timing_warnings = watch.warnings(first)
    speed = {name: speed_of(name, first[name], full[name], length, new_tokens, timing_warnings) for name in runners}

    memory = {}
    if memory_paths and settings.memory:
        progress.info("peak memory: a fresh process per side")
        memory = {name: peak_rss_mb(name, path, judging.threads, new_tokens) for name, path in memory_paths.items()}

    def stage(name, kind, size, pass_seconds=None, fidelity=None, notes=None) -> StageMetrics:
        return StageMetrics(name=name, kind=kind, size_bytes=size, pass_seconds=pass_seconds,
                            latency=latency_of(first[name]), throughput_per_s=speed[name]["decode_tokens_per_s"],
                            fidelity=fidelity or {}, generation=speed[name], peak_rss_mb=memory.get(name),
                            notes=notes or [])

    stages = [stage("pytorch", "torch", judging.reference_size,
                    notes=["reference: PyTorch fp32 eager, transformers generate",
                           f"reference perplexity {ref_ppl:.3f}",
                           "latency = time to first token; throughput = decode tokens/s"])]
    stages += [stage(c.name, c.kind, c.size_bytes, c.pass_seconds, fid[c.name], list(c.notes)) for c in candidates]
    evaluation = Evaluation(samples=len(windows), sequence_length=length, batch_size=1,
                            latency_runs=settings.latency_runs, threads=judging.threads, text_source=eval_set.source)
    return judged_report(judging, judging.model_info.get("task", "text-generation"), stages, evaluation,
                         stages[-1].throughput_per_s / stages[0].throughput_per_s, timing_warnings)


def speed_of(name: str, first_ms: list[float], full_ms: list[float], length: int, new_tokens: int,
             warnings: list[str]) -> dict:
    """Time to first token, prefill and decode rates of one side from its timed runs (medians).

    Decode time is the whole generation's median less the first token's; when that difference drowns in
    run-to-run noise (a tiny model on a busy host: a difference near zero once read as 7e9 tokens/s), the rate
    counts the whole generation instead and `warnings` says so."""
    ttft, whole = float(np.median(first_ms)), float(np.median(full_ms))
    decode_ms, decoded = whole - ttft, new_tokens - 1
    if decode_ms <= 0.05 * whole:
        warnings.append(f"{name}: decode time not resolved ({whole:.2f} ms for {new_tokens} tokens, {ttft:.2f} ms "
                        "for the first); its decode rate counts the whole generation")
        decode_ms, decoded = whole, new_tokens
    return {"time_to_first_token_ms": ttft, "prefill_tokens_per_s": length / (ttft / 1000),
            "decode_tokens_per_s": decoded / (decode_ms / 1000), "new_tokens": new_tokens}
