"""Request bodies, checked: pydantic models (strict types, unknown fields refused) plus the input rules.

Known OpenAI fields this server does not implement are accepted only at their neutral values (say,
`n: 1`, `logprobs: false`); anything else is a 400 that names the field, never a silent difference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hfexport.serve.errors import bad_request


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def refuse_unsupported(self, neutral: dict[str, tuple]) -> None:
        for name, allowed in neutral.items():
            if getattr(self, name) not in allowed:
                raise bad_request(f"{name!r} is not supported by this server (leave it out)", param=name,
                                  code="unsupported_parameter")


class EmbeddingsBody(_Body):
    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    truncate: bool | None = None  # extension: cut inputs over the model's max length instead of a 400


class _TaskBody(_Body):
    model: str | None = None  # may be left out when one served model has the route's task
    truncate: bool | None = None


class ClassifyBody(_TaskBody):
    input: Any
    top_k: int | None = Field(1, ge=1)  # null: every label


class TokenClassifyBody(_TaskBody):
    input: Any
    aggregation: Literal["simple", "none"] = "simple"


class FillMaskBody(_TaskBody):
    input: Any
    top_k: int = Field(5, ge=1, le=100)


class QuestionAnsweringBody(_TaskBody):
    question: str | None = None
    context: str | None = None
    input: list[dict[str, str]] | None = None  # [{"question": ..., "context": ...}, ...]
    max_answer_tokens: int = Field(30, ge=1, le=512)


# The neutral values of known OpenAI generation fields this server does not implement.
_NEUTRAL = {"n": (1,), "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
            "logit_bias": (None, {})}


class _GenerationBody(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    user: str | None = None
    n: int = 1
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # extensions, as in vLLM and TGI
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)


class ChatCompletionBody(_GenerationBody):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None

    def check(self) -> None:
        self.refuse_unsupported({**_NEUTRAL, "logprobs": (None, False), "top_logprobs": (None, 0),
                                 "tools": (None, []), "tool_choice": (None, "none"),
                                 "response_format": (None, {"type": "text"}), "store": (None, False)})


class CompletionBody(_GenerationBody):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    def check(self) -> None:
        self.refuse_unsupported({**_NEUTRAL, "echo": (False,), "logprobs": (None,), "best_of": (None, 1),
                                 "suffix": (None, "")})


def parse(model: type[_Body], data: Any) -> Any:
    """A request body checked against `model`; the first problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise bad_request(f"{where}: {message}", param=field) from None


def texts_of(value: Any, max_inputs: int, param: str = "input") -> list[str]:
    """A string or a list of strings (1 to max_inputs of them, none empty), as a list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad_request(f"'{param}' must be a non-empty string or a list of strings", param=param)
    if not all(isinstance(v, str) for v in value):
        if all(isinstance(v, int) for v in value) or all(isinstance(v, list) for v in value):
            raise bad_request(f"'{param}' as token ids is not supported here; send text", param=param)
        raise bad_request(f"'{param}' must be a string or a list of strings", param=param)
    if len(value) > max_inputs:
        raise bad_request(f"'{param}' has {len(value)} items; this server takes at most {max_inputs} per request",
                          param=param, code="too_many_inputs")
    empty = next((i for i, v in enumerate(value) if not v.strip()), None)
    if empty is not None:
        raise bad_request(f"'{param}' item {empty} is empty", param=param)
    return value


def qa_pairs(body: QuestionAnsweringBody, max_inputs: int) -> list[tuple[str, str]]:
    if body.input is not None:
        if body.question is not None or body.context is not None:
            raise bad_request("send either 'question' and 'context', or 'input', not both", param="input")
        if not body.input or len(body.input) > max_inputs:
            raise bad_request(f"'input' must hold 1 to {max_inputs} question/context pairs", param="input")
        if any(set(item) != {"question", "context"} for item in body.input):
            raise bad_request("each 'input' item needs exactly 'question' and 'context'", param="input")
        pairs = [(item["question"], item["context"]) for item in body.input]
    elif body.question is not None and body.context is not None:
        pairs = [(body.question, body.context)]
    else:
        raise bad_request("question answering needs 'question' and 'context' (or 'input' pairs)", param="question")
    if any(not q.strip() or not c.strip() for q, c in pairs):
        raise bad_request("questions and contexts must not be empty", param="input")
    return pairs


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages as the chat template wants them: role and text content (text parts joined)."""
    out = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad_request(f"messages.{i}.role must be system, developer, user or assistant (got {role!r})",
                              param="messages")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad_request(f"messages.{i}.content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise bad_request(f"messages.{i}.content must be a string or a list of text parts", param="messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def stops_of(stop: str | list[str] | None) -> list[str] | None:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise bad_request("'stop' takes at most 4 strings", param="stop")
    return [s for s in stops if s] or None

