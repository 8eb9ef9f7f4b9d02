"""The viewer in a real headless browser (Debian's Chromium over the DevTools protocol, tests/viewer/cdp.py), on a
scripted-fake sweep: the run's table loads and filters; a beam search's tree has one drawn node per tree node and
its chosen path marked; clicking a node or a candidate shows its text; two strategies side by side; a solve from the
page streams its events; a trace full of HTML stays text; bad input is a clear message. No test leaves a console
error (except the 404s of the bad-input test, which it expects)."""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import image as mpimg

from tests.strategies.helpers import PROBLEM, endless
from tests.viewer.cdp import Browser, Page
from tests.viewer.conftest import LIMIT, Served
from tests.viewer.shots import SolveForm, open_viewer, solve_on_page, take
from tests.viewer.test_model import BEAM_EVENTS, BEAM_TREE, deepconf_run
from thinkscale.eval.fake import scripted_backend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.events import Delegate, Tool
from thinkscale.strategies.mcts import MctsStats
from thinkscale.strategies.run import execute
from thinkscale.strategies.sc_tir import Paths
from thinkscale.types import Usage
from thinkscale.viewer.app import create_viewer_app
from thinkscale.viewer.sources import load_source


@pytest.fixture(scope="module")
def slow_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The solve table with simulated decode time, so a run's waves arrive over a second or two."""
    path = tmp_path_factory.mktemp("viewer-slow") / "slow.json"
    path.write_text(json.dumps({"seconds_per_token": 0.01, "responses": {"What is 6 times 7?": [
        "Six sevens are 42, so the answer is \\boxed{42}", "I think it is \\boxed{41}",
        "7 + 7 + 7 + 7 + 7 + 7 = \\boxed{42}"]}}))
    return path


@pytest.fixture(scope="module")
def viewer(run_dir: Path, slow_table: Path) -> Iterator[Served]:
    s = Served(create_viewer_app(load_source(run_dir), backend=scripted_backend(slow_table)))
    yield s
    s.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.new_page()
    yield p
    p.close()


def api(served: Served, path: str) -> Any:
    return TestClient(served.server.config.app, base_url="http://127.0.0.1").get(path).json()


def count(page: Page, selector: str) -> int:
    return int(page.eval(f"document.querySelectorAll({json.dumps(selector)}).length"))


def test_the_run_loads_and_its_table_filters(viewer: Served, page: Page) -> None:
    units = api(viewer, "/api/run")["units"]
    open_viewer(page, viewer.url)
    assert count(page, "#problem-rows tr") == len(units) == LIMIT * 5
    right = sum(1 for u in units if u["answer_correct"])
    assert 0 < right < len(units)
    page.select("#f-correct", "right")
    assert count(page, "#problem-rows tr") == right == count(page, "#problem-rows tr[data-correct='1']")
    page.select("#f-correct", "wrong")
    assert count(page, "#problem-rows tr") == len(units) - right == count(page, "#problem-rows tr[data-correct='0']")
    page.select("#f-correct", "all")
    page.select("#f-strategy", "greedy")
    assert count(page, "#problem-rows tr") == LIMIT
    page.select("#f-strategy", "self-consistency")
    page.select("#f-budget", "2")
    assert count(page, "#problem-rows tr") == LIMIT
    assert page.eval("document.getElementById('row-count').textContent") == f"{LIMIT} of {len(units)} rows"
    assert page.errors == []


