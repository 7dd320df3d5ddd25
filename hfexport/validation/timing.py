"""Timing: alternating warm blocks inside one process, so machine drift hits every side alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from hfexport.report.schema import Latency


def time_alternating(functions: dict[str, Callable[[], Any]], runs: int, warmup: int = 3,
                     block: int = 10, settle: int = 0, progress=None, what: str = "timing") -> dict[str, list[float]]:
    """Time each function `runs` times in milliseconds, in alternating blocks of `block` calls.

    Blocks, not strict alternation: worker threads spin after each call and steal the next side's cores;
    `settle` untimed calls open each block so caches hold this side's weights. NOTE: measured in
    docs/decisions/0001-timing-in-alternating-warm-blocks.md. `progress` (hfexport.progress.Progress):
    counts every call, untimed ones included, toward an ETA under the name `what`.
    """
    block = max(1, min(block, runs))
    blocks = -(-runs // block)
    ticker = progress.ticker(what, len(functions) * (warmup + runs + settle * blocks), "calls") if progress else None

    def call(fn) -> None:
        fn()
        if ticker is not None:
            ticker.advance()

    for fn in functions.values():
        for _ in range(warmup):
            call(fn)
    times: dict[str, list[float]] = {name: [] for name in functions}
    while any(len(t) < runs for t in times.values()):
        for name, fn in functions.items():
            if len(times[name]) >= runs:
                continue
            for _ in range(settle):
                call(fn)
            for _ in range(min(block, runs - len(times[name]))):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
                if ticker is not None:
                    ticker.advance()
    return times


def latency_of(samples_ms: list[float]) -> Latency:
    ordered = sorted(samples_ms)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Latency(p50_ms=statistics.median(ordered), p90_ms=p90, runs=len(ordered))


def text_of_length(tokenizer, texts: list[str], tokens: int) -> str:
    """A real-text passage that tokenises to exactly `tokens` tokens (special tokens included)."""
    passage = " ".join(texts)
    while len(tokenizer(passage)["input_ids"]) < tokens and len(passage) < 1_000_000:
        passage = passage + " " + passage
    special = len(tokenizer("")["input_ids"])
    encoded = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)
    cut = encoded["offset_mapping"][tokens - special - 1][1]
    return passage[:cut]


# A side whose slowest tenth of calls takes this many times its median was disturbed while it was timed.
NOISY_P90_OVER_P50 = 1.5


class LoadWatch:
    """The host's 1-minute load average, sampled around the timed phases of one validation."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.sample()

    def sample(self) -> None:
        import os

        try:
            self.samples.append(os.getloadavg()[0])
        except (AttributeError, OSError):  # a platform without load averages: nothing to judge by
            pass

    def warnings(self, timings: dict[str, list[float]]) -> list[str]:
        """Why the speed ratios of this run should not be read as results ([] when nothing says so).

        NOTE: under load PyTorch slows far more than a bundle, so a busy host inflates the ratios
        (docs/decisions/0005-honest-timings.md); the load and the spread of each side's calls tell.
        """
        from hfexport import host

        self.sample()
        found = []
        cores = host.physical_cores()
        if self.samples and max(self.samples) > cores:
            found.append(f"host busy: load average {max(self.samples):.1f} on {cores} cores while timing")
        for side, samples in timings.items():
            latency = latency_of(samples)
            if latency.p50_ms > 0 and latency.p90_ms / latency.p50_ms > NOISY_P90_OVER_P50:
                found.append(f"noisy timings: {side}'s p90 is {latency.p90_ms / latency.p50_ms:.1f}x its median")
        return found


def quick_validation_note(settings) -> str | None:
    """What a `--validation quick` report says in place of a speed ratio (None for a full validation)."""
    if getattr(settings, "mode", "full") != "quick":
        return None
    return (f"quick validation, not a benchmark: {settings.samples} samples, {settings.latency_runs} timed runs, "
            "no memory; build with --validation full to measure speed")
