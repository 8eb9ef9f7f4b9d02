"""Bad input is a 4xx with an OpenAI error object naming the field, never a 5xx; the API key is enforced."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from tests.server.harness import MODEL, endless, serve
from thinkscale.server import ServerLimits

OK = {"model": f"{MODEL}:greedy", "messages": [{"role": "user", "content": "What is 6 times 7?"}]}
LIMITS = ServerLimits(max_body_bytes=20_000, max_message_chars=5_000, max_prompt_chars=8_000, max_messages=50)


def with_(**kw):
    return {**OK, **kw}


def msg(**kw):
    return with_(messages=[{"role": "user", "content": "hi", **kw}])


# (body, status, param): body is a dict (sent as JSON) or bytes (sent raw)
CASES = [
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"[1, 2]", 400, None),
    (b'"just a string"', 400, None),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None),
    (b"\xff\xfe\x00garbage", 400, None),
    (b"[" * 50_000, 413, None),
    ({"messages": OK["messages"]}, 400, "model"),
    ({"model": MODEL}, 400, "messages"),
    (with_(messages=[]), 400, "messages"),
    (with_(messages="hello"), 400, "messages"),
    (with_(model=7), 400, "model"),
    (with_(model=""), 400, "model"),
    (with_(temperature="0.5"), 400, "temperature"),
    (with_(temperature=3), 400, "temperature"),
    (with_(temperature=True), 400, "temperature"),
    (with_(top_p=0), 400, "top_p"),
    (with_(n=0), 400, "n"),
    (with_(n=9), 400, "n"),
    (with_(n=1.5), 400, "n"),
    (with_(n=True), 400, "n"),
    (with_(max_tokens=0), 400, "max_tokens"),
    (with_(max_tokens="12"), 400, "max_tokens"),
    (with_(stream="yes"), 400, "stream"),
    (with_(stream_options={"include_usage": "yes"}), 400, "stream_options.include_usage"),
    (with_(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (with_(stop=[""]), 400, "stop"),
    (with_(seed="x"), 400, "seed"),
    (with_(reasoning_effort="extreme"), 400, "reasoning_effort"),
    (with_(thinkscale={"strategy": 5}), 400, "thinkscale.strategy"),
    (with_(thinkscale={"budget": -1}), 400, "thinkscale.budget"),
    (with_(thinkscale={"reveal": True}), 400, "thinkscale.reveal"),
    (with_(thinkscale={"params": {"temperature": [1]}}), 400, "thinkscale.params.temperature"),
    (with_(thinkscale="fast"), 400, "thinkscale"),
    (with_(frobnicate=1), 400, "frobnicate"),
    (with_(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    (with_(logprobs=True), 400, "logprobs"),
    (with_(response_format={"type": "json_object"}), 400, "response_format"),
    (with_(frequency_penalty=0.5), 400, "frequency_penalty"),
    (msg(role="tool"), 400, "messages[0].role"),
    (msg(role=None), 400, "messages[0].role"),
    (msg(content=3), 400, "messages[0].content"),
    (msg(content=None), 400, "messages[0]"),
    (msg(content=[{"type": "image_url", "image_url": {"url": "http://x"}}]), 400, "messages[0].content[0].type"),
    (msg(content=[{"type": "text"}]), 400, "messages[0].content[0].text"),
    (msg(tool_calls=[{"id": "1"}]), 400, "messages[0].tool_calls"),
    (msg(extra_thing=1), 400, "messages[0].extra_thing"),
    (with_(messages=[{"role": "system", "content": "only a system message"}]), 400, "messages"),
    (with_(messages=[{"role": "user", "content": "   "}]), 400, "messages"),
    (with_(model="other-model"), 404, "model"),
    (with_(messages=[{"role": "user", "content": "x" * 5_001}]), 413, "messages[0].content"),
    (with_(messages=[{"role": "user", "content": "x" * 4_000}] * 3), 413, "messages"),
    (with_(messages=[{"role": "user", "content": "x"}] * 51), 413, "messages"),
    (with_(messages=[{"role": "user", "content": "x" * 30_000}]), 413, None),  # over the body limit
]


@pytest.fixture(scope="module")
def server():
    with serve(endless(), limits=LIMITS) as s:
        yield s


@pytest.mark.parametrize(("body", "status", "param"), CASES,
                         ids=[f"{i}-{c[1]}-{c[2]}" for i, c in enumerate(CASES)])
def test_bad_chat_request_gets_a_4xx_error_object_naming_the_field(server, body, status, param):
    url = f"{server.url}/v1/chat/completions"
    r = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": [1, 2, 3]}, "prompt[0]"),
    ({"model": MODEL, "prompt": []}, "prompt"),
    ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": MODEL, "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": MODEL, "prompt": "x", "logprobs": 2}, "logprobs"),
    ({"model": MODEL, "prompt": ["a"] * 5, "n": 2}, "prompt"),
    ({"model": MODEL, "prompt": "x", "max_completion_tokens": 5}, "max_completion_tokens"),
])
def test_bad_completion_request_names_the_field(server, body, param):
    r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_no_bad_request_reached_the_backend(server):
    assert server.backend.calls == 0


def test_valid_request_still_works_after_the_bad_ones(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json=OK)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "42"


def test_unknown_route_and_wrong_method_are_error_objects(server):
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_declared_oversized_body_is_refused_before_it_is_read(server):
    """A Content-Length over the limit is answered 413 without waiting for (or reading) the body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 999999999\r\n\r\n{")
        head = sock.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413")


def test_api_key_is_required_on_v1_and_metrics_but_not_health():
    with serve(endless(), api_key="sekrit") as s:
        bad = openai.OpenAI(base_url=f"{s.url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model=MODEL, messages=OK["messages"])
        assert e.value.body["code"] == "invalid_api_key"
        assert httpx.post(f"{s.url}/v1/chat/completions", json=OK).status_code == 401
        assert httpx.post(f"{s.url}/v1/chat/completions", json=OK,
                          headers={"Authorization": "Basic sekrit"}).status_code == 401
        # the key is checked before the body: bad JSON without a key is still a 401
        assert httpx.post(f"{s.url}/v1/chat/completions", content=b"{").status_code == 401
        assert httpx.get(f"{s.url}/v1/models").status_code == 401
        assert httpx.get(f"{s.url}/metrics").status_code == 401
        assert httpx.get(f"{s.url}/health").status_code == 200
        r = s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=OK["messages"])
        assert r.choices[0].message.content == "42"
        assert s.backend.calls == 1


def test_error_body_is_json_even_for_huge_garbage(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=json.dumps({"model": "x" * 300}).encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
