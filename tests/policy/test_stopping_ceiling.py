"""bench/stopping_ceiling.py on a hand-made run: the vote-state paths, the fixed prefixes, the Beta rules and the
fitted state table, every number computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.bench import load_bench
from tests.policy.helpers import hand_run

EASY = [("ok", 10)] * 8
LATE = [("bad", 10)] + [("ok", 10)] * 7  # wrong first, then right


def bench():
    return load_bench("stopping_ceiling")


def test_prefix_paths_by_hand() -> None:
    path = bench().prefix_paths(["7", "8", "7", None], [False, True, False, False], [5, 6, 7, 8])
    # (drawn, leader, second, distinct), expected correctness of the majority (ties split), tokens so far
    assert path == [((1, 1, 0, 1), 0.0, 5), ((2, 1, 1, 2), 0.5, 11), ((3, 2, 1, 2), 0.0, 18),
                    ((4, 2, 1, 2), 0.0, 26)]


def test_the_table_finds_a_stop_no_beta_rule_can(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SC@1 0.5 (10 tokens), SC@2 0.75 (20), SC@4 and SC@8 1.0 (40, 80). Within 33% of 80 tokens (26.4): a Beta
    rule either stops both problems at one chain (their states are alike: 0.5) or stops EASY at 2 and LATE at 2
    (0.75, 20) or later than 3 (P({ok: 2, bad: 1}) = 0.6875 is below every threshold that does not also stop at
    one chain); the state table continues at LATE's split (2, 1, 1, 2) and stops at (3, 2, 1, 2): 1.0 at
    (20 + 30) / 2 = 25 tokens."""
    run = hand_run(tmp_path / "run", [EASY, LATE])
    out = tmp_path / "ceiling.json"
    assert bench().main([str(run), "--ratios", "0.25,0.33", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["sc_accuracy"], data["sc_mean_tokens"], data["draws"], data["chains"]) == (1.0, 80.0, 2, 8)
    fixed = {r["rule"]: (r["accuracy"], r["mean_tokens"]) for r in data["families"]["fixed"]}
    assert fixed["SC@1 (first 1 chains)"] == (0.5, 10.0) and fixed["SC@2 (first 2 chains)"] == (0.75, 20.0)
    assert fixed["SC@4 (first 4 chains)"] == (1.0, 40.0)
    best = {(s["family"], s["max_token_ratio"]): s["best"] for s in data["summary"]}
    assert best[("fixed", 0.25)]["accuracy"] == 0.75 and best[("fixed", 0.33)]["accuracy"] == 0.75
    assert best[("beta (in-sample)", 0.33)]["accuracy"] == 0.75
    table = best[("state table (in-sample)", 0.33)]
    assert (table["accuracy"], table["mean_tokens"]) == (1.0, 25.0)
    assert best[("state table (in-sample)", 0.25)]["accuracy"] == 0.75
    assert "target: >= 0.980 at <= 25% tokens" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = bench()
    assert mod.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 1
    assert "missing" in capsys.readouterr().err
    run = hand_run(tmp_path / "run", [EASY])
    assert mod.main([str(run), "--ratios", "a,b", "--out", str(tmp_path / "x.json")]) == 1
    assert "--ratios" in capsys.readouterr().err
