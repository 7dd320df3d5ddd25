"""The ASGI app: routes, the gate in front of them, errors in OpenAI's shape, queues closed on shutdown."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from hfexport.serve import routes_encoders as enc
from hfexport.serve import routes_generation as gen
from hfexport.serve.config import ServeConfig
from hfexport.serve.errors import ApiError, model_not_found
from hfexport.serve.http import Gate, ServerState, error_response, json_response
from hfexport.serve.metrics import Metrics
from hfexport.serve.models import Models

log = logging.getLogger("hfexport.serve")


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    models = [{"id": m.name, "task": m.task, "queue_depth": m.depth()} for m in state.models]
    if state.draining:
        return json_response({"status": "draining", "models": models}, status=503)
    return json_response({"status": "ok", "models": models})


async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return json_response({"object": "list", "data": [m.describe() for m in state.models]})


async def retrieve_model(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.models.by_name.get(request.path_params["name"])
    if model is None:
        raise model_not_found(request.path_params["name"], list(state.models.by_name))
    return json_response(model.describe())


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{name:path}", retrieve_model, methods=["GET"]),
    Route("/v1/embeddings", enc.embeddings, methods=["POST"]),
    Route("/v1/chat/completions", gen.chat_completions, methods=["POST"]),
    Route("/v1/completions", gen.completions, methods=["POST"]),
    Route("/v1/classify", enc.classify, methods=["POST"]),
    Route("/v1/token-classify", enc.token_classify, methods=["POST"]),
    Route("/v1/question-answering", enc.question_answering, methods=["POST"]),
    Route("/v1/fill-mask", enc.fill_mask, methods=["POST"]),
]


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
    message = {404: f"no route {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return error_response(ApiError(exc.status_code, message, type=kind, headers=dict(exc.headers or {})))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Only a bug lands here: every bad input is an ApiError with a 4xx before this point.
    log.exception("unexpected error on %s", request.url.path)
    return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))


def create_app(models: Models, config: ServeConfig, metrics: Metrics | None = None) -> Starlette:
    """The app over already loaded models; shutting the app down closes their queues (finishing what waits)."""
    state = ServerState(models=models, config=config, metrics=metrics or Metrics(),
                        routes=frozenset(r.path for r in ROUTES if "{" not in r.path))
    state.metrics.gauge("hfexport_queue_depth", "requests waiting for their model",
                        lambda: {(("model", m.name),): m.depth() for m in models})
    state.metrics.gauge("hfexport_requests_in_flight", "requests being answered",
                        lambda: {(): state.in_flight})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.draining = True
        models.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                                        Exception: _server_error})
    app.state.server = state
    app.add_middleware(Gate, state=state)
    return app
