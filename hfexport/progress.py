"""Build progress: per-pass status lines on stderr, silent with --quiet, JSON lines for CI systems."""

from __future__ import annotations

import json
import sys
import time
from typing import Literal

Mode = Literal["text", "quiet", "json"]


class Progress:
    def __init__(self, mode: Mode = "text", stream=None):
        self.mode = mode
        self.stream = stream or sys.stderr
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
