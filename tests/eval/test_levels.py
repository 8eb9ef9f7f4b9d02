"""A sweep over some difficulty levels of a dataset (``levels``: MATH-500's 1-5) on the scripted fake: the seeded
draw of ``limit`` comes from those levels only, the run's identity records them (a resume with other levels is
refused), a stored run's problems are rebuilt with them (replay), and bad levels fail naming what is wrong."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkscale.cli import app
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.replay import run_problems
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.store import StoreError, open_existing


def test_at_levels_keeps_only_those_levels_in_file_order() -> None:
    ds = load_dataset("math500")
    easy = ds.at_levels([1, 2])
    assert len(easy) == sum(p.level in (1, 2) for p in ds.problems) > 0
    assert {p.level for p in easy.problems} == {1, 2}
    assert [p.id for p in easy.problems] == [p.id for p in ds.problems if p.level in (1, 2)]
    assert ds.at_levels(None) is ds
    # the draw of `limit` happens among the kept problems
    assert {p.level for p in easy.subset(10, 0).problems} <= {1, 2}


@pytest.mark.parametrize(("name", "levels", "message"), [
    ("gsm8k", [1], "carry no difficulty level"),
    ("math500", [9], "no problem of math500 has them"),
])
def test_levels_a_dataset_cannot_give_are_refused(name: str, levels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(name).at_levels(levels)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """The fake's answers: right for every level-1 problem of MATH-500, wrong for the others."""
    ds = load_dataset("math500")
    responses = {p.problem.messages[-1].content: [f"So it is \\boxed{{{p.reference if p.level == 1 else 'x+1'}}}"]
                 for p in ds.problems}
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"responses": responses}))
    return path


def cfg(table: Path, **kw: object) -> SweepConfig:
    base: dict[str, object] = dict(dataset="math500", levels=[1], limit=5, models=["fake"],
                                   backend=f"scripted:{table}", strategies=["greedy"], budgets=[1])
    return SweepConfig(**(base | kw))  # type: ignore[arg-type]


def test_a_sweep_over_one_level_runs_records_and_replays_it(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = run_sweep(cfg(table), out)
    assert summary.jobs_run == 5
    with sqlite3.connect(out / "results.sqlite") as db:
        ids = sorted(r[0] for r in db.execute("SELECT problem_id FROM units"))
        assert [r[0] for r in db.execute("SELECT correct FROM units")] == [1.0] * 5  # only level-1 problems asked
    assert ids == sorted(p.id for p in load_dataset("math500").at_levels([1]).subset(5, 0).problems)
    store = open_existing(out, read_only=True)
    try:
        assert store.config()["levels"] == [1]
        assert sorted(run_problems(store)) == ids  # a stored run's problems are rebuilt with its levels
    finally:
        store.close()
    assert run_sweep(cfg(table), out).jobs_run == 0  # resumes: nothing left
    with pytest.raises(StoreError, match="different config"):
        run_sweep(cfg(table, levels=[1, 2]), out)


def test_a_sweep_without_levels_records_none(table: Path, tmp_path: Path) -> None:
    """Runs stored before levels existed have no such key: a sweep without levels must not add one (or they could
    not be resumed)."""
    out = tmp_path / "run"
    run_sweep(SweepConfig(dataset="math500", limit=1, models=["fake"], backend=f"scripted:{table}",
                          strategies=["greedy"], budgets=[1]), out)
    store = open_existing(out, read_only=True)
    try:
        assert "levels" not in store.config()
    finally:
        store.close()


@pytest.mark.parametrize(("levels", "message"), [("1,x", "--levels must be comma-separated integers"),
                                                  ("2,1", "levels must be a non-empty, strictly increasing list"),
                                                  ("0", "greater than or equal to 1")])
def test_bad_levels_exit_2(levels: str, message: str, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["eval", "--dataset", "math500", "--levels", levels, "--limit", "2", "--strategy",
                                 "greedy", "--backend", "scripted:none.json", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
