"""Build progress: per-pass status lines on stderr, silent with --quiet, JSON lines for CI systems.

Long loops (validation's held-out texts and timed runs) report counts and an ETA through a Ticker, at
most every `tick_seconds`, so a slow validation is never silent and a fast one stays quiet.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Literal

Mode = Literal["text", "quiet", "json"]


class Progress:
    def __init__(self, mode: Mode = "text", stream=None, tick_seconds: float = 5.0):
        self.mode = mode
        self.stream = stream or sys.stderr
        self.tick_seconds = tick_seconds
        self._started: dict[str, float] = {}

    def _emit(self, event: str, text: str, **fields) -> None:
        if self.mode == "quiet":
            return
        if self.mode == "json":
            record = {"event": event, "time": round(time.time(), 3), **fields}
            self.stream.write(json.dumps(record, default=str) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._emit("info", f"  {message}", message=message)

    def start(self, step: str, label: str, index: int | None = None, total: int | None = None) -> None:
        self._started[step] = time.perf_counter()
        counter = f"[{index}/{total}] " if index is not None and total else ""
        self._emit("start", f"{counter}{label} ...", step=step, label=label, index=index, total=total)

    def done(self, step: str, detail: str = "", **fields) -> float:
        seconds = time.perf_counter() - self._started.pop(step, time.perf_counter())
        suffix = f"  {detail}" if detail else ""
        self._emit("done", f"      done in {seconds:.1f}s{suffix}", step=step, seconds=round(seconds, 3), **fields)
        return seconds

    def ticker(self, what: str, total: int, unit: str) -> Ticker:
        """Counts `total` units of work on `what`; says how far it is, with an ETA, as it goes."""
        return Ticker(self, what, total, unit)


class Ticker:
    """Work counted toward a known total: a line with the count and an ETA at most every `tick_seconds`
    (the first after that long too), none when the loop is quicker than that."""

    def __init__(self, progress: Progress, what: str, total: int, unit: str):
        self.progress, self.what, self.total, self.unit = progress, what, max(int(total), 1), unit
        self.done = 0
        self.started = self._last = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        now = time.perf_counter()
        if now - self._last < self.progress.tick_seconds:
            return
        self._last = now
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        self.progress._emit("progress", f"      {self.what}: {self.done}/{self.total} {self.unit}, "
                            f"{elapsed:.0f}s so far, ETA {_duration(eta)}", step=self.what, done=self.done,
                            total=self.total, unit=self.unit, elapsed_s=round(elapsed, 1),
                            eta_s=round(eta, 1) if eta == eta else None)

    def counting(self, fn, count=len):
        """`fn` that advances this ticker by `count(argument)` after each call (a batch's texts)."""

        def counted(arg):
            result = fn(arg)
            self.advance(count(arg))
            return result

        return counted


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nothing done yet: no rate to go by
        return "unknown"
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.1f} min"
