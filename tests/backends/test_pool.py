"""Endpoint pools (``OpenAICompatBackend`` with several base URLs, ``thinkscale.backends.pool``): calls spread over
the servers, a dead server costs one failed call and no backoff, a server that comes back is health-checked and used
again, and a sweep over two servers survives one of them being killed with SIGKILL mid-sweep: every unit is stored
once, with the results of a sweep on one server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.backends.test_openai_compat import CHAT, chat_reply, usage_of
from tests.eval.conftest import write_table
from tests.helpers.llama_server import free_port
from tests.helpers.stub_http import StubServer
from thinkscale.backends.base import Backend, BackendError
from thinkscale.backends.openai_compat import OpenAICompatBackend
from thinkscale.backends.pool import check_urls, read_url_file
from thinkscale.cli import app
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import default_backend_factory, run_sweep
from thinkscale.types import GenRequest, Message

REQ = GenRequest(messages=CHAT, max_tokens=8, seed=0)


def pool_backend(urls: list[str], **kw: Any) -> OpenAICompatBackend:
    kw.setdefault("backoff_s", 5.0)  # a retry that waited would show in the time a test takes
    kw.setdefault("max_backoff_s", 5.0)
    return OpenAICompatBackend(urls, "stub-model", **kw)


def test_calls_alternate_between_idle_servers() -> None:
    """One call at a time: both servers are idle at every call, and the tie goes to each in turn."""
    replies = [chat_reply("hi", usage=usage_of(3, 1))] * 4
    with StubServer(replies) as a, StubServer(replies) as b, pool_backend([a.url, b.url]) as backend:
        for _ in range(8):
            backend.generate([REQ])
        assert (len(a.bodies), len(b.bodies)) == (4, 4)
        assert backend.pool.stats() == {a.url: (4, 0), b.url: (4, 0)}


def test_a_dead_server_costs_one_failed_call_and_no_backoff() -> None:
    """Nothing listens on the first URL. Its first call is refused and retried at once on the live server (no 5 s
    backoff); marked down, it gets no call in its cooldown: the 5 other requests all go to the live server."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with StubServer([chat_reply("hi", usage=usage_of(3, 1))] * 6) as live, \
            pool_backend([dead, live.url]) as backend:
        t0 = time.perf_counter()
        for _ in range(6):
            [c] = backend.generate([REQ])
            assert c.samples[0].text == "hi"
        assert time.perf_counter() - t0 < 2.0
        assert backend.pool.stats() == {dead: (1, 1), live.url: (6, 0)}


