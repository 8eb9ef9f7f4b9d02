"""The sweep files shipped in docs/results stay valid: they parse, and every strategy spec plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkscale.eval.config import load_sweep_file
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.runner import plan_strategy
from thinkscale.strategies.base import budget_knob, parse_spec

FILES = sorted((Path(__file__).resolve().parents[2] / "docs" / "results").rglob("sweep*.toml"))


def test_there_are_sweep_files() -> None:
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sweep_file_plans(path: Path) -> None:
    cfg = load_sweep_file(path)
    ds = load_dataset(cfg.dataset).at_levels(cfg.levels).subset(cfg.limit, cfg.seed)
    assert len(ds) == cfg.limit
    for spec in cfg.strategies:
        plan = plan_strategy(spec, cfg)
        name, values = parse_spec(spec)
        knob = budget_knob(name)
        if knob in values:  # pinned in the spec: runs once, at that value
            assert plan.budgets == (int(values[knob]),)
        elif knob is None or knob == "max_tokens":  # not swept
            assert plan.budgets == (1,)
        else:
            assert plan.budgets == tuple(cfg.budgets)
