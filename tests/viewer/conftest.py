"""Fixtures for the viewer tests: a scripted-fake sweep whose beam search grows a real tree, the viewer served on
127.0.0.1 from a thread, and one headless Chromium per test module (``tests/viewer/cdp.py``)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.eval.conftest import write_table
from tests.eval.test_sharing import p_yes
from tests.viewer.cdp import CHROMIUM, Browser
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.runner import run_sweep
from thinkscale.types import GenRequest

LIMIT = 3  # problems in the fixture run
STRATEGIES = ["greedy", "self-consistency", "beam:verifier=pyes,expansions_per_beam=2"]
BUDGETS = [1, 2]


def solution_paths(reference: int) -> list[list[str]]:
    """Four ways through a problem, as steps: two share their first step with another, so a step search branches;
    the first and the last end right, the other two wrong."""
    return [["Read the problem.", "Multiply the numbers out.", f"So the answer is \\boxed{{{reference}}}"],
            ["Read the problem.", "Guess roughly.", f"So the answer is \\boxed{{{reference + 1}}}"],
            ["Start from the end.", "Work backwards.", f"The answer is \\boxed{{{reference + 2}}}"],
            ["Start from the end.", f"The answer is \\boxed{{{reference}}}"]]


def stepwise_backend(paths_by_prompt: dict[str, list[list[str]]]) -> ScriptedBackend:
    """A scripted fake that answers from whole solution paths: a fresh request gets a path's full text (greedy: the
    first path, sampled: a seeded pick), a continued one (a step search's prefill of k steps) the rest of a path whose
    first k steps match, picked by the sample's seed; the fake cuts it at the step delimiter. P(yes) scores from
    ``p_yes``. Deterministic: the answer depends only on the request."""

    def answer(req: GenRequest, j: int) -> str:
        assert req.messages is not None
        users = [m.content for m in req.messages if m.role == "user"]
        paths = paths_by_prompt[users[-1]]
        done: list[str] = []
        if req.continue_final:
            done = [s for s in req.messages[-1].content.split("\n\n") if s.strip()]
        fits = [p for p in paths if p[:len(done)] == done and len(p) > len(done)] or paths
        seed = req.sample_seed(j)
        path = fits[0] if req.temperature == 0 or seed is None else fits[seed % len(fits)]
        return "\n\n".join(path[len(done):] if path[:len(done)] == done else path)

    return ScriptedBackend([answer] * 100_000, score_fn=p_yes)


def fixture_paths(limit: int = LIMIT) -> dict[str, list[list[str]]]:
    ds = load_dataset("gsm8k").subset(limit, 0)
    return {p.problem.messages[-1].content: solution_paths(int(p.reference)) for p in ds.problems}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep on the stepwise fake: 3 GSM8K problems x greedy, self-consistency, beam search at budgets 1, 2."""
    base = tmp_path_factory.mktemp("viewer-run")
    table = write_table(base / "table.json", limit=LIMIT)
    paths = fixture_paths()
    out = base / "run"
    run_sweep(SweepConfig(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}",
                          strategies=STRATEGIES, budgets=BUDGETS), out,
              backend_factory=lambda model: stepwise_backend(paths))
    return out


@pytest.fixture(scope="session")
def solve_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted table (``--backend scripted:FILE``) for solving "What is 6 times 7?" from the page."""
    path = tmp_path_factory.mktemp("viewer-solve") / "solve.json"
    path.write_text(json.dumps({"responses": {"What is 6 times 7?": [
        "Six sevens are 42, so the answer is \\boxed{42}", "I think it is \\boxed{41}",
        "7 + 7 + 7 + 7 + 7 + 7 = \\boxed{42}"]}}))
    return path


class Served:
    """The viewer app on 127.0.0.1 in a thread of this process; ``url`` ends with '/'."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the viewer did not start")
            time.sleep(0.02)
        self.sock = sock

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(app)`` -> a running ``Served``; stopped after the test."""
    running: list[Served] = []

    def start(app: Any) -> Served:
        s = Served(app)
        running.append(s)
        return s

    yield start
    for s in running:
        s.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # a failure, not a skip: `bash scripts/install.sh --dev` (run by scripts/test.sh and CI) installs it
    assert CHROMIUM is not None, "Debian's chromium is not installed: apt-get install chromium"
    b = Browser.launch(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()