def test_a_server_back_from_its_cooldown_is_health_checked_then_used() -> None:
    """The first server is down for its first call; after the 1 s cooldown ``GET /models`` finds it up (the stub
    answers GET with 501, which counts as up: a server without the route is still there) and it takes calls again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with StubServer([chat_reply("b", usage=usage_of(3, 1))] * 4) as b, pool_backend([url, b.url]) as backend:
        backend.generate([REQ])
        assert backend.pool.stats()[url] == (1, 1)
        with StubServer([chat_reply("a", usage=usage_of(3, 1))] * 4) as a:
            handler = a.server.RequestHandlerClass
            a.close()  # the stub comes back on the first URL's port
            a.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=a.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
            time.sleep(1.1)
            texts = [backend.generate([REQ])[0].samples[0].text for _ in range(4)]
        assert sorted(texts) == ["a", "a", "b", "b"]


def test_every_server_down_is_one_error_naming_them_all() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    with pool_backend(urls, max_retries=1, backoff_s=0.0, max_backoff_s=0.0) as backend, \
            pytest.raises(BackendError, match="cannot reach " + ",".join(urls)):
        backend.generate([REQ])


def test_pool_urls_and_files_are_checked(tmp_path: Path) -> None:
    assert check_urls(["http://a:1/v1/", " http://b:2/v1"]) == ("http://a:1/v1", "http://b:2/v1")
    for bad, why in (([], "at least one"), (["a:1/v1"], "http"), (["http://a/v1,x"], "comma"),
                     (["http://a/v1", "http://a/v1/"], "twice")):
        with pytest.raises(ValueError, match=why):
            check_urls(bad)
    f = tmp_path / "pool.txt"
    f.write_text("# one vLLM server per node\nhttp://10.0.0.2:8000/v1\n\nhttp://10.0.0.3:8000/v1  # node 3\n")
    assert read_url_file(f) == ["http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
    f.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no base URL"):
        read_url_file(f)


# ---- a sweep over two servers, one killed mid-sweep ------------------------------------------------------------


def serve(table: str, port: int, delay_s: float) -> None:
    """An OpenAI-compatible server of the scripted table fake (``python -c``, so the test can SIGKILL it): each
    chat request is answered by the fake after ``delay_s``, so requests are in flight when it dies."""
    fake_server(table, port, delay_s).serve_forever()


def fake_server(table: str, port: int, delay_s: float) -> ThreadingHTTPServer:
    fake = scripted_backend(table)
    lock = threading.Lock()  # the fake is not thread-safe

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            b = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            req = GenRequest(messages=tuple(Message(m["role"], m["content"]) for m in b["messages"]), n=b["n"],
                             temperature=b["temperature"], top_p=b["top_p"], top_k=b["top_k"], min_p=b["min_p"],
                             max_tokens=b["max_tokens"], stop=tuple(b["stop"]), seed=b.get("seed"))
            time.sleep(delay_s)
            with lock:
                [c] = fake.generate([req])
            self._send({"object": "chat.completion", "choices": [
                {"index": i, "message": {"role": "assistant", "content": s.text}, "finish_reason": s.finish_reason}
                for i, s in enumerate(c.samples)],
                "usage": {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens}})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def _start_server(table: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", f"from tests.backends.test_pool import serve; "
                             f"serve({str(table)!r}, {port}, 0.05)"], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the fake server did not start within 60 s")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[subprocess.Popen[bytes], str]]]]:
    table = write_table(tmp_path / "table.json", limit=6)
    servers = [_start_server(table), _start_server(table)]
    try:
        yield table, servers
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait(timeout=30)


RESULT = ("SELECT model, strategy, budget, problem_id, seed, answer, correct, answer_correct, n_subsets, "
          "completion_tokens, prompt_tokens FROM units ORDER BY 1, 2, 3, 4, 5")


def test_a_sweep_over_two_servers_survives_one_killed_mid_sweep(
        two_servers: tuple[Path, list[tuple[subprocess.Popen[bytes], str]]], tmp_path: Path) -> None:
    """Four jobs in flight over two servers; after 3 jobs are stored the first server is SIGKILLed with requests in
    flight. They are retried on the second, which also takes every later call: the sweep stores all 24 jobs once,
    with the units of the same sweep on the second server alone."""
    (table, [(proc_a, url_a), (_, url_b)]) = two_servers
    base = dict(dataset="gsm8k", limit=6, models=["fake"], strategies=["greedy", "self-consistency"],
                budgets=[1, 2, 4], sample_seeds=[0, 1])
    pooled = SweepConfig(**base, backend=f"openai:{url_a},{url_b}")  # type: ignore[arg-type]
    built: list[Backend] = []

    def factory(model: str) -> Backend:
        built.append(default_backend_factory(pooled.backend)(model))
        return built[-1]

    stored = [0]

    def on_progress(p: object) -> None:
        stored[0] += 1
        if stored[0] == 3:
            proc_a.send_signal(signal.SIGKILL)

    s = run_sweep(pooled, tmp_path / "pool", backend_factory=factory, workers=4, on_progress=on_progress)
    assert (s.jobs_run, s.interrupted) == (24, False)
    assert proc_a.wait(timeout=10) == -signal.SIGKILL
    [backend] = built
    assert isinstance(backend, OpenAICompatBackend)
    stats = backend.pool.stats()
    assert stats[url_a][0] >= 3 and stats[url_a][1] >= 1  # it served before it died, and its death was seen
    assert stats[url_b][0] > stats[url_a][0]

    single = SweepConfig(**base, backend=f"openai:{url_b}")  # type: ignore[arg-type]
    run_sweep(single, tmp_path / "single", workers=4)
    with sqlite3.connect(tmp_path / "pool" / "results.sqlite") as a, \
            sqlite3.connect(tmp_path / "single" / "results.sqlite") as b:
        assert a.execute("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM jobs").fetchone() == (24, 24)
        assert a.execute(RESULT).fetchall() == b.execute(RESULT).fetchall()


def test_eval_takes_a_pool_from_a_file_and_checks_its_options(tmp_path: Path) -> None:
    """``--base-url-file`` runs the sweep on the pool and stores ``openai:URL,URL`` as the run's backend; giving
    ``--backend`` too, or Ray's options without ``--executor ray``, is refused before anything runs."""
    table = write_table(tmp_path / "table.json", limit=2)
    servers = [fake_server(str(table), free_port(), 0.0) for _ in range(2)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    urls = [f"http://127.0.0.1:{srv.server_address[1]}/v1" for srv in servers]
    pool = tmp_path / "pool.txt"
    pool.write_text("# two fakes\n" + "\n".join(urls) + "\n")
    base = ["eval", "--dataset", "gsm8k", "--limit", "2", "--model", "fake", "--strategy", "greedy", "--quiet"]
    try:
        r = CliRunner().invoke(app, [*base, "--base-url-file", str(pool), "--out", str(tmp_path / "run")])
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    assert r.exit_code == 0, r.output
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as db:
        config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (2,)
    assert config["backend"] == "openai:" + ",".join(urls)
    r = CliRunner().invoke(app, [*base, "--backend", "llamacpp", "--base-url", urls[0], "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(app, [*base, "--replicas", "4", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--replicas: only with --executor ray" in r.output
