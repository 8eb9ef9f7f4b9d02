"""Reading and checking a request before any work: the body (size-capped, strict JSON, strict pydantic; every
failure a 4xx OpenAI error object naming the field), the size limits, and the plan (strategy + Budget)."""

from __future__ import annotations

import json
import secrets
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from thinkscale.server.engine import Plan, ServerLimits
from thinkscale.server.errors import ApiError, from_validation_errors
from thinkscale.server.schemas import ChatCompletionRequest, CompletionRequest
from thinkscale.server.state import ServerState

Body = TypeVar("Body", bound=BaseModel)


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads its body with ``read_body`` (FastAPI cannot see it)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def read_body(request: Request, model: type[Body], limits: ServerLimits) -> Body:
    """The request body as ``model``: 413 past ``limits.max_body_bytes``, 400 for bad JSON or a bad field."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limits.max_body_bytes}",
                       code="request_too_large")
    buf = bytearray()
    try:
        async for piece in request.stream():
            buf += piece
            if len(buf) > limits.max_body_bytes:
                raise ApiError(413, f"request body is over the limit of {limits.max_body_bytes} bytes",
                               code="request_too_large")
    except ClientDisconnect:
        raise ApiError(499, "the client closed the connection while sending the request",
                       code="cancelled") from None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(bytes(buf), parse_constant=no_constants)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"Malformed JSON body: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {type(data).__name__}",
                       code="invalid_value")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise from_validation_errors(e.errors()) from None


def check_n(n: int, param: str, limits: ServerLimits) -> None:
    if n > limits.max_n:
        raise ApiError(400, f"{param}: {n} choices requested; this server gives at most {limits.max_n} per "
                            "request", param=param, code="invalid_value")


def check_text(texts: list[tuple[str, str]], limits: ServerLimits) -> None:
    """413 when one (param, text) is over ``max_message_chars`` or all of them over ``max_prompt_chars``."""
    total = 0
    for param, text in texts:
        if len(text) > limits.max_message_chars:
            raise ApiError(413, f"{param} is {len(text)} characters; the limit is {limits.max_message_chars}",
                           param=param, code="request_too_large")
        total += len(text)
    if total > limits.max_prompt_chars:
        raise ApiError(413, f"the prompt is {total} characters in all; the limit is {limits.max_prompt_chars}",
                       param=texts[0][0].split("[")[0] if texts else None, code="request_too_large")


def plan(state: ServerState, body: ChatCompletionRequest | CompletionRequest) -> Plan:
    return state.engine.plan(model=body.model, limits=state.limits, reasoning_effort=body.reasoning_effort,
                             options=body.thinkscale, max_tokens=body.max_tokens,
                             max_completion_tokens=getattr(body, "max_completion_tokens", None),
                             temperature=body.temperature, top_p=body.top_p)


def new_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one (reported in the response, so the run can be repeated)."""
    return seed if seed is not None else secrets.randbits(31)
