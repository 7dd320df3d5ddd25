"""The HTTP edge: reading bodies within the size limit, the gate every request passes (draining, bearer
token, declared size) and the request metrics. Pure ASGI, so the gate costs microseconds per request."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hfexport.serve.config import ServeConfig
from hfexport.serve.errors import ApiError, bad_request, shutting_down
from hfexport.serve.metrics import Metrics
from hfexport.serve.models import Models

OPEN_PATHS = ("/health",)  # answered without the API key, for load balancers and orchestrators


@dataclass
class ServerState:
    """What the routes share: the models, the limits, the metrics, and whether the server is draining."""

    models: Models
    config: ServeConfig
    metrics: Metrics
    draining: bool = False
    in_flight: int = 0
    routes: frozenset[str] = field(default_factory=frozenset)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return Response(error.body_bytes(), status_code=error.status, headers=error.headers,
                    media_type="application/json")


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 413 past `limit` bytes (counted as they arrive), 400 when it is not JSON."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise bad_request("the request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: a body nested thousands deep
        raise bad_request(f"the request body is not valid JSON ({type(exc).__name__}: {exc})"[:300]) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over this server's limit of {limit} bytes",
                    code="request_too_large", headers={"Connection": "close"})


class Gate:
    """ASGI middleware: refuses while draining (503), without the bearer token (401), or with a declared
    body over the limit (413); counts requests and their latency by route and status."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state
        key = state.config.api_key
        self._key = hashlib.sha256(key.encode()).digest() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in self.state.routes else "other"
        status = [500]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.state.in_flight += 1
        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send_counted)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            self.state.in_flight -= 1
            labels = (("route", route),)
            self.state.metrics.inc("hfexport_requests_total", (*labels, ("status", str(status[0]))))
            self.state.metrics.observe("hfexport_request_duration_seconds", labels, time.perf_counter() - started)

    def _refusal(self, scope, path: str) -> ApiError | None:
        if self.state.draining and path not in OPEN_PATHS:
            return shutting_down()
        headers = dict(scope["headers"])
        if self._key is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            # NOTE: compare_digest takes the same time wherever the bytes differ, and comparing digests
            # (equal lengths) keeps the key's length from showing either: no timing oracle.
            digest = hashlib.sha256(token.strip()).digest()
            if scheme.lower() != b"bearer" or not hmac.compare_digest(digest, self._key):
                return ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                                type="authentication_error", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.state.config.max_body_bytes
            except ValueError:
                return bad_request("the Content-Length header is not a number")
            if too_big:
                return too_large(self.state.config.max_body_bytes)
        return None
