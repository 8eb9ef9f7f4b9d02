"""What a sweep has stored and what it has left (``thinkscale eval --status``): per model, strategy config and job
budget, the jobs planned and stored, the stored jobs' mean wall seconds, and the time the rest would take at that
pace. The store is only read (a sweep may be writing it at the same time); nothing runs and nothing is written.

The estimate for a config is its jobs left x its stored jobs' mean wall seconds / the jobs run at once: a job's
wall seconds are measured as it ran beside the sweep's other jobs in flight, so the estimate holds when the rest
runs as the stored jobs did (same machine, same ``--workers``). A config with no stored job has no pace yet and
is listed as such, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import added_strategies, plan_jobs, plan_strategy, resume_identity, sweep_problems
from thinkscale.eval.store import DB_NAME, Store


@dataclass(frozen=True)
class ConfigStatus:
    """One model x strategy config x job budget of a sweep (a reused budget's jobs run at the largest budget)."""

    model: str
    spec: str
    budget: int
    planned: int
    stored: int
    mean_wall_seconds: float | None  # over its stored jobs; None when none is stored

    @property
    def left(self) -> int:
        return self.planned - self.stored

    @property
    def seconds_left_one_at_a_time(self) -> float | None:
        """Its jobs left x its stored jobs' mean wall seconds (0 when none is left; None when it has no pace)."""
        if self.left == 0:
            return 0.0
        return None if self.mean_wall_seconds is None else self.left * self.mean_wall_seconds


@dataclass(frozen=True)
class SweepStatus:
    configs: list[ConfigStatus]  # in the order the sweep runs them
    stored_run: bool  # False: the run folder holds no store yet (nothing has run)
    added: list[str]  # strategy configs the sweep adds to the stored run (it grows the run when it resumes)

    @property
    def planned(self) -> int:
        return sum(c.planned for c in self.configs)

    @property
    def stored(self) -> int:
        return sum(c.stored for c in self.configs)

    def seconds_left(self, jobs_at_once: int) -> float:
        """Estimated wall seconds to finish the configs that have a pace, ``jobs_at_once`` jobs in flight."""
        if jobs_at_once < 1:
            raise ValueError(f"jobs at once must be >= 1, got {jobs_at_once}")
        return sum(c.seconds_left_one_at_a_time or 0.0 for c in self.configs) / jobs_at_once

    @property
    def unpaced(self) -> list[ConfigStatus]:
        """Configs with jobs left and none stored: no estimate for them."""
        return [c for c in self.configs if c.seconds_left_one_at_a_time is None]


def sweep_status(cfg: SweepConfig, out: str | Path) -> SweepStatus:
    """The status of sweep ``cfg`` in the run folder ``out``. A StoreError (as ``thinkscale eval`` would raise it)
    when the folder holds a run this config cannot resume; a ValueError for a bad spec or dataset."""
    ds = sweep_problems(cfg)
    plans = [plan_strategy(s, cfg) for s in cfg.strategies]
    jobs = plan_jobs(cfg, ds, plans)
    done: set[tuple[str, str, str, int, int]] = set()
    walls: dict[tuple[str, str, int], float] = {}
    added: list[str] = []
    stored_run = (Path(out) / DB_NAME).is_file()
    if stored_run:
        store = Store.reader(out)
        try:
            # None: a store made by a sweep that stopped before recording its config
            added = store.resumes(resume_identity(store, cfg, ds, plans), added_strategies) or []
            done = store.done_jobs()
            walls = {(r[0], r[1], r[2]): float(r[3]) for r in store.rows(
                "SELECT model, strategy, budget, AVG(wall_seconds) FROM jobs GROUP BY 1, 2, 3")}
        finally:
            store.close()
    counts: dict[tuple[str, str, int], list[int]] = {}  # insertion order: the sweep's
    for job in jobs:
        key = (job.model, job.plan.label, job.budget)
        planned_stored = counts.setdefault(key, [0, 0])
        planned_stored[0] += 1
        planned_stored[1] += job.key in done
    configs = [ConfigStatus(model, spec, budget, planned, stored, walls.get((model, spec, budget)) if stored else None)
               for (model, spec, budget), (planned, stored) in counts.items()]
    return SweepStatus(configs, stored_run, added)
