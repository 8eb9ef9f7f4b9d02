"""The Done-when test: a sweep subprocess killed with SIGKILL at random moments 5 times, resumed each time, ends with
exactly the units of an uninterrupted run: none lost, none duplicated, the database never corrupt."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eval.conftest import write_table
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import run_sweep

LIMIT = 10
STRATEGIES = ["greedy", "self-consistency"]
BUDGETS = [1, 2, 4, 8]
JOBS = 2 * LIMIT  # greedy: one job per problem; self-consistency: one job at 8 samples per problem
UNITS = LIMIT + LIMIT * len(BUDGETS)
# What a unit's result is. Cached-prompt counts (and so FLOPs and timings) depend on what the backend's prefix cache
# held when the job ran, which a restart empties, so they are not part of the comparison.
RESULT = ("SELECT model, strategy, budget, problem_id, seed, answer, correct, answer_correct, n_subsets, "
          "completion_tokens, prompt_tokens FROM units ORDER BY 1, 2, 3, 4, 5")


def _cmd(table: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "thinkscale.cli", "eval", "--dataset", "gsm8k", "--limit", str(LIMIT), "--model",
           "fake", "--backend", f"scripted:{table}", "--budgets", ",".join(map(str, BUDGETS)), "--out", str(out),
           "--quiet"]
    for s in STRATEGIES:
        cmd += ["--strategy", s]
    return cmd


def _check(out: Path) -> tuple[int, int]:
    """The store is intact, and every stored job has all its units and samples: (jobs, units)."""
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        units = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        distinct = db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT model, strategy, budget, problem_id, seed "
                              "FROM units)").fetchone()[0]
        assert units == distinct
        per_job = dict(db.execute("SELECT j.strategy, COUNT(*) * 1.0 / COUNT(DISTINCT j.job_id) FROM units u "
                                  "JOIN jobs j USING (job_id) GROUP BY 1"))
        assert per_job.get("greedy", 1) == 1 and per_job.get("self-consistency", len(BUDGETS)) == len(BUDGETS)
        samples = dict(db.execute("SELECT j.strategy, COUNT(*) * 1.0 / COUNT(DISTINCT j.job_id) FROM samples s "
                                  "JOIN jobs j USING (job_id) GROUP BY 1"))
        assert samples.get("self-consistency", BUDGETS[-1]) == BUDGETS[-1]
        return jobs, units


def _wait_for_jobs(out: Path, more_than: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the sweep has stored more than ``more_than`` jobs (start-up takes seconds on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep exited on its own"
        if (out / "results.sqlite").exists():
            with sqlite3.connect(out / "results.sqlite") as db:
                try:
                    if db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] > more_than:
                        return
                except sqlite3.OperationalError:  # the schema is being created
                    pass
        time.sleep(0.02)
    raise AssertionError(f"no job stored within {timeout} s")


def test_sigkill_five_times_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    table = write_table(tmp_path / "table.json", limit=LIMIT, seconds_per_token=0.005)
    full = tmp_path / "full"
    run_sweep(SweepConfig(dataset="gsm8k", limit=LIMIT, models=["fake"], backend=f"scripted:{table}",
                          strategies=STRATEGIES, budgets=BUDGETS), full)
    assert _check(full) == (JOBS, UNITS)

    out = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    progress = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(5):
        before = _check(out)[0] if (out / "results.sqlite").exists() else 0
        proc = subprocess.Popen(_cmd(table, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        # Once this process has stored a job (so every kill costs progress if the resume is broken), a random
        # moment within the next ~1.5 jobs: mid-generation, mid-grading or mid-transaction.
        _wait_for_jobs(out, before, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert alive, f"the sweep ended before the kill: {proc.stderr.read().decode() if proc.stderr else ''}"
        after = _check(out)[0]
        assert before < after < JOBS
        progress.append(after)

    done = subprocess.run(_cmd(table, out), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"of {JOBS}" in done.stderr
    assert _check(out) == (JOBS, UNITS)
    with sqlite3.connect(full / "results.sqlite") as a, sqlite3.connect(out / "results.sqlite") as b:
        assert a.execute(RESULT).fetchall() == b.execute(RESULT).fetchall()
        sessions = b.execute("SELECT status, jobs_done, wall_seconds, backend_seconds FROM sessions "
                             "ORDER BY session_id").fetchall()
    # the five killed sessions never recorded an end: the next start marked them killed; each keeps the counts
    # written with its last job (in that job's transaction), so the run's time is all in the overhead report
    assert [s[0] for s in sessions] == ["killed"] * 5 + ["finished"]
    assert [s[1] for s in sessions] == [b - a for a, b in zip([0, *progress], [*progress, JOBS], strict=True)]
    for _, _, wall, busy in sessions:
        assert 0 < busy <= wall


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_stops_keeps_finished_units_and_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    table = write_table(tmp_path / "table.json", limit=LIMIT, seconds_per_token=0.005)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(_cmd(table, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _wait_for_jobs(out, 2, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    jobs, _ = _check(out)
    assert 0 < jobs < JOBS
    with sqlite3.connect(out / "results.sqlite") as db:
        ((status, done_jobs, wall, busy),) = db.execute(
            "SELECT status, jobs_done, wall_seconds, backend_seconds FROM sessions").fetchall()
    assert (status, done_jobs) == ("interrupted", jobs) and 0 < busy <= wall  # its time is kept, not zeroed
    done = subprocess.run(_cmd(table, out), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{JOBS - jobs} jobs run, {jobs} already stored" in done.stderr
    assert _check(out) == (JOBS, UNITS)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_the_job_in_flight_at_a_stop_is_finished_and_stored_and_a_second_signal_abandons(
        tmp_path: Path, sig: signal.Signals) -> None:
    """Jobs of ~1 s: the signal comes 0.2 s after a job was stored, so the next is in flight. It finishes and is
    stored (one worker: exactly one more job), no other starts. Resumed, a second signal while the job in flight
    still runs abandons it: nothing more is stored, and the store stays whole."""
    table = write_table(tmp_path / "table.json", limit=LIMIT, seconds_per_token=0.02)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(_cmd(table, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _wait_for_jobs(out, 1, proc)
    at_signal = _check(out)[0]
    time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"{sig.name}: stopping once the jobs in flight are stored" in stderr
    assert _check(out)[0] == at_signal + 1

    proc = subprocess.Popen(_cmd(table, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _wait_for_jobs(out, at_signal + 1, proc)
    stored = _check(out)[0]
    time.sleep(0.2)
    proc.send_signal(sig)
    time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert _check(out)[0] == stored


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_a_second_signal_abandons_the_jobs_in_flight_of_several_workers_at_once(
        tmp_path: Path, sig: signal.Signals) -> None:
    """Two workers, jobs of ~50 s (0.5 s a token): a second signal does not wait for the jobs in flight (the pool
    is not joined; closing the backend fails their calls): the sweep exits within seconds, nothing stored, the
    session recorded as interrupted."""
    table = write_table(tmp_path / "table.json", limit=LIMIT, seconds_per_token=0.5)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([*_cmd(table, out), "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, text=True)
    _wait_for_jobs(out, -1, proc)  # the store is made: the jobs start
    time.sleep(1.0)
    proc.send_signal(sig)
    time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15, "the sweep waited for the jobs in flight"
    assert proc.returncode == 130, stderr
    assert _check(out)[0] == 0
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT status FROM sessions").fetchall() == [("interrupted",)]
