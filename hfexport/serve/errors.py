"""Errors a request can meet, answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Every way a client can send bad input ends in one of these with a 4xx status; a 500 means a bug here.
"""

from __future__ import annotations

import json


class ApiError(Exception):
    """An HTTP error with OpenAI's body; `headers` go out with it (Retry-After on 429/503)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def model_not_found(name: str, served: list[str]) -> ApiError:
    return ApiError(404, f"model {name!r} is not served here (served: {', '.join(served) or 'none'})",
                    param="model", code="model_not_found", type="not_found_error")


def queue_full(name: str, depth: int) -> ApiError:
    return ApiError(429, f"model {name!r} has {depth} requests waiting, the most this server queues; retry shortly",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", type="service_unavailable", code="shutting_down",
                    headers={"Retry-After": "5", "Connection": "close"})


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"the request did not finish within {seconds:g} s", type="timeout", code="timeout")


def input_error(exc: Exception) -> ApiError:
    """A ValueError/TypeError the runtime raised for one request's inputs (e.g. a fill-mask text without a mask)."""
    return bad_request(str(exc) or type(exc).__name__)
