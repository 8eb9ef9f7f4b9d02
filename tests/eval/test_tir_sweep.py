"""SC-TIR in a sweep on the scripted fake, its code run in a real sandbox: one job per problem at the largest
budget (its paths are prefix-consistent), the smaller budgets scored from subsets, sandbox time counted as the
strategy's work rather than harness overhead."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import Sandboxes, TimedBackend, plan_strategy, run_sweep
from thinkscale.strategies._tir import sandbox_limits
from thinkscale.strategies.base import build_strategy

LIMIT = 3
SLEEP = 0.3  # seconds each model-written program sleeps: time that is the strategy's, not the harness's


def tir_table(path: Path) -> Path:
    """Problem i: a path that computes the reference in code (sleeping SLEEP first), one that answers it directly
    and one that answers wrong; a continuation after a code block draws from the same pool."""
    ds = load_dataset("gsm8k").subset(LIMIT, 0)
    responses = {}
    for p in ds.problems:
        ref = int(p.reference)
        responses[p.problem.messages[-1].content] = [
            f"Let me compute.\n```python\nimport time\ntime.sleep({SLEEP})\nprint({ref})\n```\n",
            f"So the answer is \\boxed{{{ref}}}", f"I guess \\boxed{{{ref + 1}}}"]
    path.write_text(json.dumps({"responses": responses}))
    return path


def rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return list(db.execute(sql))


def test_sc_tir_sweep_reuses_paths_and_counts_code_time_as_busy(tmp_path: Path) -> None:
    table = tir_table(tmp_path / "t.json")
    base = dict(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}", max_tokens=256)
    out = tmp_path / "run"
    s = run_sweep(SweepConfig(**base, strategies=["sc-tir"], budgets=[1, 2, 4]), out)  # type: ignore[arg-type]
    assert (s.jobs_total, s.jobs_run) == (LIMIT, LIMIT)  # one 4-path job per problem
    assert rows(out, "SELECT budget, COUNT(*), MAX(n_subsets) FROM units GROUP BY 1") == [
        (1, LIMIT, 4), (2, LIMIT, 6), (4, LIMIT, 1)]
    assert rows(out, "SELECT COUNT(*) FROM samples") == [(4 * LIMIT,)]
    traces = [json.loads(t) for (t,) in rows(out, "SELECT trace FROM jobs")]
    runs = [e for t in traces for e in t if e["event"] == "tool"]
    assert runs and all(e["exit_code"] == 0 for e in runs)
    # the programs slept len(runs) x SLEEP seconds (at most 2 x workers at once); the fake backend takes ~0 s, so
    # were sandbox time counted as overhead, the overhead would be nearly all of the wall time
    assert s.wall_seconds >= SLEEP * len(runs) / 2
    assert s.overhead_fraction is not None and s.overhead_fraction < 0.5
    # a 2-path run on its own draws exactly the first 2 paths of the 4-path job
    out2 = tmp_path / "run2"
    run_sweep(SweepConfig(**base, strategies=["sc-tir"], budgets=[2]), out2)  # type: ignore[arg-type]
    sql = "SELECT j.problem_id, s.idx, s.text FROM samples s JOIN jobs j USING (job_id) WHERE s.idx < 2 ORDER BY 1, 2"
    assert rows(out2, sql) == rows(out, sql)


def test_sandboxes_share_one_pool_per_limits(tmp_path: Path) -> None:
    """The sweep's sandbox provider hands every job asking for the same limits the same warm pool (sandbox_workers x
    the sweep's workers), other limits another; it outlives the jobs and counts runs as busy time."""
    table = tir_table(tmp_path / "t.json")
    clock = TimedBackend(scripted_backend(table))
    boxes = Sandboxes(clock, workers=2)
    try:
        default, other = sandbox_limits(build_strategy("sc-tir")), sandbox_limits(
            build_strategy("sc-tir:code_timeout_seconds=3,sandbox_workers=1"))
        with boxes.sandbox(default, 2) as a, boxes.sandbox(default, 2) as b, boxes.sandbox(other, 1) as c:
            assert a is b and c is not a
            assert a.pool_size == 2 * 2 and c.pool_size == 1 * 2
            assert c.limits.timeout_seconds == 3 and c.limits.cpu_seconds == 3
        r = a.run("print(6 * 7)")  # still open after the job's context ends
        assert r.stdout.strip() == "42" and clock.busy_now() >= r.wall_seconds
    finally:
        boxes.close()


def test_sc_tir_plan_reuses_with_majority_vote() -> None:
    cfg = SweepConfig(dataset="gsm8k", limit=1, models=["m"], strategies=["sc-tir"], budgets=[1, 2, 4])
    plan = plan_strategy("sc-tir", cfg)
    assert plan.reuse and plan.job_budgets() == (4,) and plan.overrides["max_tokens"] == cfg.max_tokens
