#!/usr/bin/env python
"""Load test for `hfexport serve` on loopback: throughput and latency with dynamic batching and without,
and a run with malformed bodies mixed in.

    python scripts/bench_serve.py --bundle BUNDLE                         # 32 clients: batching vs off
    python scripts/bench_serve.py --bundle BUNDLE --malformed 0.1 --requests 1000 --modes batching

Each mode starts its own server (`hfexport serve BUNDLE --port 0`, 127.0.0.1 only) in a subprocess and
warms it up; then the modes take turns (`--rounds` blocks each, so load from other processes falls on
both alike) sending `--requests` embedding requests in all (one sentence each) from `--clients`
closed-loop keep-alive connections. Then each server's /metrics is read and it is stopped with SIGTERM.
Bounded: a fixed request count and a wall-clock limit per block. Good answers are checked against `load(bundle)` in this process (each text
alone); malformed ones must get a 4xx. The server's memory (VmRSS) is sampled during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {"batching": [], "no-batching": ["--no-batching"], "batching-spin": ["--spin"],
         "no-batching-spin": ["--no-batching", "--spin"]}
BODY_LIMIT = 64 * 1024  # the server's --max-body-bytes here, so the oversize case stays small


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="a feature-extraction bundle")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per mode")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="alternate the modes this many times")
    parser.add_argument("--modes", nargs="+", default=["batching", "no-batching"], choices=list(MODES))
    parser.add_argument("--malformed", type=float, default=0.0, help="share of malformed bodies (0-1)")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="passed to the server")
    parser.add_argument("--server-args", default="", help="more `hfexport serve` options, e.g. '--spin'")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per mode, at most")
    parser.add_argument("--ceiling", action="store_true",
                        help="first time the model alone (no HTTP): one text per call vs the batcher's calls")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args()


# -- the server -------------------------------------------------------------------------------------------


def start_server(bundle: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "hfexport.cli", "serve", str(bundle), "--host", "127.0.0.1", "--port", "0",
               "--name", "bench", "--max-body-bytes", str(BODY_LIMIT), *extra]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r" on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit("the server did not start:\n" + "".join(lines))


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- a small HTTP/1.1 client (keep-alive, Content-Length bodies): cheap enough to not be the bottleneck -------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before a response")
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, await reader.readexactly(int(headers.get("content-length", 0)))


async def run_load(url: str, bodies: list[bytes], clients: int, time_limit: float,
                   path: str = "/v1/embeddings") -> list[tuple[int, float, bytes]]:
    host, port = url.removeprefix("http://").split(":")
    results: list = [None] * len(bodies)
    order = iter(range(len(bodies)))
    deadline = time.monotonic() + time_limit

    async def client():
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in order:
                if time.monotonic() > deadline:
                    return
                head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(bodies[i])}\r\n\r\n").encode()
                started = time.perf_counter()
                try:
                    writer.write(head + bodies[i])
                    await writer.drain()
                    status, headers, payload = await _read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    results[i] = (-1, time.perf_counter() - started, repr(exc).encode())
                    headers = {"connection": "close"}
                else:
                    results[i] = (status, time.perf_counter() - started, payload)
                if headers.get("connection") == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def scrape(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # loopback only
        text = response.read().decode()
    values = {}
    for name in ("hfexport_batch_size_sum", "hfexport_batch_size_count", "hfexport_queue_depth",
                 "hfexport_requests_in_flight"):
        found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        values[name] = float(found.group(1)) if found else None
    return values


# -- request bodies ---------------------------------------------------------------------------------------------


def malformed_bodies(texts: list[str], model: str = "bench") -> list[tuple[str, bytes]]:
    """One of each kind of bad request this server must answer with a 4xx."""
    good = {"model": model, "input": texts[0]}
    return [
        ("not json", b'{"model": "bench", "input": '),
        ("not an object", json.dumps([model]).encode()),
        ("empty body", b""),
        ("missing input", json.dumps({"model": model}).encode()),
        ("input a number", json.dumps({**good, "input": 42}).encode()),
        ("empty input list", json.dumps({**good, "input": []}).encode()),
        ("empty string", json.dumps({**good, "input": ""}).encode()),
        ("token ids", json.dumps({**good, "input": [1, 2, 3]}).encode()),
        ("unknown model", json.dumps({**good, "model": "nope"}).encode()),
        ("unknown field", json.dumps({**good, "colour": "red"}).encode()),
        ("bad encoding_format", json.dumps({**good, "encoding_format": "hex"}).encode()),
        ("dimensions", json.dumps({**good, "dimensions": 8}).encode()),
        ("too many tokens", json.dumps({**good, "input": "word " * 600}).encode()),
        ("too many inputs", json.dumps({**good, "input": ["a"] * 3000}).encode()),
        ("over the body limit", json.dumps({**good, "input": "x" * (BODY_LIMIT + 10)}).encode()),
        ("deep nesting", b"[" * 20_000 + b"]" * 20_000),
        ("invalid utf-8", b'{"model": "' + model.encode() + b'", "input": "\xff\xfe"}'),
    ]


def build_requests(texts: list[str], count: int, malformed: float, seed: int = 0, model: str = "bench"):
    rng = random.Random(seed)
    bad = malformed_bodies(texts, model)
    plan = []  # (kind, text or None, body)
    for i in range(count):
        if rng.random() < malformed:
            kind, body = bad[i % len(bad)]
            plan.append((kind, None, body))
        else:
            text = texts[i % len(texts)]
            plan.append(("good", text, json.dumps({"model": model, "input": text}).encode()))
    return plan


# -- the modes, measured in alternating rounds ---------------------------------------------------------------------


class Mode:
    """One server, its measured requests and results, gathered over the rounds."""

    def __init__(self, args, name: str, texts: list[str]):
        extra = list(MODES[name]) + (["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None
                                     else [])
        self.name = name
        self.proc, self.url = start_server(args.bundle, extra + shlex.split(args.server_args))
        warm = [json.dumps({"model": "bench", "input": t}).encode() for t in texts[:args.warmup]]
        asyncio.run(run_load(self.url, warm, args.clients, args.time_limit))
        self.before = scrape(self.url)
        self.plan = build_requests(texts, args.requests, args.malformed)
        self.results: list = []
        self.seconds, self.rss, self.loads, self.rss_rounds = 0.0, [rss_mb(self.proc.pid)], [], []

    def block(self, start: int, stop: int, clients: int, time_limit: float) -> None:
        async def measured():
            async def sample():
                while True:
                    await asyncio.sleep(0.25)
                    self.rss.append(rss_mb(self.proc.pid))

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            out = await run_load(self.url, [body for _, _, body in self.plan[start:stop]], clients, time_limit)
            sampler.cancel()
            return out, time.perf_counter() - started

        results, seconds = asyncio.run(measured())
        self.results += results
        self.seconds += seconds
        self.loads.append(os.getloadavg()[0])
        self.rss_rounds.append(round(rss_mb(self.proc.pid), 1))

    def finish(self, reference: dict) -> dict:
        import numpy as np

        self.rss.append(rss_mb(self.proc.pid))
        after = scrape(self.url)
        code = stop_server(self.proc)
        done = [r for r in self.results if r is not None]
        latencies = sorted(r[1] for r in done)
        wrong, cosines, max_abs = [], [], 0.0
        for (kind, text, _), result in zip(self.plan, self.results):
            if result is None:
                continue
            status, _, payload = result
            if kind != "good":
                if not 400 <= status < 500:
                    wrong.append(f"{kind}: {status} {payload[:120]!r}")
                continue
            if status != 200:
                wrong.append(f"good: {status} {payload[:200]!r}")
                continue
            got = np.asarray(json.loads(payload)["data"][0]["embedding"], np.float32)
            want = reference[text]
            cosines.append(float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))))
            max_abs = max(max_abs, float(np.abs(got - want).max()))
        batches = after["hfexport_batch_size_count"] - (self.before["hfexport_batch_size_count"] or 0)
        texts_run = after["hfexport_batch_size_sum"] - (self.before["hfexport_batch_size_sum"] or 0)
        return {
            "mode": self.name, "requests": len(self.results), "answered": len(done),
            "unanswered": len(self.results) - len(done), "seconds": round(self.seconds, 3),
            "throughput_rps": round(len(done) / self.seconds, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p90_ms": round(1000 * latencies[int(0.90 * (len(latencies) - 1))], 1),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
            "mean_batch": round(texts_run / batches, 2) if batches else None,
            "malformed_sent": sum(kind != "good" for kind, _, _ in self.plan[:len(self.results)]),
            "wrong_answers": wrong[:10], "wrong_count": len(wrong),
            "min_cosine_vs_alone": round(min(cosines), 6) if cosines else None, "max_abs_vs_alone": max_abs,
            "rss_mb": {"start": round(self.rss[0], 1), "after_each_round": self.rss_rounds,
                       "peak": round(max(self.rss), 1)},
            "queue_depth_after": after["hfexport_queue_depth"],
            "in_flight_after": after["hfexport_requests_in_flight"],  # the /metrics request itself
            "load_average_per_round": [round(x, 2) for x in self.loads], "exit_code": code,
        }


def model_ceiling(bundle: Path, texts: list[str], rounds: int = 3) -> dict:
    """Texts per second of the model alone: each text in its own call, and through the batcher's own
    code in groups of 32 as they come (sorted and split by padding), alternating `rounds` times."""
    from hfexport.runtime import load
    from hfexport.serve.batching import EncoderBatcher, _Job
    from hfexport.serve.metrics import Metrics
    from hfexport.serve.models import NO_SPIN

    predictor = load(bundle, session_overrides=NO_SPIN)
    batcher = EncoderBatcher(predictor, "ceiling", max_batch_size=32, max_wait_s=0, max_queue=1, metrics=Metrics())
    alone = batched = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            predictor([text])
        alone += time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, len(texts), 32):
            batcher._encode_all([_Job([t], {}, True) for t in texts[i:i + 32]])
        batched += time.perf_counter() - started
    batcher.close()
    count = rounds * len(texts)
    return {"one_per_call_tps": round(count / alone, 1), "batched_tps": round(count / batched, 1),
            "ratio": round(alone / batched, 3), "load_average": round(os.getloadavg()[0], 2)}


def main() -> int:
    args = _parse()
    import numpy as np

    from hfexport.data import default_eval_texts
    from hfexport.runtime import load

    texts = default_eval_texts()
    predictor = load(args.bundle)
    reference = {t: predictor([t])[0].astype(np.float32) for t in texts}  # each text alone
    del predictor
    ceiling = model_ceiling(args.bundle, texts) if args.ceiling else None
    if ceiling:
        print("model alone, texts/s:", json.dumps(ceiling), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.clients} clients, {args.requests} requests per mode in {args.rounds} alternating rounds, "
          f"{args.malformed:.0%} malformed", flush=True)
    modes = []
    try:
        for name in args.modes:  # every server up first; an idle one costs nothing (threads do not spin)
            modes.append(Mode(args, name, texts))
        edges = [round(i * args.requests / args.rounds) for i in range(args.rounds + 1)]
        for start, stop in zip(edges, edges[1:]):
            for mode in modes:
                mode.block(start, stop, args.clients, args.time_limit)
        rows = [mode.finish(reference) for mode in modes]
    finally:
        for mode in modes:
            if mode.proc.poll() is None:
                mode.proc.kill()
    for row in rows:
        print(json.dumps(row), flush=True)
    if len(rows) == 2:
        ratio = rows[0]["throughput_rps"] / rows[1]["throughput_rps"]
        print(f"throughput {rows[0]['mode']} / {rows[1]['mode']}: {ratio:.2f}x")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "model_alone": ceiling, "rows": rows},
                                        indent=2))
    return 0 if all(r["wrong_count"] == 0 and r["unanswered"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
