"""Dynamic batching for encoder models: requests that arrive together run as one model call.

One worker thread per model takes the waiting requests once `max_batch_size` texts are queued or the
oldest has waited `max_wait` seconds, tokenises them all at once, and runs them sorted by length in
calls whose padding stays small, so a batch of short sentences does not pay for one long outlier
(each call is cut to its own longest text; the tokenizer pads on the right, so the cut drops padding
only). One thread, not a pool: the backend already spreads one call over every core.

A request whose inputs the runtime refuses (say, a fill-mask text without a mask token) fails alone:
when a group raises, its requests are rerun one by one and each gets its own answer or error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfexport.runtime.tokenizer import Batch
from hfexport.serve.errors import bad_request, input_error, queue_full, shutting_down
from hfexport.serve.metrics import Metrics

# NOTE: a model call may pad its texts to at most this many times their real tokens; a longer text
# starts a new call. On CPU a call costs little beyond its tokens, so padding is the waste to avoid
# (docs/decisions/0090-serve-dynamic-batching.md).
MAX_PADDING = 1.1


@dataclass
class EncodeResult:
    values: Any  # np.ndarray [texts, ...] for embeddings, else one runtime result per text
    tokens: int  # tokens the model read (after truncation): the request's usage


@dataclass
class _Job:
    texts: list
    options: dict
    truncate: bool
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.options.items()))


class EncoderBatcher:
    """submit(texts, options) -> Future[EncodeResult]; close() finishes what is queued, then stops."""

    def __init__(self, predictor, name: str, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 metrics: Metrics, combine: bool = True):
        from tokenizers import Tokenizer

        self.predictor, self.name = predictor, name
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self.combine = combine  # False: one request per batch (dynamic batching off)
        self.max_length = predictor.manifest.model.max_length
        self.metrics = metrics
        # Counts tokens before truncation, to refuse (or knowingly cut) inputs over the model's max length.
        self._counter = Tokenizer.from_file(str(predictor.path / predictor.manifest.tokenizer.file))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._jobs: deque[_Job] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"hfexport-batcher-{name}", daemon=True)
        self._thread.start()

    # -- the request side ------------------------------------------------------------------------------

    def submit(self, texts: list, options: dict, truncate: bool) -> Future:
        job = _Job(texts, options, truncate)
        with self._cond:
            if self._closing:
                raise shutting_down()
            if len(self._jobs) >= self.max_queue:
                raise queue_full(self.name, len(self._jobs))
            self._jobs.append(job)
            self._queued_texts += len(texts)
            self._cond.notify()
        return job.future

    def depth(self) -> int:
        with self._cond:
            return len(self._jobs)

    def close(self, timeout: float | None = None) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the worker --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            started = time.monotonic()
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # skip timed-out ones
            for job in live:
                self.metrics.observe("hfexport_queue_wait_seconds", (("model", self.name),), started - job.enqueued)
            try:
                self._run(live)
            except BaseException as exc:  # never leave a waiting request hanging, whatever happened
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _take(self) -> list[_Job] | None:
        """The next batch of jobs (at least one), or None once closing with nothing left."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            if not self.combine:
                job = self._jobs.popleft()
                self._queued_texts -= len(job.texts)
                return [job]
            deadline = self._jobs[0].enqueued + self.max_wait_s
            while self._queued_texts < self.max_batch_size and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken, texts = [], 0
            while self._jobs and (not taken or texts + len(self._jobs[0].texts) <= self.max_batch_size):
                job = self._jobs.popleft()
                taken.append(job)
                texts += len(job.texts)
            self._queued_texts -= texts
            return taken

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[tuple, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        for group in groups.values():
            try:
                results = self._encode_all(group)
            except Exception as exc:
                # One bad request must not fail its neighbours: rerun each alone.
                results = [exc] if len(group) == 1 else [self._encode_alone(job) for job in group]
            for job, result in zip(group, results):
                if isinstance(result, Exception):
                    _fail(job, result)
                else:
                    job.future.set_result(result)

    def _encode_alone(self, job: _Job) -> EncodeResult | Exception:
        try:
            return self._encode_all([job])[0]
        except Exception as exc:
            return exc

    def _encode_all(self, jobs: list[_Job]) -> list[EncodeResult | Exception]:
        """Every text of `jobs` through the model in length-bucketed calls of at most max_batch_size."""
        texts = [text for job in jobs for text in job.texts]
        sizes = [len(job.texts) for job in jobs]
        owner = np.repeat(np.arange(len(jobs)), sizes)
        first = np.cumsum([0, *sizes])
        try:
            batch = self.predictor.encode(texts)
        except Exception as exc:  # the tokenizer fails on its input only (a question longer than the model's max)
            raise ValueError(f"the input cannot be tokenised: {exc}") from exc
        lengths = batch.attention_mask.sum(axis=1)
        refused = self._too_long(jobs, texts, owner, first, lengths)
        keep = np.flatnonzero(~np.isin(owner, list(refused)))
        out: list[Any] = [None] * len(texts)
        options = jobs[0].options
        for chunk in length_chunks(keep, lengths, self.max_batch_size, MAX_PADDING):
            part = _take_rows(batch, chunk, int(lengths[chunk].max()))
            self.metrics.observe("hfexport_batch_size", (("model", self.name),), len(chunk))
            values = self.predictor.postprocess(self.predictor.forward(part), part, [texts[r] for r in chunk],
                                                **options)
            for row, value in zip(chunk, values):
                out[row] = value
        results: list[EncodeResult | Exception] = []
        for j in range(len(jobs)):
            if j in refused:
                results.append(refused[j])
                continue
            values = out[first[j]:first[j + 1]]
            tokens = int(lengths[first[j]:first[j + 1]].sum())
            results.append(EncodeResult(np.stack(values) if isinstance(values[0], np.ndarray) else values, tokens))
        return results

    def _too_long(self, jobs: list[_Job], texts: list, owner: np.ndarray, first: np.ndarray,
                  lengths: np.ndarray) -> dict[int, Exception]:
        """Jobs with an input over the model's max length that did not ask for truncation -> their 400.

        Only rows the tokenizer filled to the max can have been cut, so only those are counted again,
        without truncation: the common short request is tokenised once."""
        full = [int(r) for r in np.flatnonzero(lengths >= self.max_length) if not jobs[owner[r]].truncate]
        if not full:
            return {}
        counts = [len(e.ids) for e in self._counter.encode_batch([_tokenizer_input(texts[r]) for r in full])]
        refused: dict[int, Exception] = {}
        for row, count in zip(full, counts):
            job = int(owner[row])
            if count > self.max_length and job not in refused:
                refused[job] = bad_request(
                    f"input {row - first[job]} has {count} tokens; this model reads at most {self.max_length} "
                    "(send \"truncate\": true to cut such inputs)", param="input", code="context_length_exceeded")
        return refused


def length_chunks(rows: np.ndarray, lengths: np.ndarray, max_rows: int, max_padding: float) -> list[np.ndarray]:
    """`rows` sorted by length and cut into model calls of at most `max_rows`, each padded to at most
    `max_padding` times its real tokens (so a long outlier gets its own call)."""
    chunks, current, real = [], [], 0
    for row in rows[np.argsort(lengths[rows], kind="stable")].tolist():
        tokens = int(lengths[row])
        if current and (len(current) == max_rows or tokens * (len(current) + 1) > max_padding * (real + tokens)):
            chunks.append(np.array(current))
            current, real = [], 0
        current.append(row)
        real += tokens
    if current:
        chunks.append(np.array(current))
    return chunks


def _fail(job: _Job, exc: Exception) -> None:
    # The runtime raises ValueError/TypeError for inputs it refuses: the client's fault, a 400.
    job.future.set_exception(input_error(exc) if isinstance(exc, (ValueError, TypeError)) else exc)


def _tokenizer_input(text):
    return tuple(text) if isinstance(text, (tuple, list)) else text


def _take_rows(batch: Batch, rows: np.ndarray, width: int) -> Batch:
    """Some rows of a right-padded batch, cut to `width` tokens (only padding lies beyond)."""
    def cut(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array[rows, :width])

    return Batch(input_ids=cut(batch.input_ids), attention_mask=cut(batch.attention_mask),
                 token_type_ids=cut(batch.token_type_ids), offsets=cut(batch.offsets),
                 special_tokens_mask=cut(batch.special_tokens_mask),
                 sequence_ids=[batch.sequence_ids[r][:width] for r in rows])
