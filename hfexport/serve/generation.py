"""Text generation behind the server: a bounded per-request queue in front of the runtime's generation loop.

NOTE: no continuous batching (decode steps of several requests in one model call); the reasons and
the measured cost are in docs/decisions/0091-generation-per-request-queue.md. Each request runs the
runtime's own `TextGenerator.stream`, so its text equals `generate()`'s for the same seed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from hfexport.serve.errors import bad_request, queue_full, shutting_down
from hfexport.serve.metrics import Metrics


@dataclass
class GenerationJob:
    prompt: str | list[dict]  # a text, or chat messages for the model's template
    prompt_tokens: int
    max_new_tokens: int
    stop: list[str] | None
    seed: int | None
    sampling: dict  # do_sample, temperature, top_p, top_k, repetition_penalty (unset: the model's own)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenerationOutcome:
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)


class GenerationQueue:
    """Runs up to `concurrency` generations at once per model; up to `max_queue` more wait, others get 429."""

    def __init__(self, generator, name: str, *, concurrency: int, max_queue: int, metrics: Metrics):
        self.generator, self.name, self.metrics = generator, name, metrics
        self.concurrency, self.max_queue = concurrency, max_queue
        self.max_length = generator.max_length
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"hfexport-generate-{name}")
        self._lock = threading.Lock()
        self._pending = 0  # waiting + running
        self._closing = False

    def prepare(self, prompt, *, max_tokens: int | None, stop, seed, sampling: dict) -> GenerationJob:
        """The job for a request, checked before it queues: prompt, context length, sampling settings."""
        try:
            prompt_tokens = len(self.generator.encode(prompt))
        except Exception as exc:  # no chat template, a template's raise_exception, ...
            if isinstance(exc, (ValueError, TypeError)) or type(exc).__module__.startswith("jinja2"):
                raise bad_request(f"the prompt cannot be encoded: {exc}", param="messages") from None
            raise
        if prompt_tokens == 0:
            raise bad_request("the prompt is empty", param="prompt")
        room = self.max_length - prompt_tokens
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            raise bad_request(f"this model's context is {self.max_length} tokens; the prompt has {prompt_tokens}"
                              + (f" and max_tokens asks for {max_tokens} more" if max_tokens else ""),
                              param="max_tokens", code="context_length_exceeded")
        try:
            self.generator.settings(**sampling)
        except (ValueError, TypeError) as exc:
            raise bad_request(str(exc)) from None
        return GenerationJob(prompt, prompt_tokens, max_tokens or room, stop, seed, sampling)

    def submit(self, job: GenerationJob, emit: Callable[[str], None] | None = None) -> Future:
        """Future[GenerationOutcome]; `emit(piece)` is called from the worker thread for each text piece."""
        with self._lock:
            if self._closing:
                raise shutting_down()
            waiting = self._pending - self.concurrency
            if waiting >= self.max_queue:
                raise queue_full(self.name, waiting)
            self._pending += 1
        future = self._pool.submit(self._generate, job, emit, time.monotonic())
        future.add_done_callback(self._done)
        return future

    def depth(self) -> int:
        with self._lock:
            return max(0, self._pending - self.concurrency)

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._pool.shutdown(wait=True)

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def _generate(self, job: GenerationJob, emit, enqueued: float) -> GenerationOutcome:
        labels = (("model", self.name),)
        started = time.monotonic()
        self.metrics.observe("hfexport_queue_wait_seconds", labels, started - enqueued)
        if job.cancel.is_set():  # timed out or disconnected while waiting
            return GenerationOutcome("", 0, "stop")
        tokens: list[int] = []  # stream() appends the generated ids: usage counts them
        pieces: list[str] = []
        stream = self.generator.stream(job.prompt, max_new_tokens=job.max_new_tokens, stop=job.stop, seed=job.seed,
                                       tokens=tokens, **job.sampling)
        try:
            for piece in stream:
                pieces.append(piece)
                if emit is not None:
                    emit(piece)
                if job.cancel.is_set():
                    break
        finally:
            stream.close()
        text = "".join(pieces)
        raw = self.generator.decode(tokens) if tokens else ""
        stopped = any(s in raw for s in job.stop or ())
        count = len(tokens)
        finish = "length" if count >= job.max_new_tokens and not stopped else "stop"
        elapsed = time.monotonic() - started
        self.metrics.inc("hfexport_tokens_total", (*labels, ("kind", "prompt")), job.prompt_tokens)
        self.metrics.inc("hfexport_tokens_total", (*labels, ("kind", "completion")), count)
        if count and elapsed > 0:
            self.metrics.observe("hfexport_generation_tokens_per_second", labels, count / elapsed)
        return GenerationOutcome(text, count, finish)
