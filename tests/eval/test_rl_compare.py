"""bench/rl_compare.py on fake-backend runs: a trained model and its control in one run, each picked by name, the
trained model under another spec than the base, the paired difference computed by hand, and bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.eval.conftest import write_table
from tests.helpers.bench import load_bench
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep

LIMIT = 6


def two_model_run(tmp_path: Path) -> Path:
    """Models "trained" (greedy always right: write_table's first response) and "base" (greedy wrong on the odd
    problems), greedy plain and prefilled, in one run."""
    right = write_table(tmp_path / "right.json", limit=LIMIT)
    table = json.loads(right.read_text())
    for i, (prompt, pool) in enumerate(table["responses"].items()):
        if i % 2:
            table["responses"][prompt] = [pool[1], *pool[1:]]  # a wrong answer first: greedy is wrong
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(table))
    out = tmp_path / "run"
    cfg = SweepConfig(dataset="gsm8k", limit=LIMIT, models=["trained", "base"], backend=f"scripted:{right}",
                      strategies=["greedy", "greedy:prefill=<think>\\n"], budgets=[1], max_tokens=40)
    run_sweep(cfg, out, backend_factory=lambda model: scripted_backend(right if model == "trained" else wrong))
    return out


def test_a_trained_model_and_its_control_in_one_run_under_different_specs(tmp_path: Path) -> None:
    run = two_model_run(tmp_path)
    out = tmp_path / "cmp.json"
    assert load_bench("rl_compare").main([str(run), str(run), "--strategy", "greedy:1", "--trained-strategy",
                                          "greedy:prefill=<think>\\n", "--base-model", "base", "--trained-model",
                                          "trained", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["strategy"], row["trained_strategy"], row["problems"]) == ("greedy", "greedy:prefill=<think>\\n",
                                                                         LIMIT)
    assert (row["base"]["model"], row["trained"]["model"]) == ("base", "trained")
    assert row["base"]["accuracy"] == pytest.approx(0.5) and row["trained"]["accuracy"] == pytest.approx(1.0)
    assert row["difference"]["mean"] == pytest.approx(0.5)  # right on the 3 problems the base got wrong


def test_without_names_each_run_gives_its_first_model(tmp_path: Path) -> None:
    run = two_model_run(tmp_path)
    out = tmp_path / "cmp.json"
    load_bench("rl_compare").main([str(run), str(run), "--strategy", "greedy:1", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["base"]["model"] == row["trained"]["model"] == "trained" and row["difference"]["mean"] == 0


def test_bad_input_is_named(tmp_path: Path) -> None:
    run = two_model_run(tmp_path)
    bench = load_bench("rl_compare")
    with pytest.raises(SystemExit, match="has no model 'other'; its models: trained, base"):
        bench.main([str(run), str(run), "--strategy", "greedy:1", "--base-model", "other"])
    with pytest.raises(SystemExit, match="1 --trained-strategy for 2 --strategy"):
        bench.main([str(run), str(run), "--strategy", "greedy:1", "--strategy", "greedy:1", "--trained-strategy",
                    "greedy"])
    with pytest.raises(SystemExit, match="has no self-consistency units at budget 8"):
        bench.main([str(run), str(run), "--strategy", "self-consistency:8"])
