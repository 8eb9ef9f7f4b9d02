"""Sharing the machine, on the scripted fake: slots and the queue (429 + Retry-After), clients that go away
(their remaining work is never started), timeouts, and backend failures as 5xx error objects, not crashes.

A ``Gate`` holds the fake inside ``generate`` until the test opens it, so every state is reached deliberately."""

from __future__ import annotations

import socket
import threading

import httpx
import openai
import pytest

from tests.server.harness import MODEL, serve, wait_until
from thinkscale.backends.base import BackendError
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.server import ServerLimits

Q = [{"role": "user", "content": "What is 6 times 7?"}]


class Gate:
    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def entry(self, req, j) -> str:
        self.entered.set()
        if not self.opened.wait(30):
            raise AssertionError("the test never opened the gate")
        return "think think \\boxed{42}"

    def backend(self, n: int = 64) -> ScriptedBackend:
        return ScriptedBackend([self.entry] * n)


def post(url: str, body: dict) -> socket.socket:
    """Send a whole request on a raw socket; the test closes it without reading the answer (a client that gave
    up). Closing before the server has read the body is a different case: that one is a 499 at once."""
    host, port = url.removeprefix("http://").split(":")
    data = httpx.Request("POST", "/", json=body).content
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def cancelled_jobs(s) -> int:
    return sum(j.cancel.is_set() for j in list(s.app.state.jobs))


def test_full_queue_gets_429_with_retry_after_and_the_admitted_ones_finish():
    gate = Gate()
    with serve(gate.backend(), limits=ServerLimits(max_concurrency=1, max_queue=1)) as s:
        adm = s.app.state.admission
        out: dict[str, object] = {}

        def ask(key: str) -> None:
            out[key] = s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q)

        a = threading.Thread(target=ask, args=("a",))
        a.start()
        assert gate.entered.wait(10)
        b = threading.Thread(target=ask, args=("b",))
        b.start()
        wait_until(lambda: adm.queued == 1, what="the second request to queue")
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"model": f"{MODEL}:greedy", "messages": Q})
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q)
        gate.opened.set()
        a.join(10)
        b.join(10)
        assert out["a"].choices[0].message.content == "42" and out["b"].choices[0].message.content == "42"  # type: ignore[attr-defined]
        assert s.backend.calls == 2 and adm.running == 0 and adm.queued == 0


def test_disconnect_cancels_the_remaining_work_and_frees_the_slot_when_it_has_stopped():
    """n=3 greedy choices go through the (not thread-safe, so serialised) fake one at a time. The client hangs up
    while the first is in the backend: the other two must never start."""
    gate = Gate()
    with serve(gate.backend()) as s:
        adm = s.app.state.admission
        sock = post(s.url, {"model": f"{MODEL}:greedy", "messages": Q, "n": 3})
        assert gate.entered.wait(10)
        sock.close()
        wait_until(lambda: cancelled_jobs(s) == 1, what="the disconnect to cancel the job")
        assert adm.running == 1  # the first choice is still inside generate(): the slot is not free yet
        gate.opened.set()
        wait_until(lambda: adm.running == 0, what="the slot to be released")
        assert s.backend.calls == 1 and len(s.backend.requests) == 1
        assert s.results == []  # no choice ran to a Result
        text = httpx.get(f"{s.url}/metrics").text
    assert 'thinkscale_requests_cancelled_total{reason="disconnect"} 1.0' in text
    assert "thinkscale_cancelled_completion_tokens_total 3.0" in text  # the one call that did run


def test_stream_disconnect_cancels_the_remaining_work():
    gate = Gate()
    with serve(gate.backend()) as s:
        adm = s.app.state.admission
        with httpx.stream("POST", f"{s.url}/v1/chat/completions",
                          json={"model": f"{MODEL}:greedy", "messages": Q, "n": 3, "stream": True}) as r:
            lines = r.iter_lines()  # keep it: a dropped line iterator closes the connection at once
            first = next(lines)
            assert first.startswith("data: ") and '"role": "assistant"' in first
            assert gate.entered.wait(10)
        wait_until(lambda: cancelled_jobs(s) == 1, what="the disconnect to cancel the job")
        gate.opened.set()
        wait_until(lambda: adm.running == 0, what="the slot to be released")
        assert s.backend.calls == 1


def test_a_queued_client_that_leaves_gives_its_place_up_and_never_runs():
    gate = Gate()
    with serve(gate.backend(), limits=ServerLimits(max_concurrency=1, max_queue=4)) as s:
        adm = s.app.state.admission
        t = threading.Thread(target=lambda: s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q))
        t.start()
        assert gate.entered.wait(10)
        sock = post(s.url, {"model": f"{MODEL}:greedy", "messages": Q})
        wait_until(lambda: adm.queued == 1, what="the second request to queue")
        sock.close()
        wait_until(lambda: adm.queued == 0, what="the queued request to leave")
        gate.opened.set()
        t.join(10)
        wait_until(lambda: adm.running == 0)
        assert s.backend.calls == 1


def test_a_request_over_the_time_limit_is_cancelled_with_504():
    gate = Gate()
    with serve(gate.backend(), limits=ServerLimits(request_timeout_s=0.5)) as s:
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"model": f"{MODEL}:greedy", "messages": Q, "n": 2},
                       timeout=10)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        gate.opened.set()
        wait_until(lambda: s.app.state.admission.running == 0)
        assert s.backend.calls == 1


class Broken(ScriptedBackend):
    def generate(self, requests):
        raise BackendError("the model server is on fire")


def test_backend_failure_is_a_502_error_object_in_both_modes():
    with serve(Broken()) as s:
        with pytest.raises(openai.APIStatusError) as e:
            s.client.chat.completions.create(model=MODEL, messages=Q)
        assert e.value.status_code == 502
        assert "on fire" in e.value.body["message"] and e.value.body["code"] == "backend_error"
        with pytest.raises(openai.APIError) as e2:
            list(s.client.chat.completions.create(model=MODEL, messages=Q, stream=True))
        assert "on fire" in e2.value.message
        assert s.app.state.admission.running == 0
        assert httpx.get(f"{s.url}/health").status_code == 200


def test_a_strategy_crash_is_a_500_error_object_not_a_dropped_connection():
    with serve(ScriptedBackend([])) as s:  # ScriptExhausted on the first call: a server-side bug
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"model": MODEL, "messages": Q})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        r = s.client.chat.completions.create  # the server keeps serving
        assert httpx.get(f"{s.url}/v1/models").status_code == 200


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_server_error():
    with serve(ScriptedBackend([])) as s:
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mod")
        wait_until(lambda: 'status="499"' in httpx.get(f"{s.url}/metrics").text, what="the 499 to be counted")
        assert 'status="500"' not in httpx.get(f"{s.url}/metrics").text
