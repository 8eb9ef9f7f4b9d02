"""moa, debate, particle-filter and genselect through the eval harness on the scripted fake: every job is stored
with its units, within its budget knob, and the heterogeneous MoA's second model is made by the sweep's backend
factory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.eval.conftest import write_table
from tests.eval.test_sharing import p_yes
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep


@pytest.mark.parametrize("spec", ["moa:layers=2", "debate:rounds=1", "particle-filter:verifier=pyes,max_steps=3",
                                  "genselect"])
def test_the_new_strategies_run_through_a_sweep(spec: str, tmp_path: Path) -> None:
    table = write_table(tmp_path / "t.json", limit=3)
    out = tmp_path / "run"
    cfg = SweepConfig(dataset="gsm8k", limit=3, models=["fake"], backend=f"scripted:{table}", strategies=[spec],
                      budgets=[1, 2], max_tokens=40)
    summary = run_sweep(cfg, out, backend_factory=lambda model: scripted_backend(table, score_fn=p_yes))
    assert summary.jobs_run == 6 and not summary.interrupted
    db = sqlite3.connect(out / "results.sqlite")
    rows = db.execute("SELECT budget, COUNT(*), SUM(answer IS NOT NULL), MIN(calls) FROM jobs GROUP BY 1").fetchall()
    assert [(b, n) for b, n, _, _ in rows] == [(1, 3), (2, 3)]
    assert all(answered >= 1 and calls >= 1 for _, _, answered, calls in rows)
    assert db.execute("SELECT COUNT(*) FROM units").fetchone() == (6,)


def test_a_heterogeneous_moa_gets_its_other_model_from_the_sweeps_factory(tmp_path: Path) -> None:
    table = write_table(tmp_path / "t.json", limit=2)
    made: list[str] = []

    def factory(model: str):  # type: ignore[no-untyped-def]
        made.append(model)
        return scripted_backend(table)

    run_sweep(SweepConfig(dataset="gsm8k", limit=2, models=["fake"], backend=f"scripted:{table}",
                          strategies=["moa:models=fake|helper,layers=1"], budgets=[2], max_tokens=40),
              tmp_path / "run", backend_factory=factory)
    assert made == ["fake", "helper"]  # the sweep's model, then the proposer model once for every job
