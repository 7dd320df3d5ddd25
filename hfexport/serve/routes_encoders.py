"""Encoder routes: OpenAI's /v1/embeddings, and /v1/classify, /v1/token-classify, /v1/question-answering,
/v1/fill-mask with the runtime's own result shapes (what `load(bundle)(texts)` returns, one per input)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from hfexport.serve.batching import EncodeResult
from hfexport.serve.errors import ApiError, bad_request, timed_out
from hfexport.serve.http import ServerState, json_response, read_json
from hfexport.serve.models import ServedModel
from hfexport.serve.schemas import (
    ClassifyBody,
    EmbeddingsBody,
    FillMaskBody,
    QuestionAnsweringBody,
    TokenClassifyBody,
    parse,
    qa_pairs,
    texts_of,
)


async def run_batched(state: ServerState, model: ServedModel, texts: list, options: dict,
                      truncate: bool | None) -> EncodeResult:
    """The texts through the model's batcher, within the request timeout (504 past it)."""
    future = model.batcher.submit(texts, options, state.config.truncate if truncate is None else truncate)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future), state.config.timeout_s)
    except asyncio.TimeoutError:
        future.cancel()  # still queued: the worker skips it
        raise timed_out(state.config.timeout_s) from None
    state.metrics.inc("hfexport_tokens_total", (("model", model.name), ("kind", "prompt")), result.tokens)
    return result


def embedding_size(model: ServedModel) -> int | None:
    outputs = model.runtime.manifest.signature.outputs
    size = outputs[0].shape[-1] if outputs else None
    return size if isinstance(size, int) else None


async def embeddings(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body = parse(EmbeddingsBody, await read_json(request, state.config.max_body_bytes))
    model = state.models.pick(body.model, ("feature-extraction",), "/v1/embeddings")
    texts = texts_of(body.input, state.config.max_inputs)
    if body.dimensions is not None and body.dimensions != embedding_size(model):
        raise bad_request(f"model {model.name!r} gives {embedding_size(model)}-dimensional embeddings and cannot "
                          f"shorten them (it was not trained for that); leave 'dimensions' out",
                          param="dimensions")
    result = await run_batched(state, model, texts, {}, body.truncate)
    vectors = np.asarray(result.values, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ApiError(500, f"model {model.name!r} produced non-finite values", type="server_error")
    if body.encoding_format == "base64":  # little-endian float32 bytes, as OpenAI sends them
        encoded = [json.dumps(base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")) for v in vectors]
    else:
        encoded = float_arrays(vectors)
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{e}}}' for i, e in enumerate(encoded))
    tail = json.dumps({"model": model.name, "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}})
    return Response(f'{{"object":"list","data":[{data}],{tail[1:]}'.encode(), media_type="application/json")


def float_arrays(vectors: np.ndarray) -> list[str]:
    """Rows as JSON arrays. NOTE: "%.9g" gives back the exact float32 (9 significant digits always round-trip)
    at under half the time and 60% of the bytes of json.dumps on the float64 values; with 32 requests
    in a batch, number formatting was the event loop's largest cost (docs/decisions/0090)."""
    template = "[" + ",".join(["%.9g"] * vectors.shape[1]) + "]"
    return [template % tuple(row) for row in vectors.tolist()]


async def _task_route(request: Request, body_type, tasks: tuple[str, ...], route: str, options) -> Response:
    state: ServerState = request.app.state.server
    body = parse(body_type, await read_json(request, state.config.max_body_bytes))
    model = state.models.pick(body.model, tasks, route)
    if isinstance(body, QuestionAnsweringBody):
        inputs = qa_pairs(body, state.config.max_inputs)
    else:
        inputs = texts_of(body.input, state.config.max_inputs)
    result = await run_batched(state, model, inputs, options(body), body.truncate)
    return json_response({"object": "list", "model": model.name, "data": result.values,
                          "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}})


async def classify(request: Request) -> Response:
    return await _task_route(request, ClassifyBody, ("text-classification",), "/v1/classify",
                             lambda b: {"top_k": b.top_k})


async def token_classify(request: Request) -> Response:
    return await _task_route(request, TokenClassifyBody, ("token-classification",), "/v1/token-classify",
                             lambda b: {"aggregation": b.aggregation})


async def question_answering(request: Request) -> Response:
    return await _task_route(request, QuestionAnsweringBody, ("question-answering",), "/v1/question-answering",
                             lambda b: {"max_answer_tokens": b.max_answer_tokens})


async def fill_mask(request: Request) -> Response:
    return await _task_route(request, FillMaskBody, ("fill-mask",), "/v1/fill-mask", lambda b: {"top_k": b.top_k})
