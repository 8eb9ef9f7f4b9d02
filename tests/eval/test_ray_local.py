"""The Ray executor on a local cluster (``ray.init(num_cpus=2)``, one for the module): a sweep on two replicas gives
the local executor's units, sample sharing included; a replica killed with a job in flight loses and duplicates
nothing (the job runs again on a new replica); a driver killed with SIGKILL twice and resumed ends with the units of
an uninterrupted local run. The sweeps run on the scripted table fake, whose answers are a function of the request,
so the replica that ran a job does not change its result."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.eval.conftest import write_table
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.executors import RayExecutor, RayOptions, import_ray
from thinkscale.eval.runner import run_sweep

ray = pytest.importorskip("ray")

LIMIT = 6
# self-consistency at 4 samples runs first; the pinned 2-sample config asks for the first 2 of the same draw, so it
# is served from the store when its provider was committed before it was sent
STRATEGIES = ["greedy", "self-consistency", "self-consistency:n_samples=2"]
BUDGETS = [1, 2, 4]
JOBS = 3 * LIMIT
UNITS = LIMIT + LIMIT * len(BUDGETS) + LIMIT
# What a unit's result is: cached prompt tokens (so FLOPs) and seconds depend on what each replica's prefix cache
# held, which differs between executors.
RESULT = ("SELECT model, strategy, budget, problem_id, seed, answer, correct, answer_correct, n_subsets, "
          "completion_tokens, prompt_tokens FROM units ORDER BY 1, 2, 3, 4, 5")


def sweep_cfg(table: Path) -> SweepConfig:
    return SweepConfig(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}",  # type: ignore[arg-type]
                       strategies=STRATEGIES, budgets=BUDGETS)


def units(out: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return list(db.execute(RESULT))


def counts(out: Path) -> tuple[int, int]:
    """(jobs, units) of an intact store in which no unit is stored twice and every job has all its units."""
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        n = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        assert n == db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT model, strategy, budget, problem_id, seed "
                               "FROM units)").fetchone()[0]
        per_job = dict(db.execute("SELECT j.strategy, COUNT(*) * 1.0 / COUNT(DISTINCT j.job_id) FROM units u "
                                  "JOIN jobs j USING (job_id) GROUP BY 1"))
        assert per_job.get("self-consistency", len(BUDGETS)) == len(BUDGETS)
        return jobs, n


def kill_one_busy_replica(executor: RayExecutor, after_jobs: int) -> dict[str, Any]:
    """``run_sweep`` keyword arguments that ``ray.kill`` a replica with a job in flight once ``after_jobs`` jobs
    are stored; ``killed`` in the returned dict counts the kills."""
    state: dict[str, Any] = {"stored": 0, "killed": 0}

    def on_progress(p: object) -> None:
        state["stored"] += 1
        run = executor.current
        if state["stored"] >= after_jobs and not state["killed"] and run is not None and run.busy_replicas():
            ray.kill(run.busy_replicas()[0])
            state["killed"] += 1

    return {"on_progress": on_progress, "_state": state}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster for the module; yields its address (for drivers in other processes)."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Any, ...]]]:
    """The table (0.01 s per token: a job takes ~0.1-0.5 s) and the units of an uninterrupted local run."""
    tmp = tmp_path_factory.mktemp("ray-ref")
    table = write_table(tmp / "table.json", limit=LIMIT, seconds_per_token=0.01)
    run_sweep(sweep_cfg(table), tmp / "local")
    assert counts(tmp / "local") == (JOBS, UNITS)
    return table, units(tmp / "local")


def test_ray_sweep_gives_the_local_executors_units_and_shares_samples(
        cluster: str, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=0.5))
    s = run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex)
    assert (s.jobs_run, s.jobs_skipped) == (JOBS, 0)
    assert units(tmp_path / "ray") == expected
    # The pinned 2-sample jobs come after the 4-sample ones in plan order; with two jobs in flight at most one of
    # them was sent while its provider was still running (then it drew its chains itself). Served chains come
    # only from jobs stored before the job that used them.
    assert 2 * (LIMIT - 1) <= s.reused_chains <= 2 * LIMIT
    with sqlite3.connect(tmp_path / "ray" / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*), SUM(source_job < job_id) FROM chains WHERE source_job IS NOT NULL"
                          ).fetchone() == (s.reused_chains, s.reused_chains)
    assert 0 < s.backend_seconds <= s.wall_seconds
    assert run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex).jobs_run == 0  # resumes: nothing left


def test_ray_replicas_are_served_another_runs_chains(cluster: str, reference: tuple[Path, list[tuple[Any, ...]]],
                                                     tmp_path: Path) -> None:
    """A new run on Ray with the reference's local run named in share_chains_from: the replicas are shipped that
    run's chains of each job's problem, so every chain is served from it (greedy's too: a temperature-0 request is
    keyed), none generated and none from the new run's own jobs, and the units equal the reference's."""
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=0.5))
    local = table.parent / "local"
    s = run_sweep(sweep_cfg(table).model_copy(update={"share_chains_from": (str(local),)}), tmp_path / "ray",
                  executor=ex)
    assert units(tmp_path / "ray") == expected
    with sqlite3.connect(tmp_path / "ray" / "results.sqlite") as db:
        rows = db.execute("SELECT source_run, source_job, COUNT(*) FROM chains GROUP BY 1, 2").fetchall()
    assert rows == [(str(local), None, s.reused_chains)] and s.reused_chains > 0


def test_a_replica_killed_with_a_job_in_flight_loses_and_duplicates_nothing(
        cluster: str, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=0.5))
    kw = kill_one_busy_replica(ex, after_jobs=3)
    state = kw.pop("_state")
    s = run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex, **kw)
    assert state["killed"] == 1 and ex.current is not None and ex.current.replaced == 1
    assert (s.jobs_run, s.interrupted) == (JOBS, False)
    assert counts(tmp_path / "ray") == (JOBS, UNITS)
    assert units(tmp_path / "ray") == expected


def _cli(table: Path, out: Path, address: str) -> list[str]:
    cmd = [sys.executable, "-m", "thinkscale.cli", "eval", "--dataset", "gsm8k", "--limit", str(LIMIT), "--model",
           "fake", "--backend", f"scripted:{table}", "--budgets", ",".join(map(str, BUDGETS)), "--out", str(out),
           "--quiet", "--executor", "ray", "--address", address, "--replicas", "2", "--cpus-per-replica", "0.5"]
    for s in STRATEGIES:
        cmd += ["--strategy", s]
    return cmd


def _wait_for_jobs(out: Path, more_than: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep exited on its own: {proc.stderr.read().decode() if proc.stderr else ''}"
        if (out / "results.sqlite").exists():
            with sqlite3.connect(out / "results.sqlite") as db:
                try:
                    if db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] > more_than:
                        return
                except sqlite3.OperationalError:  # the schema is being created
                    pass
        time.sleep(0.02)
    raise AssertionError(f"no job stored within {timeout} s")


def test_a_driver_killed_with_sigkill_then_resumed_loses_and_duplicates_nothing(
        cluster: str, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    """The driver (``thinkscale eval --executor ray --address``, attached to the module's cluster) is killed twice
    at a random moment after it stored a job; its replicas die with it. The third run finishes the sweep."""
    table, expected = reference
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    rng = random.Random(0)
    stored = [0]
    for _ in range(2):
        proc = subprocess.Popen(_cli(table, out, cluster), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        _wait_for_jobs(out, stored[-1], proc)
        time.sleep(rng.uniform(0.0, 0.4))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert alive, "the sweep ended before the kill"
        stored.append(counts(out)[0])
        assert stored[-2] < stored[-1] < JOBS
    done = subprocess.run(_cli(table, out, cluster), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{JOBS - stored[-1]} jobs run, {stored[-1]} already stored, of {JOBS}" in done.stderr
    assert counts(out) == (JOBS, UNITS)
    assert units(out) == expected
    with sqlite3.connect(out / "results.sqlite") as db:
        sessions = [r[0] for r in db.execute("SELECT status FROM sessions ORDER BY session_id")]
    assert sessions == ["killed", "killed", "finished"]


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'thinkscale\[ray\]'"):
        import_ray()
