"""The OpenAPI document, made to tell the truth about this server (``create_app`` serves it at /openapi.json).

- Auth: the bearer scheme and the 401 responses are declared only when the server has an API key (``--api-key``);
  without one, nothing asks for credentials.
- Responses: every status a route can answer with is listed, each with its media type and body schema: the
  completion object or a server-sent event stream, the OpenAI error object for every error, Prometheus text for
  /metrics, the health object (200 or 503 while shutting down).
- Requests: the bodies the completion routes read themselves (``schemas.py``), with this server's numeric limits
  written in as maxima (``n``, token counts), so a request the document calls valid is not refused for a number it
  could not know.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from thinkscale.server.engine import ServerLimits
from thinkscale.server.metrics import CONTENT_TYPE
from thinkscale.server.schemas import ChatCompletionRequest, CompletionRequest

NULL = {"type": "null"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


COUNT = _nullable({"type": "integer"})  # token counts are null when the backend cannot count them, never a made-up 0

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorResponse": {
        "type": "object", "required": ["error"], "description": "Every failure: an OpenAI error object.",
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"}, "param": _nullable({"type": "string"}),
            "code": _nullable({"type": "string"})}}}},
    "Usage": {
        "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "description": "Summed from the strategy's ledgers: hidden reasoning included.",
        "properties": {"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": COUNT,
                       "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": COUNT}},
                       "completion_tokens_details": {"type": "object", "properties": {"reasoning_tokens": COUNT}},
                       "thinkscale": {"type": "object"}}},
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "system_fingerprint": _nullable({"type": "string"}),
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "message", "finish_reason"], "properties": {
                    "index": {"type": "integer"},
                    "message": {"type": "object", "required": ["role", "content"], "properties": {
                        "role": {"const": "assistant"}, "content": {"type": "string"}, "refusal": NULL,
                        "reasoning_content": _nullable({"type": "string"}),
                        "reasoning": _nullable({"type": "string"})}},
                    "logprobs": NULL, "finish_reason": {"enum": ["stop", "length"]},
                    "thinkscale": {"type": "object"}}}},
            "usage": _ref("Usage"), "thinkscale": {"type": "object"}}},
    "TextCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "system_fingerprint": _nullable({"type": "string"}),
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "text", "finish_reason"], "properties": {
                    "index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": NULL,
                    "finish_reason": {"enum": ["stop", "length"]},
                    "reasoning_content": _nullable({"type": "string"}), "thinkscale": {"type": "object"}}}},
            "usage": _ref("Usage"), "thinkscale": {"type": "object"}}},
    "ChatCompletionChunk": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion.chunk"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "delta", "finish_reason"], "properties": {
                    "index": {"type": "integer"},
                    "delta": {"type": "object", "properties": {
                        "role": {"const": "assistant"}, "content": {"type": "string"},
                        "reasoning_content": {"type": "string"}, "reasoning": {"type": "string"}}},
                    "logprobs": NULL, "finish_reason": _nullable({"enum": ["stop", "length"]}),
                    "thinkscale": {"type": "object"}}}},
            "usage": _nullable(_ref("Usage")), "thinkscale": {"type": "object"}}},
    "TextCompletionChunk": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "text", "finish_reason"], "properties": {
                    "index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": NULL,
                    "finish_reason": _nullable({"enum": ["stop", "length"]}),
                    "reasoning_content": {"type": "string"}, "thinkscale": {"type": "object"}}}},
            "usage": _nullable(_ref("Usage")), "thinkscale": {"type": "object"}}},
    "Model": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                       "owned_by": {"type": "string"}, "thinkscale": {"type": "object"}}},
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")},
                       "thinkscale": {"type": "object"}}},
    "Health": {
        "type": "object", "required": ["status", "model", "running", "queued"],
        "properties": {"status": {"enum": ["ok", "shutting_down"]}, "model": {"type": "string"},
                       "running": {"type": "integer", "minimum": 0}, "queued": {"type": "integer", "minimum": 0}}},
}

ERRORS = {400: "Invalid request: the error names the field (param)",
          401: "Missing or wrong API key (Authorization: Bearer KEY)",
          404: "Unknown model",
          413: "Request too large (body, message, prompt or message count over the server's limits)",
          429: "Queue full: retry after the Retry-After header's seconds",
          500: "Internal server error",
          502: "The model backend failed",
          503: "The server is shutting down",
          504: "The request ran past the server's time limit; its work was cancelled"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": ERRORS[s], "content": _json(_ref("ErrorResponse"))} for s in statuses}


def _event(chunk: str) -> dict[str, Any]:
    """One server-sent event of a streamed completion (OpenAPI 3.1: the ``schema`` of text/event-stream is one
    event's): a chunk as JSON, an error object once the stream has started, or the final ``[DONE]``."""
    return {"type": "object", "required": ["data"], "properties": {
        "event": {"const": "message"},
        "data": {"anyOf": [{"const": "[DONE]"},
                           {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": [_ref(chunk), _ref("ErrorResponse")]}}]}}}


def _completion(kind: str) -> dict[str, Any]:
    return {"200": {"description": f"The {kind}; with \"stream\": true, server-sent events (data: <chunk JSON>, "
                                   "ending with data: [DONE]; a failure after the start is an error event)",
                    "content": {**_json(_ref(kind)), "text/event-stream": {"schema": _event(f"{kind}Chunk")}}},
            **_errors(400, 401, 404, 413, 429, 500, 502, 503, 504)}


# (path, method) -> every response it can give (401 only where the server has a key: see ``document``)
RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/chat/completions", "post"): _completion("ChatCompletion"),
    ("/v1/completions", "post"): _completion("TextCompletion"),
    ("/v1/models", "get"): {"200": {"description": "Every model id this server answers to",
                                    "content": _json(_ref("ModelList"))}, **_errors(401, 500)},
    ("/v1/models/{model_id}", "get"): {"200": {"description": "The model id, resolved",
                                               "content": _json(_ref("Model"))},
                                       **_errors(400, 401, 404, 500)},
    ("/health", "get"): {"200": {"description": "Serving", "content": _json(_ref("Health"))},
                         "503": {"description": "Shutting down", "content": _json(_ref("Health"))},
                         **_errors(500)},
    ("/metrics", "get"): {"200": {"description": "Prometheus text exposition format",
                                  "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}},
                          **_errors(401, 500)},
}
PROTECTED = {op for op in RESPONSES if op[0] != "/health"}  # what the API key guards


def document(app: FastAPI, *, api_key: str | None, limits: ServerLimits) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (built once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for model in (ChatCompletionRequest, CompletionRequest):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(js.pop("$defs", {}))
        schemas[model.__name__] = js
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this server never answers
        schemas.pop(name, None)
    schemas.update(RESPONSE_SCHEMAS)
    _write_limits(schemas, limits)
    secured = api_key is not None
    if not secured:
        comps.pop("securitySchemes", None)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = dict(RESPONSES.get((path, method), op.get("responses", {})))
            if secured and (path, method) in PROTECTED:
                op["security"] = [{"HTTPBearer": []}]
            else:
                op.pop("security", None)
                responses.pop("401", None)
            op["responses"] = responses
    app.openapi_schema = schema
    return schema


def _write_limits(schemas: dict[str, Any], limits: ServerLimits) -> None:
    """This server's numeric limits as the maxima of the request fields they bound (a larger value is a 400).
    The size limits (characters, messages, body bytes) stay 413s documented as such: as maxLength they would make
    schema-driven clients build 100 KB strings to probe them."""
    tokens = limits.max_tokens_per_request

    def cap(model: str, field: str, key: str, value: int) -> None:
        prop = schemas[model]["properties"][field]
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") in ("integer", "array"):
                branch[key] = min(value, branch.get(key, value))

    for model in ("ChatCompletionRequest", "CompletionRequest"):
        cap(model, "n", "maximum", limits.max_n)
        cap(model, "max_tokens", "maximum", tokens)
    cap("ChatCompletionRequest", "max_completion_tokens", "maximum", tokens)
    cap("ThinkscaleOptions", "budget", "maximum", tokens)
    cap("CompletionRequest", "prompt", "maxItems", limits.max_n)  # one choice per prompt at least
