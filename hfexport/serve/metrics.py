"""Prometheus metrics in the text exposition format (0.0.4), kept in-process with one lock.

Small on purpose: counters and histograms with fixed label sets, written by the request path and the
batching threads, rendered on GET /metrics. No client library needed.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """Metric families by name; `gauges` are read at scrape time (queue depth, in-flight requests)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)
        self._bucket_sets: dict[str, tuple[float, ...]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.counter("hfexport_requests_total", "HTTP requests answered, by route and status")
        self.histogram("hfexport_request_duration_seconds", "time from request to the last byte, by route",
                       LATENCY_BUCKETS)
        self.histogram("hfexport_batch_size", "texts per model call (dynamic batching)", BATCH_BUCKETS)
        self.histogram("hfexport_queue_wait_seconds", "time a request waited before its batch ran", LATENCY_BUCKETS)
        self.counter("hfexport_tokens_total", "tokens processed, by model and kind (prompt, completion)")
        self.histogram("hfexport_generation_tokens_per_second", "completion tokens per second, per request",
                       RATE_BUCKETS)

    def counter(self, name: str, help: str) -> None:
        self._help[name] = ("counter", help)

    def histogram(self, name: str, help: str, buckets: tuple[float, ...]) -> None:
        self._help[name] = ("histogram", help)
        self._bucket_sets[name] = buckets

    def gauge(self, name: str, help: str, read: Callable[[], dict[Labels, float]]) -> None:
        self._help[name] = ("gauge", help)
        self._gauges[name] = read

    def inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        with self._lock:
            family = self._counters[name]
            family[labels] = family.get(labels, 0.0) + value

    def observe(self, name: str, labels: Labels, value: float) -> None:
        with self._lock:
            family = self._histograms[name]
            if labels not in family:
                family[labels] = _Histogram(self._bucket_sets[name])
            family[labels].observe(value)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help) in self._help.items():
                lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    lines += [f"{name}{_fmt(labels)} {value:g}" for labels, value in self._counters[name].items()]
                elif kind == "histogram":
                    for labels, h in self._histograms[name].items():
                        running = 0
                        for bound, count in zip((*h.buckets, float("inf")), h.counts):
                            running += count
                            le = "+Inf" if bound == float("inf") else f"{bound:g}"
                            lines.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {running}")
                        lines += [f"{name}_sum{_fmt(labels)} {h.sum:.6g}", f"{name}_count{_fmt(labels)} {h.count}"]
        for name, read in self._gauges.items():  # outside the lock: readers take their own locks
            lines += [f"{name}{_fmt(labels)} {value:g}" for labels, value in read().items()]
        return "\n".join(lines) + "\n"


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
