"""bench/tir_compare.py on two fake-backend runs of the same problems: SC and SC-TIR joined problem by problem, the
paired difference, the tool statistics from the traces, and bad input named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.eval.test_tir_sweep import LIMIT, tir_table
from tests.helpers.bench import load_bench
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import run_sweep


def bench():
    return load_bench("tir_compare")


def mean_correct(run: Path, strategy: str, budget: int) -> float:
    with sqlite3.connect(run / "results.sqlite") as db:
        (value,) = db.execute("SELECT AVG(correct) FROM units WHERE strategy LIKE ? AND budget = ?",
                              (strategy + "%", budget)).fetchone()
    return float(value)


def test_compare_joins_the_runs_and_reads_the_tool_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tir_table(tmp_path / "t.json")
    base = dict(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}", max_tokens=256)
    sc, tir = tmp_path / "sc", tmp_path / "tir"
    run_sweep(SweepConfig(**base, strategies=["self-consistency"], budgets=[1, 2, 4]), sc)  # type: ignore[arg-type]
    run_sweep(SweepConfig(**base, strategies=["sc-tir"], budgets=[1, 2, 4]), tir)  # type: ignore[arg-type]
    out = tmp_path / "cmp.json"
    assert bench().main([str(sc), str(tir), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "fake" and [r["budget"] for r in data["budgets"]] == [1, 2, 4]
    for r in data["budgets"]:
        k = r["budget"]
        assert r["problems"] == LIMIT
        assert r["sc"]["accuracy"] == round(mean_correct(sc, "self-consistency", k), 3)
        assert r["sc_tir"]["accuracy"] == round(mean_correct(tir, "sc-tir", k), 3)
        assert r["difference"]["accuracy"] == pytest.approx(r["sc_tir"]["accuracy"] - r["sc"]["accuracy"], abs=2e-3)
        lo, hi = r["difference"]["ci"]
        assert lo <= r["difference"]["accuracy"] <= hi
    tools = data["tools"]
    assert (tools["jobs"], tools["paths"]) == (LIMIT, 4 * LIMIT)
    assert 0 < tools["paths_with_code"] <= 1 and set(tools["code_runs"]) == {"clean"}
    assert "TIR - SC" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tir_table(tmp_path / "t.json")
    sc = tmp_path / "sc"
    run_sweep(SweepConfig(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}",  # type: ignore[arg-type]
                          strategies=["self-consistency"], budgets=[2]), sc)
    mod = bench()
    assert mod.main([str(sc), str(sc)]) == 1  # an SC run given as the SC-TIR run
    assert "has no sc-tir units" in capsys.readouterr().err
    assert mod.main([str(tmp_path / "missing"), str(sc)]) == 1
    assert "missing" in capsys.readouterr().err
