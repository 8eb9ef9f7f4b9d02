"""bench/beam_coverage.py on fake-backend runs: one row per beam width, accuracy never above the share of problems
with a right finished solution, which is never above the share with one anywhere in the tree; the paired columns
against a greedy baseline; bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.eval.conftest import write_table
from tests.eval.test_sharing import p_yes
from tests.helpers.bench import load_bench
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep


@pytest.mark.parametrize("spec", ["beam:verifier=pyes", "dvts:verifier=pyes", "mcts:verifier=pyes"])
def test_rows_per_width_and_coverage_bounds(spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_table(tmp_path / "t.json", limit=6)
    base = dict(dataset="gsm8k", limit=6, models=["fake"], backend=f"scripted:{table}", sample_seeds=[0])
    beam, greedy = tmp_path / "beam", tmp_path / "greedy"
    run_sweep(SweepConfig(**base, strategies=[spec], budgets=[1, 2]), beam,  # type: ignore[arg-type]
              backend_factory=lambda model: scripted_backend(table, score_fn=p_yes))
    run_sweep(SweepConfig(**base, strategies=["greedy"], budgets=[1]), greedy)  # type: ignore[arg-type]
    bench = load_bench("beam_coverage")
    assert bench.main([str(beam), "--baseline", str(greedy), "--compare", "greedy@1"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert [ln.split("|")[1].strip() for ln in lines] == ["1", "2"]
    assert "budget 1: 6 problems" in out.err
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        acc, among, anywhere = float(cells[1].split()[0]), float(cells[6]), float(cells[7])
        assert acc <= among + 1e-9 <= anywhere + 2e-9
        # the fake's greedy answer is always right, so beam minus greedy is accuracy minus 1
        assert float(cells[8].split()[0]) == pytest.approx(acc - 1, abs=1e-3)
    assert bench.main([str(beam), "--compare", "greedy@1"]) == 2
    assert bench.main([str(beam), "--baseline", str(greedy), "--compare", "greedy"]) == 2
    assert bench.main([str(beam), "--baseline", str(greedy), "--compare", "self-consistency@4"]) == 2
    err = capsys.readouterr().err
    assert "--compare needs --baseline" in err and "expected STRATEGY@BUDGET" in err and "has no such units" in err
