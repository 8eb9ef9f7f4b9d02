"""The viewer's JSON API and live solve over HTTP (FastAPI's test client): a scripted-fake run's table and jobs, a
trace file, the server-sent events of a solve, and a clear 4xx JSON error for every kind of bad input."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.viewer.conftest import LIMIT, STRATEGIES
from thinkscale.backends.base import BackendProxy
from thinkscale.eval.fake import scripted_backend
from thinkscale.viewer.app import create_viewer_app, create_viewer_router
from thinkscale.viewer.live import POLL_SECONDS, SolveLimits
from thinkscale.viewer.sources import ViewerError, load_source


def client(app: Any) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def events_of(body: str) -> list[tuple[str, Any]]:
    out = []
    for chunk in body.strip().split("\n\n"):
        if chunk.startswith(":"):  # a keep-alive comment
            continue
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_run_table_and_a_beam_job(run_dir: Path) -> None:
    c = client(create_viewer_app(load_source(run_dir)))
    run = c.get("/api/run").json()
    assert run["n_problems"] == LIMIT and run["strategies"] == sorted(STRATEGIES) and run["budgets"] == [1, 2]
    assert len(run["units"]) == LIMIT * (1 + 2 + 2)  # greedy at budget 1; self-consistency and beam at 1 and 2
    beam = next(u for u in run["units"] if u["strategy"].startswith("beam") and u["budget"] == 2)
    view = c.get(f"/api/job/{beam['job_id']}").json()
    db = sqlite3.connect(run_dir / "results.sqlite")
    trace = json.loads(db.execute("SELECT trace FROM jobs WHERE job_id = ?", (beam["job_id"],)).fetchone()[0])
    samples = db.execute("SELECT COUNT(*) FROM samples WHERE job_id = ?", (beam["job_id"],)).fetchone()[0]
    db.close()
    (tree,) = [e for e in trace if e["event"] == "tree"]
    assert len(view["tree"]["nodes"]) == len(tree["nodes"]) == samples + 1  # the root is no candidate
    assert view["problem"]["id"] == beam["problem_id"] and view["problem"]["reference"] == beam["reference"]
    assert view["answer"] == beam["answer"] and view["cost"]["rows"][-1]["role"] == "total"
    chosen = view["tree"]["chosen"]
    assert chosen == view["chosen"] + 1 and view["tree"]["nodes"][chosen]["on_chosen_path"]
    assert {o["job_id"] for o in view["others"]} >= {beam["job_id"]}


def test_a_trace_file_and_solve_json_output(tmp_path: Path) -> None:
    """``solve --trace`` keeps no candidate texts; ``solve --json --show-reasoning`` output does, and loads too."""
    trace = {"strategy": "self-consistency", "spec": "self-consistency:n_samples=2", "knobs": {}, "answer": "42",
             "stop_reason": "done", "ledger": {"total": {"completion_tokens": 9, "calls": 1}, "by_role": {},
                                               "elapsed_seconds": 0.1},
             "trace": [{"event": "vote", "counts": {"42": 2.0}, "winner": "42"}]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(trace))
    view = client(create_viewer_app(load_source(path))).get("/api/trace").json()
    assert view["answer"] == "42" and view["votes"]["items"][0]["value"] == 2.0 and not view["texts_kept"]
    out = {"answer": "42", "strategy": "self-consistency", "stop_reason": "done", "chosen_index": 1,
           "samples": [{"answer": "41", "completion_tokens": 3, "finish_reason": "stop", "text": "so 41"},
                       {"answer": "42", "completion_tokens": 3, "finish_reason": "stop", "text": "so 42"}],
           "usage": {"completion_tokens": 6, "calls": 1, "wall_seconds": 0.2}, "by_role": {},
           "trace": trace["trace"]}
    path.write_text(json.dumps(out))
    view = client(create_viewer_app(load_source(path))).get("/api/trace").json()
    assert [(c["text"], c["chosen"]) for c in view["candidates"]] == [("so 41", False), ("so 42", True)]
    assert view["cost"]["rows"] == [{"role": "total", "prompt_tokens": None, "cached_prompt_tokens": None,
                                     "completion_tokens": 6, "calls": 1, "seconds": None, "flops": None}]


@pytest.mark.parametrize("make, said", [
    (lambda p: p / "nowhere", "does not exist"),
    (lambda p: p, "is not a run folder: it has no results.sqlite"),
    (lambda p: _write(p / "run" / "results.sqlite", b"this is no database" * 100).parent,
     "is not a usable thinkscale run store"),
    (lambda p: _empty_sqlite(p / "other" / "results.sqlite").parent, "it has no jobs, problems, samples, units"),
    (lambda p: _write(p / "t.json", b"{not json"), "is not a trace file: not valid JSON"),
    (lambda p: _write(p / "t.json", b"[1, 2]"), 'expected a JSON object with a "trace" list'),
    (lambda p: _write(p / "t.json", b"\xff\xfe\x00"), "not UTF-8"),
    (lambda p: _write(p / "t.json", b'{"trace": "none"}'), 'expected a JSON object with a "trace" list'),
])
def test_missing_or_corrupt_sources_are_one_clear_error(tmp_path: Path, make: Any, said: str) -> None:
    with pytest.raises(ViewerError, match="^[^\n]+$") as e:
        load_source(make(tmp_path))
    assert said in str(e.value)


def test_events_of_no_known_form_are_shown_as_they_are(tmp_path: Path) -> None:
    """An entry that fits no event type (a damaged or future trace) is kept verbatim as a ``legacy`` event: the
    trace still loads and its timeline shows it."""
    path = _write(tmp_path / "t.json", b'{"trace": [{"event": "tree", "nodes": 5}, 7, {"event": "stop", '
                                       b'"reason": "budget"}]}')
    view = client(create_viewer_app(load_source(path))).get("/api/trace").json()
    assert [t["kind"] for t in view["timeline"]] == ["legacy", "legacy", "stop"]
    assert view["tree"] is None and view["stop_detail"] == "budget"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _empty_sqlite(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    db.commit()
    db.close()
    return path


def test_bad_requests_are_json_errors_never_500(run_dir: Path, tmp_path: Path) -> None:
    c = client(create_viewer_app(load_source(run_dir)))
    for url, status, said in [("/api/job/999999", 404, "there is no job 999999"), ("/api/job/abc", 400, "not a number"),
                              ("/api/job/99999999999999999999999", 400, "not a number"),
                              ("/api/trace", 404, "not started with a trace file"),
                              ("/api/nothing/here", 404, "no viewer API route"),
                              ("/static/../sources.py", 404, "Not Found"), ("/static/app.py", 404, "no static file")]:
        r = c.get(url)
        assert r.status_code == status, url
        assert said in r.text, (url, r.text)
    assert c.get("/", headers={"host": "evil.example"}).status_code == 400  # loopback names only (DNS rebinding)
    page = c.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    # the store broken after the viewer started: still a JSON error
    (run_dir.parent / "broken").mkdir(exist_ok=True)
    src = load_source(run_dir)
    src.path = run_dir.parent / "broken"  # type: ignore[union-attr]
    r = client(create_viewer_app(src)).get("/api/run")
    assert r.status_code == 503 and "cannot be opened" in r.json()["error"]


def test_live_solve_streams_events_then_the_result(solve_table: Path) -> None:
    """adaptive-sc on the scripted table: a start event, one trace event per recorded event (generate, wave, ...,
    stop, vote), then the result with the cost table and the candidates graded against the reference."""
    c = client(create_viewer_app(None, backend=scripted_backend(solve_table)))
    r = c.post("/api/solve", json={"problem": "What is 6 times 7?", "strategy": "adaptive-sc:max_samples=8",
                                   "budget_tokens": 4000, "reference": "42", "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events_of(r.text)
    kinds = [k for k, _ in got]
    assert kinds[0] == "start" and kinds[-1] == "result" and set(kinds[1:-1]) == {"trace"}
    trace = [d for k, d in got if k == "trace"]
    assert [t["i"] for t in trace] == list(range(len(trace)))
    assert [t["kind"] for t in trace][-2:] == ["stop", "vote"] and "wave" in {t["kind"] for t in trace}
    result = got[-1][1]
    assert [t["event"] for t in trace] == [t["event"] for t in result["timeline"]]
    assert result["answer"] == "42" and result["correct"] is True
    assert {row["role"] for row in result["cost"]["rows"]} == {"generator", "total"}
    assert all(cand["correct"] == (cand["answer"] == "42") for cand in result["candidates"])


def test_live_solve_refuses_bad_requests(solve_table: Path) -> None:
    c = client(create_viewer_app(None, backend=scripted_backend(solve_table),
                                 limits=SolveLimits(max_completion_tokens=1000)))
    cases = [({"problem": ""}, 400, "write the problem"), ({"problem": "x", "budget_tokens": 5000}, 400, "more than"),
             ({"problem": "x", "budget_tokens": "lots"}, 400, "whole number"),
             ({"problem": "x", "strategy": "nope"}, 400, "unknown strategy"),
             ({"problem": "x", "strategy": "best-of-n:verifier=prm,verifier_path=/etc/passwd"}, 400,
              "cannot be set from the page"),
             ({"problem": "x", "strategy": "self-consistency:n_samples=zero"}, 400, "n_samples"),
             ({"problem": "x", "colour": "red"}, 400, "unknown field"),
             ({"problem": "x", "task": "poetry"}, 400, "task")]
    for body, status, said in cases:
        r = c.post("/api/solve", json=body)
        assert (r.status_code, said in r.json()["error"]) == (status, True), (body, r.text)
    assert c.post("/api/solve", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert c.post("/api/solve", data={"problem": "x"}).status_code == 415  # a plain form post from another site
    off = client(create_viewer_app(None)).post("/api/solve", json={"problem": "x"})
    assert off.status_code == 409 and "solving from the page is off" in off.json()["error"]


def test_a_failing_run_ends_the_stream_with_its_error(solve_table: Path) -> None:
    """A prompt the scripted table has no answer for fails inside the run: the stream says so, no 500."""
    c = client(create_viewer_app(None, backend=scripted_backend(solve_table)))
    r = c.post("/api/solve", json={"problem": "What is 2 plus 2?", "strategy": "greedy"})
    assert r.status_code == 200
    kind, data = events_of(r.text)[-1]
    assert kind == "error" and "has no responses for the prompt" in data["error"]


class Gate(BackendProxy):
    """A backend whose calls wait until the test opens the gate (``entered`` is set when one is waiting)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def generate(self, requests: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(30)
        return super().generate(requests)


def test_one_solve_at_a_time(solve_table: Path, serve: Any) -> None:
    """While a solve runs, a second one is refused (429, said in words), not queued; once the first has finished
    the next one runs."""
    backend = Gate(scripted_backend(solve_table))
    s = serve(create_viewer_app(None, backend=backend))
    body = {"problem": "What is 6 times 7?", "strategy": "greedy"}
    first: list[str] = []
    t = threading.Thread(target=lambda: first.append(httpx.post(s.url + "api/solve", json=body, timeout=30).text))
    t.start()
    assert backend.entered.wait(10)
    second = httpx.post(s.url + "api/solve", json=body, timeout=10)
    assert second.status_code == 429 and "another solve is running" in second.json()["error"]
    backend.gate.set()
    t.join(30)
    assert events_of(first[0])[-1][0] == "result"
    assert events_of(httpx.post(s.url + "api/solve", json=body, timeout=30).text)[-1][0] == "result"


def test_a_page_that_goes_away_stops_its_run(solve_table: Path, serve: Any) -> None:
    """The client closes the stream while the run waits in a backend call: the run's next call raises Cancelled,
    the slot is free again and the next solve runs."""
    backend = Gate(scripted_backend(solve_table))
    s = serve(create_viewer_app(None, backend=backend))
    body = {"problem": "What is 6 times 7?", "strategy": "self-refine:max_rounds=3"}
    with httpx.stream("POST", s.url + "api/solve", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert backend.entered.wait(10)
    time.sleep(4 * POLL_SECONDS)  # a quiet stream notices its page is gone within POLL_SECONDS
    backend.gate.set()  # the call in flight finishes; the run's next call sees the page gone
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r2 = httpx.post(s.url + "api/solve", json={"problem": "What is 6 times 7?"}, timeout=10)
        if r2.status_code != 429:
            break
        time.sleep(0.05)
    assert r2.status_code == 200 and events_of(r2.text)[-1][0] == "result"
    calls = len(backend.inner.requests)  # type: ignore[attr-defined]
    assert calls <= 2  # the cancelled self-refine made at most its draft call; greedy made one


def test_the_router_mounts_under_a_prefix(run_dir: Path) -> None:
    """How ``thinkscale serve`` mounts it: ``include_router(create_viewer_router(...), prefix="/ui")``; the page's
    URLs are relative, so it works there; /ui redirects to /ui/."""
    app = FastAPI()
    app.include_router(create_viewer_router(load_source(run_dir)), prefix="/ui")
    c = client(app)
    assert c.get("/ui/").status_code == 200 and c.get("/ui/static/viewer.js").status_code == 200
    assert c.get("/ui", follow_redirects=False).status_code in (307, 308)
    assert len(c.get("/ui/api/run").json()["units"]) == LIMIT * 5
