"""Helpers for the eval tests: a scripted-backend table (thinkscale.eval.fake) for a GSM8K subset."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from thinkscale.eval.datasets import load_dataset


def write_table(path: Path, *, limit: int, seed: int = 0, seconds_per_token: float = 0.0) -> Path:
    """Responses for the first ``limit``-problem GSM8K subset drawn with ``seed``: problem i has a pool of
    (i % 3) + 2 responses, the first correct (so greedy is always right) and the rest wrong in two ways, so votes
    differ between problems and budgets."""
    ds = load_dataset("gsm8k").subset(limit, seed)
    responses = {}
    for i, p in enumerate(ds.problems):
        ref = int(p.reference)
        pool = [f"First add then multiply so the answer is \\boxed{{{ref}}}",
                f"I think it is \\boxed{{{ref + 1}}}", f"Maybe \\boxed{{{ref + 2}}} works",
                f"Surely \\boxed{{{ref + 1}}}"]
        responses[p.problem.messages[-1].content] = pool[: (i % 3) + 2]
    path.write_text(json.dumps({"responses": responses, "seconds_per_token": seconds_per_token}))
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return write_table(tmp_path / "table.json", limit=6)


def stop_after(jobs: int) -> dict[str, Any]:
    """``run_sweep`` keyword arguments that stop a sweep once ``jobs`` jobs are stored (``on_progress`` sets its
    ``stop`` event), as Ctrl-C would: ``run_sweep(cfg, out, **stop_after(7))``."""
    stop = threading.Event()
    seen: list[int] = []

    def halt(p: object) -> None:
        seen.append(1)
        if len(seen) == jobs:
            stop.set()

    return {"on_progress": halt, "stop": stop}
