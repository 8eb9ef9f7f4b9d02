"""OpenAI-style error objects. Every failure the server returns, bad input or broken backend, has this shape:
``{"error": {"message": ..., "type": ..., "param": <field path or null>, "code": ...}}``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          429: "rate_limit_error", 499: "invalid_request_error"}
_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
# pydantic puts the tag of each union member into an error's location ("str", "list[TextPart]"): not fields.
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "null"}


class ApiError(Exception):
    """An error answered to the client as ``status`` with an OpenAI error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.type = type_ or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type_=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def param_path(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as the field path a client wrote: ``("messages", 0, "content")`` ->
    ``messages[0].content``. Union-member tags are dropped; keys of free-form dicts are kept."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part or part[:1].isupper() or "-" in part:
            continue  # a type tag such as "list[TextPart]" or "function-after[...]"
        elif _FIELD.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"  # a key of a free-form object
    return out or None


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """One 400 from pydantic's error list: the first bad field in body order. Where that field is a union
    (``content: str | list[part]``), pydantic reports every member's failure; the deepest one is the most
    specific (``messages[0].content[0].type``, not "should be a valid string")."""
    if not errors:
        return ApiError(400, "invalid request body")
    first = param_path(tuple(errors[0].get("loc", ()))) or ""
    same = [e for e in errors if (param_path(tuple(e.get("loc", ()))) or "").startswith(first)]
    e = max(same, key=lambda x: (param_path(tuple(x.get("loc", ()))) or "").count(".")
            + (param_path(tuple(x.get("loc", ()))) or "").count("["))  # depth; max() keeps the first deepest
    param = param_path(tuple(e.get("loc", ())))
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        msg = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        msg = f"Missing required parameter: '{param}'"
    elif param is None:
        msg = f"The request body must be a JSON object: {e.get('msg', 'invalid')}"
    else:
        msg = f"Invalid value for '{param}': {e.get('msg', 'invalid')}"
    code = "unrecognized_argument" if kind == "extra_forbidden" else "missing_required_parameter" \
        if kind == "missing" else "invalid_value"
    return ApiError(400, msg, param=param, code=code)
