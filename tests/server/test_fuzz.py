"""Property-based API tests: no generated request, however malformed, gets a 5xx, and every response is the one the
OpenAPI document promises.

Schemathesis generates requests from the server's own OpenAPI schema: negative mode breaks the schema (wrong
types, missing fields, out-of-range numbers), positive mode follows it (with the model pointed at the served one,
so valid bodies run all the way through a strategy). Its conformance checks hold every answer to the document: a
documented status code, a documented media type, a body valid against the documented schema, and (with
``--api-key``) auth enforced wherever it is declared. A second, schema-blind fuzzer sends raw bytes, truncated and
corrupted JSON, and arbitrary JSON values in every field. Failures are collected rather than shrunk, so one run
reports every distinct failure it found."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.harness import MODEL, endless, serve
from thinkscale.server import ServerLimits

LIMITS = ServerLimits(max_body_bytes=64_000, max_tokens_per_request=4096)
VALID = {"model": f"{MODEL}:greedy", "messages": [{"role": "user", "content": "What is 6 times 7?"}]}
FIELDS = ["model", "messages", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "stream",
          "stream_options", "stop", "seed", "reasoning_effort", "include_reasoning", "thinkscale", "tools",
          "logprobs", "response_format", "prompt", "echo", "best_of"]


@pytest.fixture(scope="module")
def server():
    with serve(endless(), limits=LIMITS) as s:
        yield s


def _fuzz(run: Any, examples: int) -> None:
    settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
             suppress_health_check=list(HealthCheck))(run)()


def _fuzz_operation(schema: Any, url: str, path: str, method: str, mode: GenerationMode, examples: int,
                    statuses: Counter[int], failures: list[str]) -> None:
    @given(case=schema[path][method].as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            # valid bodies for the served model, so they run through a strategy instead of stopping at 404
            case.body["model"] = MODEL if len(str(case.body["model"])) % 2 else f"{MODEL}:greedy"
        resp = case.call(base_url=url, timeout=60)
        statuses[resp.status_code] += 1
        if resp.status_code >= 500:
            failures.append(f"{method} {path} {mode.value}: {resp.status_code} {resp.text[:300]} "
                            f"for body {json.dumps(case.body, default=str)[:500]}")
        elif resp.status_code >= 400:
            ctype = resp.headers.get("content-type") or [""]  # schemathesis keeps every header as a list
            if ctype[0].startswith("application/json"):
                assert "error" in json.loads(resp.text), resp.text

    _fuzz(run, examples)


def test_schemathesis_generated_requests_never_get_a_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    plan = [("/v1/chat/completions", "POST", GenerationMode.NEGATIVE, 120),
            ("/v1/chat/completions", "POST", GenerationMode.POSITIVE, 50),
            ("/v1/completions", "POST", GenerationMode.NEGATIVE, 50),
            ("/v1/completions", "POST", GenerationMode.POSITIVE, 25),
            ("/v1/models/{model_id}", "GET", GenerationMode.POSITIVE, 15)]
    for path, method, mode, examples in plan:
        _fuzz_operation(schema, server.url, path, method, mode, examples, statuses, failures)
    assert not failures, "\n".join(failures[:10])
    assert sum(statuses.values()) >= 200, statuses
    assert any(400 <= s < 500 for s in statuses), statuses  # the negative cases did hit validation
    assert statuses[200] > 0, statuses  # and the positive ones got through to a strategy


CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
               response_headers_conformance]


def _conform(schema: Any, url: str, op: Any, mode: GenerationMode, examples: int, failures: Counter[str],
             statuses: Counter[int], headers: dict[str, str] | None, checks: list[Any]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = MODEL if len(str(case.body["model"])) % 2 else f"{MODEL}:greedy"
        resp = case.call(base_url=url, timeout=60, headers=headers)
        statuses[resp.status_code] += 1
        for check in checks:  # one at a time, so every failing check of a response is counted
            try:
                case.validate_response(resp, checks=[check], headers=headers)
            except BaseException as e:  # noqa: BLE001 - schemathesis raises a FailureGroup (a BaseExceptionGroup)
                if isinstance(e, KeyboardInterrupt):
                    raise
                first = next((str(x).splitlines()[0] for x in getattr(e, "exceptions", [e]) if str(x)),
                             type(e).__name__)
                body = json.dumps(case.body, default=str)[:300] if isinstance(case.body, dict | list) else ""
                failures[f"{op.label} {mode.value} {check.__name__}: {first} -> {resp.status_code} "
                         f"{resp.text[:200]!r} for {body}"] += 1

    try:
        _fuzz(run, examples)
    except Unsatisfiable:  # nothing to break in an operation without parameters (negative mode)
        pass


# (operation, positive examples, negative examples): about 15 s on two busy cores
CONFORMANCE_PLAN = [("POST /v1/chat/completions", 80, 80), ("POST /v1/completions", 50, 50),
                    ("GET /v1/models/{model_id}", 20, 20), ("GET /v1/models", 5, 0), ("GET /health", 5, 0),
                    ("GET /metrics", 5, 0)]


def test_schemathesis_conformance_checks_pass(server):
    """Positive and negative requests, every response held to the document: status code, media type, body schema,
    headers; and no 5xx."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = {r.ok().label: r.ok() for r in schema.get_all_operations()}
    assert set(ops) == {label for label, _, _ in CONFORMANCE_PLAN}  # a new route joins the plan
    failures: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for label, positive, negative in CONFORMANCE_PLAN:
        for mode, examples in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):
            if examples:
                _conform(schema, server.url, ops[label], mode, examples, failures, statuses, None, CONFORMANCE)
    assert not failures, "\n".join(f"{n}x {f}" for f, n in failures.most_common(12))
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses), statuses


