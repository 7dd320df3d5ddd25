"""OpenAI's /v1/chat/completions and /v1/completions over text-generation bundles, streamed as
server-sent events when asked (`stream: true`), with usage counts.

Sampling follows OpenAI's knobs: `temperature: 0` is greedy; any other temperature, or `top_p`, samples;
neither leaves the model's own generation config in charge. `seed` makes sampling repeat.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hfexport.serve.errors import ApiError, bad_request, timed_out
from hfexport.serve.generation import GenerationJob, GenerationOutcome
from hfexport.serve.http import ServerState, json_response, read_json
from hfexport.serve.models import GENERATIVE, ServedModel
from hfexport.serve.schemas import ChatCompletionBody, CompletionBody, chat_messages, parse, stops_of

_END = object()
MAX_SEED = 2**64 - 1


def sampling_of(body) -> dict:
    sampling: dict = {}
    if body.temperature is not None:
        sampling.update({"do_sample": False} if body.temperature == 0
                        else {"do_sample": True, "temperature": body.temperature})
    if body.top_p is not None:
        sampling["top_p"] = body.top_p
        sampling.setdefault("do_sample", True)
    if body.top_k is not None:
        sampling["top_k"] = body.top_k
    if body.repetition_penalty is not None:
        sampling["repetition_penalty"] = body.repetition_penalty
    return sampling


def _job(model: ServedModel, body, prompt, max_tokens: int | None) -> GenerationJob:
    if body.seed is not None and not 0 <= body.seed <= MAX_SEED:
        raise bad_request(f"'seed' must be within 0 and {MAX_SEED}", param="seed")
    return model.generation.prepare(prompt, max_tokens=max_tokens, stop=stops_of(body.stop), seed=body.seed,
                                    sampling=sampling_of(body))


def _usage(jobs: list[GenerationJob], outcomes: list[GenerationOutcome]) -> dict:
    prompt = sum(j.prompt_tokens for j in jobs)
    completion = sum(o.completion_tokens for o in outcomes)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _finish(state: ServerState, model: ServedModel, jobs: list[GenerationJob]) -> list[GenerationOutcome]:
    futures = [model.generation.submit(job) for job in jobs]
    try:
        return list(await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)),
                                           state.config.timeout_s))
    except asyncio.TimeoutError:
        for job, future in zip(jobs, futures):
            job.cancel.set()
            future.cancel()
        raise timed_out(state.config.timeout_s) from None


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = parse(ChatCompletionBody, await read_json(request, state.config.max_body_bytes))
    body.check()
    model = state.models.pick(body.model, (GENERATIVE,), "/v1/chat/completions")
    job = _job(model, body, chat_messages(body.messages), body.max_completion_tokens or body.max_tokens)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": ident, "created": created, "model": model.name, "system_fingerprint": None}
    if body.stream:
        def chunk(delta: dict, finish: str | None) -> dict:
            return {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        return _stream(state, model, job, chunk, first={"role": "assistant", "content": ""},
                       piece=lambda text: {"content": text}, usage=_wants_usage(body))
    [outcome] = await _finish(state, model, [job])
    return json_response({**head, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": outcome.text}, "logprobs": None,
        "finish_reason": outcome.finish_reason}], "usage": _usage([job], [outcome])})


async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = parse(CompletionBody, await read_json(request, state.config.max_body_bytes))
    body.check()
    model = state.models.pick(body.model, (GENERATIVE,), "/v1/completions")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or len(prompts) > state.config.max_inputs or not all(p for p in prompts):
        raise bad_request(f"'prompt' must be 1 to {state.config.max_inputs} non-empty strings", param="prompt")
    if body.stream and len(prompts) > 1:
        raise bad_request("streaming takes one prompt per request", param="prompt")
    jobs = [_job(model, body, prompt, body.max_tokens) for prompt in prompts]
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": ident, "created": created, "model": model.name, "system_fingerprint": None}
    if body.stream:
        def chunk(delta: dict, finish: str | None) -> dict:
            return {**head, "object": "text_completion",
                    "choices": [{"index": 0, "text": delta.get("text", ""), "logprobs": None,
                                 "finish_reason": finish}]}

        return _stream(state, model, jobs[0], chunk, first=None, piece=lambda text: {"text": text},
                       usage=_wants_usage(body))
    outcomes = await _finish(state, model, jobs)
    return json_response({**head, "object": "text_completion", "choices": [
        {"index": i, "text": o.text, "logprobs": None, "finish_reason": o.finish_reason}
        for i, o in enumerate(outcomes)], "usage": _usage(jobs, outcomes)})


def _wants_usage(body) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def _stream(state: ServerState, model: ServedModel, job: GenerationJob, chunk: Callable[[dict, str | None], dict],
            *, first: dict | None, piece: Callable[[str], dict], usage: bool) -> StreamingResponse:
    """Submit now (so a full queue is a 429, not a broken stream), then send pieces as SSE events."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:  # from the worker thread
        try:
            loop.call_soon_threadsafe(pieces.put_nowait, item)
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening
            job.cancel.set()

    future = model.generation.submit(job, put)
    future.add_done_callback(lambda _f: put(_END))

    async def events() -> AsyncIterator[str]:
        deadline = loop.time() + state.config.timeout_s
        try:
            if first is not None:
                yield _sse(chunk(first, None))
            while True:
                try:
                    item = await asyncio.wait_for(pieces.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    yield _sse(timed_out(state.config.timeout_s).body())
                    break
                if item is _END:
                    try:
                        outcome = future.result()
                    except ApiError as exc:
                        yield _sse(exc.body())
                        break
                    except Exception as exc:  # a bug: tell the client in-band, the status is already sent
                        yield _sse(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}",
                                            type="server_error").body())
                        break
                    yield _sse(chunk({}, outcome.finish_reason))
                    if usage:
                        yield _sse({**chunk({}, None), "choices": [], "usage": _usage([job], [outcome])})
                    break
                yield _sse(chunk(piece(item), None))
            yield "data: [DONE]\n\n"
        finally:
            job.cancel.set()  # finished, timed out or the client went away: stop generating

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
