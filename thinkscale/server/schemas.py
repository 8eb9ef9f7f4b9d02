"""Request bodies of the OpenAI-compatible API, validated strictly.

Like OpenAI's API, an unknown top-level argument is an error (``extra="forbid"``), and so is a known one this server
cannot honour (tools, logprobs, penalties, ...): quietly ignoring it would hand the client an answer it did not ask
for. Fields OpenAI accepts that change nothing here (``user``, ``metadata``, ``store``, ...) are accepted.
Types are strict: ``"0.5"`` is not a temperature and ``true`` is not an integer.

The JSON schemas (the OpenAPI document's request bodies) say exactly what is accepted, so a request the document
calls valid is never refused for its shape: an argument this server cannot honour is declared with its neutral
values only (``logprobs``: false, 0 or null; ``tools``: empty), only an assistant turn may leave out its content,
and a conversation needs a user message with some text (``NONBLANK``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Knob = int | float | bool | str

NULL: dict[str, Any] = {"type": "null"}
# Text with a character that is not whitespace (Python's str.isspace, which the problem check strips), written out
# so that JSON Schema's \s (which also takes U+FEFF and not U+001C-U+001F) cannot disagree with it.
NONBLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
TEXT: dict[str, Any] = {"type": "string", "pattern": NONBLANK}


def only(*values: Any, extra: tuple[dict[str, Any], ...] = ()) -> WithJsonSchema:
    """The JSON schema of an argument accepted only at its neutral value(s): null, each of ``values``, ``extra``."""
    return WithJsonSchema({"anyOf": [*({"const": v} for v in values), *extra, NULL]})


EMPTY_LIST = {"type": "array", "maxItems": 0}


def integral(v: Any) -> Any:
    """An integer field's value before the strict check: ``8.0`` is the integer 8 (JSON Schema says so, and clients
    that compute a count send one); ``8.5``, ``"8"`` and ``true`` stay what they are, and the check refuses them."""
    return int(v) if isinstance(v, float) and v.is_integer() else v



class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Strict):
    type: Literal["text"] = Field(description="Only text content is supported.")
    text: str


def _content_by_role(schema: dict[str, Any]) -> None:
    """Only an assistant turn may leave out its content (a replayed turn that made tool calls)."""
    schema["oneOf"] = [{"properties": {"role": {"const": "assistant"}}},
                       {"properties": {"role": {"enum": ["system", "developer", "user"]},
                                       "content": {"not": NULL}}, "required": ["content"]}]


# What the conversation must hold: a user turn with some text (in a string, or in one of its text parts).
USER_TURN: dict[str, Any] = {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"const": "user"}, "content": {"anyOf": [TEXT, {"type": "array", "contains": {
        "type": "object", "required": ["text"], "properties": {"text": TEXT}}}]}}}


class ChatMessage(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_content_by_role)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    refusal: str | None = None
    # Clients replay earlier assistant turns with these; the reasoning of a past turn is not fed back to the model.
    reasoning_content: str | None = None
    reasoning: str | None = None
    # Tool use is not supported: declared only to answer with a clear error instead of "unrecognized argument".
    tool_calls: Annotated[list[Any] | None, only(extra=(EMPTY_LIST,))] = None
    function_call: Annotated[Any, only()] = None

    @field_validator("tool_calls", "function_call")
    @classmethod
    def _no_tools(cls, v: Any) -> Any:
        if v:
            raise ValueError("tool calls are not supported by this server")
        return v

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ThinkscaleOptions(_Strict):
    """The ``thinkscale`` extension object: how hard to think, and whether to show the thinking."""

    strategy: str | None = Field(None, max_length=128, description="A strategy id: 'greedy', 'self-consistency', "
                                 "'sc-8', ... (see GET /v1/models). Overrides the model suffix and reasoning_effort.")
    budget: int | None = Field(None, ge=1, description="Completion-token budget for all hidden reasoning of one "
                               "choice (the strategy stops early rather than exceed it).")
    max_calls: int | None = Field(None, ge=1, description="At most this many backend calls per choice.")
    max_seconds: float | None = Field(None, gt=0, le=86400, description="Stop starting new rounds after this long.")
    reveal_reasoning: bool = Field(False, description="Return the chosen chain of thought as reasoning_content "
                                   "and every candidate's text.")
    params: dict[Annotated[str, Field(max_length=64)], Knob] | None = Field(
        None, max_length=32, description="Strategy knobs, e.g. {\"temperature\": 0.9} (see GET /v1/models).")

    _integral = field_validator("budget", "max_calls", mode="before")(integral)


def _reject_unsupported(name: str, v: Any, default: Any = None) -> Any:
    if v is not None and v != default and v != [] and v != {}:
        raise ValueError(f"'{name}' is not supported by this server")
    return v


class _Common(_Strict):
    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1, description="Completion tokens per sampled chain of thought.")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: Annotated[str | list[str] | None, WithJsonSchema({"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4}, NULL]})] = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    reasoning_effort: Effort | None = None
    include_reasoning: bool | None = Field(None, description="Same as thinkscale.reveal_reasoning.")
    thinkscale: ThinkscaleOptions | None = None
    user: str | None = None
    # OpenAI arguments this server cannot honour: rejected unless absent or at their neutral value.
    logprobs: Annotated[Any, only(False, 0)] = None
    logit_bias: Annotated[dict[str, Any] | None, only(extra=({"type": "object", "maxProperties": 0},))] = None
    frequency_penalty: Annotated[float | None, only(0)] = None
    presence_penalty: Annotated[float | None, only(0)] = None

    _integral = field_validator("n", "max_tokens", "seed", mode="before")(integral)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in items):
            raise ValueError("stop sequences must be non-empty")
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v: Any) -> Any:
        if v not in (None, False):
            raise ValueError("'logprobs' is not supported by this server (the visible answer is not sampled "
                             "token by token)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: Any) -> Any:
        return _reject_unsupported("logit_bias", v)

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _penalties(cls, v: float | None) -> float | None:
        if v not in (None, 0, 0.0):
            raise ValueError("penalties are not supported by this server; leave them at 0")
        return v

    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def reveal(self) -> bool:
        return bool(self.include_reasoning) or bool(self.thinkscale and self.thinkscale.reveal_reasoning)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={"contains": USER_TURN})
    max_completion_tokens: int | None = Field(None, ge=1, description="Budget for all generated tokens of one "
                                              "choice, hidden reasoning included (as for OpenAI reasoning models).")
    # accepted, and change nothing here
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    # rejected unless neutral
    top_logprobs: Annotated[int | None, only(0)] = None
    tools: Annotated[list[Any] | None, only(extra=(EMPTY_LIST,))] = None
    tool_choice: Annotated[Any, only("none")] = None
    functions: Annotated[list[Any] | None, only(extra=(EMPTY_LIST,))] = None
    function_call: Annotated[Any, only()] = None
    response_format: Annotated[dict[str, Any] | None, only(extra=(
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}},
         "additionalProperties": False},))] = None
    audio: Annotated[Any, only()] = None
    modalities: Annotated[list[str] | None, only(extra=(
        {"type": "array", "items": {"const": "text"}, "minItems": 1, "maxItems": 1},))] = None
    prediction: Annotated[Any, only()] = None
    web_search_options: Annotated[Any, only()] = None

    _integral_chat = field_validator("max_completion_tokens", "top_logprobs", mode="before")(integral)

    @field_validator("top_logprobs", "tools", "tool_choice", "functions", "function_call", "audio", "prediction",
                     "web_search_options")
    @classmethod
    def _unsupported(cls, v: Any, info: Any) -> Any:
        if info.field_name == "tool_choice" and v == "none":
            return v
        return _reject_unsupported(info.field_name, v, 0 if info.field_name == "top_logprobs" else None)

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v != {"type": "text"}:
            raise ValueError("only {\"type\": \"text\"} is supported")
        return v

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and v != ["text"]:
            raise ValueError("only [\"text\"] is supported")
        return v


class CompletionRequest(_Common):
    """Legacy completions. The prompt is the user message of a chat (see the README), so a chat model still gets
    its template; a list of prompts gives one choice per prompt (times ``n``). Token-id prompts are not accepted."""

    prompt: Annotated[str | list[str], WithJsonSchema({"anyOf": [
        TEXT, {"type": "array", "items": TEXT, "minItems": 1}]})]
    echo: bool | None = None
    suffix: Annotated[str | None, only("")] = None
    best_of: Annotated[int | None, only(1)] = None

    _integral_text = field_validator("best_of", mode="before")(integral)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("at least one prompt")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("'suffix' (insertion) is not supported by this server")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError("use a strategy instead of best_of, e.g. model 'NAME:sc-8' (see GET /v1/models)")
        return v

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