def test_with_an_api_key_auth_is_declared_and_enforced():
    """``ignored_auth`` sends each request again without the key and with a wrong one: both must be refused
    wherever the document declares the bearer scheme."""
    key = "sekrit"
    with serve(endless(), api_key=key, limits=LIMITS) as s:
        doc = httpx.get(f"{s.url}/openapi.json").json()
        schema = schemathesis.openapi.from_url(f"{s.url}/openapi.json")
        failures: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        for result in schema.get_all_operations():
            op = result.ok()
            _conform(schema, s.url, op, GenerationMode.POSITIVE, 4, failures, statuses,
                     {"Authorization": f"Bearer {key}"}, [*CONFORMANCE, ignored_auth])
    assert not failures, "\n".join(f"{n}x {f}" for f, n in failures.most_common(12))
    assert statuses[200] > 0, statuses
    secured = {(p, m) for p, ops in doc["paths"].items() for m, op in ops.items() if op.get("security")}
    assert secured == {("/v1/chat/completions", "post"), ("/v1/completions", "post"), ("/v1/models", "get"),
                       ("/v1/models/{model_id}", "get"), ("/metrics", "get")}
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert all("401" in op["responses"] for p, m in secured for op in [doc["paths"][p][m]])


def test_the_document_declares_no_auth_without_a_key(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "security" not in op and "401" not in op["responses"], (path, method)


def test_the_document_lists_the_statuses_and_media_types_the_server_answers_with(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    paths = doc["paths"]
    assert {"400", "404"} <= set(paths["/v1/models/{model_id}"]["get"]["responses"])
    assert "422" not in paths["/v1/models/{model_id}"]["get"]["responses"]  # FastAPI's, never answered here
    r = httpx.get(f"{server.url}/v1/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert httpx.get(f"{server.url}/metrics").headers["content-type"].startswith("text/plain")
    chat = paths["/v1/chat/completions"]["post"]["responses"]
    assert set(chat["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "404", "413", "429", "500", "502", "503", "504"} <= set(chat)
    # the server's limits are the document's maxima
    req = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": LIMITS.max_n} in req["n"]["anyOf"]
    assert any(b.get("maximum") == LIMITS.max_tokens_per_request for b in req["max_tokens"]["anyOf"])


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {**VALID, "stream": True, "stream_options": {"include_usage": True},
                              "include_reasoning": True}),
    ("/v1/completions", {"model": MODEL, "prompt": "6 times 7?", "stream": True, "echo": True}),
])
def test_a_streamed_answer_is_the_event_stream_the_document_describes(server, path, body):
    """Every event's data is a chunk (or [DONE]) valid against the documented chunk schema."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    resp = case.call(base_url=server.url, timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"][0].startswith("text/event-stream")
    assert resp.text.rstrip().endswith("data: [DONE]")
    case.validate_response(resp, checks=[status_code_conformance, content_type_conformance,
                                         response_schema_conformance])


def _request_validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


ASSISTANT_TURN = {"role": "assistant", "tool_calls": []}  # a replayed turn without content
Q = {"role": "user", "content": "What is 6 times 7?"}

SCHEMA_VALID = [
    ("ChatCompletionRequest", {**VALID, "messages": [Q, ASSISTANT_TURN, Q]}),
    ("ChatCompletionRequest", {**VALID, "logprobs": False, "top_logprobs": 0}),
    ("ChatCompletionRequest", {**VALID, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                               "modalities": ["text"], "frequency_penalty": 0, "logit_bias": {}}),
    ("ChatCompletionRequest", {**VALID, "max_tokens": 64.0, "n": 2.0, "seed": 7.0}),  # JSON Schema integers
    ("ChatCompletionRequest", {**VALID, "messages": [{"role": "system", "content": ""},
                                                     {"role": "user", "content": [{"type": "text", "text": " "},
                                                                                  {"type": "text", "text": "6x7?"}]}]}),
    ("ChatCompletionRequest", {**VALID, "stop": ["END"], "thinkscale": {"budget": 100.0, "max_calls": 2}}),
    ("CompletionRequest", {"model": MODEL, "prompt": "6 times 7?", "logprobs": 0, "best_of": 1, "suffix": ""}),
    ("CompletionRequest", {"model": MODEL, "prompt": ["6 times 7?", "7 times 6?"], "echo": True}),
]

SCHEMA_INVALID = [  # the server refuses these with a 400: the document must call them invalid too
    ("ChatCompletionRequest", {**VALID, "messages": [{"role": "user"}]}),
    ("ChatCompletionRequest", {**VALID, "messages": [{"role": "user", "content": None}]}),
    ("ChatCompletionRequest", {**VALID, "messages": [{"role": "system", "content": "be brief"}]}),
    ("ChatCompletionRequest", {**VALID, "messages": [{"role": "user", "content": " \u2003\x1c"}]}),
    ("ChatCompletionRequest", {**VALID, "logprobs": {}}),
    ("ChatCompletionRequest", {**VALID, "logprobs": True}),
    ("ChatCompletionRequest", {**VALID, "tools": [{"type": "function"}]}),
    ("ChatCompletionRequest", {**VALID, "stop": [""]}),
    ("ChatCompletionRequest", {**VALID, "n": LIMITS.max_n + 1}),
    ("ChatCompletionRequest", {**VALID, "max_tokens": LIMITS.max_tokens_per_request + 1}),
    ("CompletionRequest", {"model": MODEL, "prompt": ""}),
    ("CompletionRequest", {"model": MODEL, "prompt": "x", "best_of": 2}),
]


@pytest.mark.parametrize(("name", "body"), SCHEMA_VALID)
def test_schema_valid_requests_are_accepted(server, name, body):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert list(_request_validator(doc, name).iter_errors(body)) == []
    path = "/v1/chat/completions" if name == "ChatCompletionRequest" else "/v1/completions"
    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("name", "body"), SCHEMA_INVALID)
def test_requests_the_server_refuses_are_invalid_in_the_document(server, name, body):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    path = "/v1/chat/completions" if name == "ChatCompletionRequest" else "/v1/completions"
    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert list(_request_validator(doc, name).iter_errors(body)) != [], "the document calls this request valid"


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                           | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                         max_size=4),
                           max_leaves=12)


@st.composite
def raw_bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "corrupted", "field", "drop", "nested"]))
    valid = json.dumps(VALID).encode()
    if kind == "bytes":
        return bytes(draw(st.binary(max_size=200)))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "corrupted":
        i = draw(st.integers(0, len(valid) - 1))
        return valid[:i] + bytes(draw(st.binary(min_size=1, max_size=8))) + valid[i + 1:]
    if kind == "drop":
        body = dict(VALID)
        body.pop(draw(st.sampled_from(sorted(body))))
        return json.dumps(body).encode()
    if kind == "nested":
        return json.dumps({**VALID, "messages": [{"role": "user", "content": draw(json_values)}]}).encode()
    body = {**VALID, draw(st.sampled_from(FIELDS)): draw(json_values)}
    return json.dumps(body).encode()


def _fuzz_raw(http: httpx.Client, url: str, statuses: Counter[int], failures: list[str]) -> None:
    @given(body=raw_bodies())
    def run(body: bytes) -> None:
        resp = http.post(url, content=body, headers={"Content-Type": "application/json"})
        statuses[resp.status_code] += 1
        if resp.status_code >= 500:
            failures.append(f"{url}: {resp.status_code} {resp.text[:300]} for {body[:300]!r}")
        elif resp.status_code != 200:
            err = resp.json()["error"]
            assert err["message"] and err["type"], resp.text

    _fuzz(run, 100)


def test_raw_malformed_bodies_never_get_a_5xx(server):
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    with httpx.Client(timeout=60) as http:
        for path in ("/v1/chat/completions", "/v1/completions"):
            _fuzz_raw(http, f"{server.url}{path}", statuses, failures)
    assert not failures, "\n".join(failures[:10])
    assert sum(statuses.values()) >= 200 and any(400 <= s < 500 for s in statuses), statuses


def test_server_is_healthy_after_fuzzing(server):
    assert httpx.get(f"{server.url}/health").json()["running"] == 0
    r = server.client.chat.completions.create(model=f"{MODEL}:greedy", messages=VALID["messages"])
    assert r.choices[0].message.content == "42"
