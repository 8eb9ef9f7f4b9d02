"""``thinkscale solve --strategy auto --budget TOKENS --policy FILE`` on the scripted fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import thinkscale.cli
from tests.policy.helpers import write_policy
from tests.strategies.helpers import words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app

ARGS = ["solve", "What is 2 plus 3?", "--system", "Be brief."]


def test_solve_auto_with_a_budget_and_a_policy(tmp_path: Path, monkeypatch) -> None:
    backend = ScriptedBackend([words(3, "5")] * 4)
    monkeypatch.setattr(thinkscale.cli, "_backend", lambda model, base_url, *, quiet: backend)
    path = write_policy(tmp_path / "p.json", caps=(2048, 4096), max_tokens=64,
                        choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 8}})
    r = CliRunner().invoke(app, [*ARGS, "--strategy", "auto", "--budget", "3000", "--policy", path, "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "5" and out["strategy"] == "auto" and out["usage"]["completion_tokens"] == 12
    action = next(e for e in out["trace"] if e["event"] == "action")
    assert action["fitted"]["budget_row"] == 2048 and action["label"] == "stop"
    assert backend.requests[0].max_tokens == 64 and backend.requests[0].n == 4


@pytest.mark.usefixtures("unshipped_default_policy")
def test_policy_is_only_for_auto_and_a_missing_default_is_explained(monkeypatch) -> None:
    monkeypatch.setattr(thinkscale.cli, "_backend", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    r = CliRunner().invoke(app, [*ARGS, "--strategy", "greedy", "--policy", "p.json"])
    assert r.exit_code == 2 and "--policy: strategy 'greedy' has no policy" in r.stderr
    r = CliRunner().invoke(app, [*ARGS, "--strategy", "auto", "--budget", "100"])
    assert r.exit_code == 2 and "no default policy is shipped" in r.stderr