def test_a_beam_tree_opened_from_the_table(viewer: Served, page: Page, run_dir: Path) -> None:
    """Filter to beam search at width 2, open the first row: one <g.node> per node of the stored tree, the chosen
    path (root to the chosen candidate's node) marked on its nodes and edges; a click on a pruned node shows its
    partial solution, a click on a candidate its stored text."""
    open_viewer(page, viewer.url)
    beam = next(s for s in api(viewer, "/api/run")["strategies"] if s.startswith("beam"))
    page.select("#f-strategy", beam)
    page.select("#f-budget", "2")
    job = int(page.eval("document.querySelector('#problem-rows tr').dataset.job"))
    page.click("#problem-rows tr")
    page.wait_for("document.querySelectorAll('#tree g.node').length > 0")
    db = sqlite3.connect(run_dir / "results.sqlite")
    trace = json.loads(db.execute("SELECT trace FROM jobs WHERE job_id = ?", (job,)).fetchone()[0])
    texts = dict(db.execute("SELECT idx, text FROM samples WHERE job_id = ?", (job,)).fetchall())
    chosen = db.execute("SELECT idx FROM samples WHERE job_id = ? AND chosen = 1", (job,)).fetchone()[0]
    db.close()
    (tree,) = [e["nodes"] for e in trace if e["event"] == "tree"]
    path, i = [], chosen + 1
    while i is not None:
        path.append(i)
        i = tree[i]["parent"]
    assert count(page, "#tree g.node") == len(tree) == len(texts) + 1
    drawn_path = page.eval("[...document.querySelectorAll('#tree g.node.on-path')].map(g => +g.dataset.node)")
    assert sorted(drawn_path) == sorted(path) and len(path) >= 3
    assert count(page, "#tree line.edge.on-path") == len(path) - 1
    assert page.eval("document.querySelector('#tree g.node.chosen').dataset.node") == str(chosen + 1)
    pruned = page.eval("+document.querySelector('#tree g.node.status-pruned').dataset.node")
    page.click(f"#tree g.node[data-node='{pruned}']")
    assert page.eval("document.getElementById('detail-text').textContent") == texts[pruned - 1]
    page.click(f"#candidates tr[data-index='{chosen}']")
    assert page.eval("document.getElementById('detail-text').textContent") == texts[chosen]
    assert page.errors == []


def test_two_strategies_side_by_side(viewer: Served, page: Page) -> None:
    units = api(viewer, "/api/run")["units"]
    first = units[0]
    other = next(u for u in units if u["problem_id"] == first["problem_id"] and u["strategy"] != first["strategy"])
    open_viewer(page, viewer.url + f"#/job/{first['job_id']}")
    page.wait_for("document.getElementById('compare-with') !== null")
    page.select("#compare-with", str(other["job_id"]))
    page.wait_for("document.querySelectorAll('.compare .pane .view').length === 2")
    shown = page.eval("[...document.querySelectorAll('.compare .pane .view')].map(v => v.dataset.strategy)")
    assert shown == [first["strategy"], other["strategy"]]
    assert page.errors == []


def test_a_solve_from_the_page_streams_its_events(viewer: Served, page: Page) -> None:
    """adaptive-sc on the slow fake: trace events are listed while the run is still going, then the result with
    its cost table; every streamed event is listed once."""
    open_viewer(page, viewer.url)
    seen = solve_on_page(page, SolveForm("What is 6 times 7?", "adaptive-sc:max_samples=12", "42"))
    assert page.errors == []
    # the first wave's events were on the page well before the run ended (its later waves take ~0.3 s each)
    assert seen["lead_ms"] > 300
    assert page.eval("document.getElementById('s-status').textContent").startswith("done")
    assert page.eval("document.querySelector('#s-result #answer').textContent") == "42"
    assert count(page, "#s-result #cost tbody tr") >= 2  # generator, total
    timeline = page.eval("document.querySelectorAll('#s-result .timeline li').length")
    assert timeline == seen["events"]


HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b>bold</b>"


def test_html_in_a_trace_is_shown_as_text(browser: Browser, tmp_path: Path) -> None:
    """A trace whose answers, steps and texts are HTML: the page shows the characters, runs nothing, loads
    nothing."""
    node = {"index": 1, "parent": 0, "kind": "step", "step": HOSTILE, "depth": 1, "terminal": "answer",
            "answer": HOSTILE, "step_scores": [0.5], "completion_tokens": 9, "finish_reason": "stop"}
    root = {**node, "index": 0, "parent": None, "step": None, "depth": 0, "terminal": None, "answer": None,
            "step_scores": []}
    doc = {"answer": HOSTILE, "strategy": "beam", "stop_reason": "done", "chosen_index": 0,
           "samples": [{"answer": HOSTILE, "completion_tokens": 9, "finish_reason": "stop", "text": HOSTILE}],
           "trace": [{"event": "vote", "counts": {HOSTILE: 1.0}, "winner": HOSTILE},
                     {"event": "tree", "nodes": [root, node]}]}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    served = Served(create_viewer_app(load_source(path)))
    page = browser.new_page()
    try:
        open_viewer(page, served.url)
        page.wait_for("document.querySelector('#tree g.node') !== null")
        assert page.eval("document.getElementById('answer').textContent") == HOSTILE
        page.click("#tree g.node[data-node='1']")
        assert page.eval("document.getElementById('detail-text').textContent") == HOSTILE
        page.click("#candidates tr[data-index='0']")
        assert page.eval("document.getElementById('detail-text').textContent") == HOSTILE
        assert page.eval("window.__pwned === undefined") is True
        assert page.eval("[document.scripts.length, document.images.length]") == [1, 0]  # viewer.js; no <img>
        assert page.eval("[...document.querySelectorAll('b')].some(b => b.textContent === 'bold')") is False
        assert page.errors == []
    finally:
        page.close()
        served.close()


