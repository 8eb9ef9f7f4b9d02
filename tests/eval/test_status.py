"""`thinkscale eval --status`: what a sweep has stored and has left, read from its store without writing to it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.eval.conftest import stop_after
from tests.eval.test_runner import cfg_for
from thinkscale.cli import app
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.status import sweep_status
from thinkscale.eval.store import StoreError

THREE = ["greedy", "self-consistency", "best-of-n:verifier=confidence-mean"]


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_fresh_folder_plans_every_job_and_is_not_created(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    st = sweep_status(cfg_for(table, strategies=THREE), out)
    assert not out.exists()
    assert not st.stored_run and st.stored == 0 and st.planned == 36
    # the sweep's order: greedy, then the strategies that reuse samples; one job budget each (the largest)
    assert [(c.spec, c.budget, c.planned) for c in st.configs] == [
        ("greedy", 1, 12), ("self-consistency", 4, 12), ("best-of-n:verifier=confidence-mean", 4, 12)]
    assert len(st.unpaced) == 3 and st.seconds_left(2) == 0.0


def test_a_stopped_sweeps_counts_pace_and_estimate_by_hand(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=THREE), out, **stop_after(15))  # greedy's 12, then 3 of SC's
    with sqlite3.connect(out / "results.sqlite") as db:
        walls = dict(db.execute("SELECT strategy, AVG(wall_seconds) FROM jobs GROUP BY 1"))
        stored = dict(db.execute("SELECT strategy, COUNT(*) FROM jobs GROUP BY 1"))
    assert stored == {"greedy": 12, "self-consistency": 3}
    before = folder_digest(out)
    st = sweep_status(cfg_for(table, strategies=THREE), out)
    assert folder_digest(out) == before  # nothing written, nothing created
    greedy, sc, bon = st.configs
    assert (greedy.stored, greedy.left, greedy.seconds_left_one_at_a_time) == (12, 0, 0.0)
    assert (sc.stored, sc.left) == (3, 9)
    assert sc.mean_wall_seconds == pytest.approx(walls["self-consistency"])
    assert (bon.stored, bon.mean_wall_seconds, bon.seconds_left_one_at_a_time) == (0, None, None)
    assert st.unpaced == [bon]
    assert st.seconds_left(3) == pytest.approx(9 * walls["self-consistency"] / 3)
    with pytest.raises(ValueError, match="jobs at once must be >= 1"):
        st.seconds_left(0)


def test_a_grown_config_is_named_and_a_different_one_refused(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=THREE[:2]), out)
    st = sweep_status(cfg_for(table, strategies=THREE), out)
    assert st.added == [THREE[2]] and (st.stored, st.planned) == (24, 36)
    assert sweep_status(cfg_for(table, strategies=THREE[:2]), out).added == []
    with pytest.raises(StoreError, match=r"different config(.|\n)*limit: stored 6 vs now 5"):
        sweep_status(cfg_for(table, strategies=THREE[:2], limit=5), out)


def test_cli_status_while_nothing_runs(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=THREE), out, **stop_after(15))
    def status(limit: int = 6) -> list[str]:
        return ["eval", "--dataset", "gsm8k", "--limit", str(limit), "--model", "fake", "--backend",
                f"scripted:{table}", "--budgets", "1,2,4", "--sample-seeds", "0,1", "--out", str(out), "--workers", "2",
                "--status", *(a for spec in THREE for a in ("--strategy", spec))]

    args = status()
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "15 of 36 jobs stored" in r.output and "21 left" in r.output
    assert "with 2 jobs at a time" in r.output and "plus 1 config (12 jobs) with no stored job" in r.output
    assert "no pace yet" in r.output
    r = runner.invoke(app, [*args, "--redo", "greedy"])
    assert r.exit_code == 2 and "--status runs nothing" in r.output
    r = runner.invoke(app, [*status(), "--out", str(tmp_path / "fresh")])
    assert r.exit_code == 0 and "0 of 36 jobs stored" in r.output and "No estimate yet" in r.output
    assert not (tmp_path / "fresh").exists()
    r = runner.invoke(app, status(limit=5))
    assert r.exit_code == 2 and "different config" in r.output
