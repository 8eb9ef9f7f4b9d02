"""Property-based API tests: no generated request, however malformed, gets a 5xx.

Schemathesis generates requests from the server's own OpenAPI schema: negative mode breaks the schema (wrong
types, missing fields, out-of-range numbers), positive mode follows it (with the model pointed at the served one,
so valid bodies run all the way through a strategy). A second, schema-blind fuzzer sends raw bytes, truncated and
corrupted JSON, and arbitrary JSON values in every field. Failures are collected rather than shrunk, so one run
reports every distinct 5xx it found."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

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