def test_bad_input_is_a_clear_message(viewer: Served, browser: Browser, tmp_path: Path) -> None:
    page = browser.new_page()
    try:
        open_viewer(page, viewer.url + "#/job/999999")
        page.wait_for("!document.getElementById('banner').hidden")
        assert "there is no job 999999 in the run" in page.eval("document.getElementById('banner').textContent")
        # the 404 the page asked for is logged by the browser; nothing else went wrong
        assert page.errors and all("404" in e for e in page.errors)
    finally:
        page.close()
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"trace": [{"event": "stop", "reason": "done"}]}))
    served = Served(create_viewer_app(load_source(trace)))
    page = browser.new_page()
    try:
        open_viewer(page, served.url + "#/solve")
        assert "Solving from the page is off" in page.eval("document.getElementById('solve-off').textContent")
        page.eval("location.hash = '#/job/1'")
        page.wait_for("!document.getElementById('banner').hidden")
        assert "not started with a run folder" in page.eval("document.getElementById('banner').textContent")
    finally:
        page.close()
        served.close()


def test_screenshots_of_the_three_views(viewer: Served, browser: Browser, tmp_path: Path) -> None:
    """run.png, job.png and solve.png, each a drawn page (not one flat colour); with THINKSCALE_VIEWER_SCREENSHOTS
    set to a folder they are written there too (docs/viewer/ holds the ones taken on a real run)."""
    units = api(viewer, "/api/run")["units"]
    job = next(u["job_id"] for u in units if u["strategy"].startswith("beam") and u["budget"] == 2)
    tree = api(viewer, f"/api/job/{job}")["tree"]
    node = next(n["index"] for n in tree["nodes"] if n["status"] == "pruned")
    page = browser.new_page(width=1400, height=900)
    out = Path(os.environ.get("THINKSCALE_VIEWER_SCREENSHOTS") or tmp_path)
    try:
        shots = take(page, viewer.url, out, job=job, node=node,
                     form=SolveForm("What is 6 times 7?", "self-consistency:n_samples=4", "42"))
        assert page.errors == []
    finally:
        page.close()
    assert [s.name for s in shots] == ["run.png", "job.png", "solve.png"]
    for shot in shots:
        px = mpimg.imread(shot)[..., :3].astype(np.float32)
        assert px.shape[0] >= 600 and px.std() > 0.05, shot


def test_every_section_draws_without_errors(browser: Browser, tmp_path: Path) -> None:
    """One trace file with what every kind of run records: auto's policy, features and checks with a delegated
    beam search (a nested view with its own tree), DeepConf's waves, SC-TIR's code runs and an MCTS tree."""
    auto = execute(build_strategy("auto"), PROBLEM, endless(), rng=random.Random(0))
    sub = Delegate("beam", "done", "8", Usage(), BEAM_EVENTS)
    tools = (Tool(0, 0, 0, False, None, None, 0.01, 0.5, 3, 0, "print(6*7)", "42\n"),
             Tool(1, 0, 1, False, None, "ZeroDivisionError", 0.01, 0.5, 0, 9, "print(1/0)", ""),
             Paths(("answered", "length"), (1, 1)))
    events = [*auto.trace, sub, *deepconf_run().trace, *tools,
              MctsStats((3, 2, 1), (1.5, 1.0, math.inf), {"1": 0.5, "2": 0.5}), BEAM_TREE]
    path = tmp_path / "all.json"
    path.write_text(json.dumps({"strategy": "auto", "answer": "8", "trace": [e.to_json() for e in events]},
                               allow_nan=True))
    served = Served(create_viewer_app(load_source(path)))
    page = browser.new_page()
    try:
        open_viewer(page, served.url)
        page.wait_for("document.getElementById('auto') !== null")
        for selector in ("#auto-features", "#auto .nested #tree", "#waves", "#code-runs .code-run-card",
                         "#vote-bars", "#candidates", ".timeline li"):
            assert count(page, selector) > 0, selector
        assert count(page, "#code-runs pre.code") == 2 and count(page, "#auto .nested #tree g.node") == 6
        assert page.errors == []
    finally:
        page.close()
        served.close()

