"""The run store: one SQLite file (WAL mode) under a run's ``--out`` folder, ``results.sqlite``.

A *job* is what the harness runs: a strategy config on one problem with one seed, at one budget (or, for
prefix-consistent strategies, once at the largest budget). When a job finishes, its row, one row per sample and one
row per *unit* (problem, strategy config, budget, seed) it yields are written in one transaction, so a crash or a
``kill -9`` loses at most the jobs in flight. Primary keys make a second copy of a job, sample or unit impossible:
an insert that would duplicate one fails instead of being ignored.

Tables (see ``SCHEMA``): ``meta`` (config, schema version), ``problems``, ``jobs``, ``samples``, ``units``,
``sessions`` (one row per invocation: wall time, time inside backend calls, harness overhead).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (
    problem_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, task TEXT NOT NULL, reference TEXT NOT NULL,
    level INTEGER, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    model TEXT NOT NULL, strategy TEXT NOT NULL, problem_id TEXT NOT NULL REFERENCES problems(problem_id),
    seed INTEGER NOT NULL, budget INTEGER NOT NULL,      -- the budget the strategy ran at (largest, when reused)
    spec TEXT NOT NULL,                                  -- the exact spec built, budget knob included
    reuse INTEGER NOT NULL,                              -- 1: smaller budgets are scored from subsets of its samples
    stop_reason TEXT NOT NULL, answer TEXT, trace TEXT NOT NULL,
    prompt_tokens INTEGER, cached_prompt_tokens INTEGER, completion_tokens INTEGER, calls INTEGER NOT NULL,
    verifier_prompt_tokens INTEGER, verifier_tokens INTEGER, flops REAL, verifier_flops REAL,
    wall_seconds REAL NOT NULL, backend_seconds REAL, finished_at REAL NOT NULL,
    UNIQUE (model, strategy, problem_id, seed, budget));
CREATE TABLE IF NOT EXISTS samples (
    job_id INTEGER NOT NULL REFERENCES jobs(job_id), idx INTEGER NOT NULL,
    text TEXT NOT NULL, answer TEXT, correct INTEGER NOT NULL, verdict TEXT NOT NULL,
    completion_tokens INTEGER, finish_reason TEXT,
    logprob_sum REAL, logprob_mean REAL, logprob_min REAL, n_logprobs INTEGER,
    scores TEXT NOT NULL,                                -- JSON list: the verifier's scores (per step for a PRM)
    chosen INTEGER NOT NULL,                             -- 1 for the candidate the strategy chose
    PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS units (
    model TEXT NOT NULL, strategy TEXT NOT NULL, budget INTEGER NOT NULL, problem_id TEXT NOT NULL,
    seed INTEGER NOT NULL, job_id INTEGER NOT NULL REFERENCES jobs(job_id),
    answer TEXT,                 -- the strategy's answer (for a reused budget k: on the first k samples)
    correct REAL NOT NULL,       -- 0/1; prefix-consistent strategies: expected accuracy over k-subsets, ties split
    answer_correct INTEGER NOT NULL,  -- the grade of `answer`
    n_subsets INTEGER NOT NULL,  -- 1 when run directly
    estimated_cost INTEGER NOT NULL,  -- 1: tokens/seconds/FLOPs are k/N shares of the job's (reused budgets)
    prompt_tokens REAL, cached_prompt_tokens REAL, completion_tokens REAL, verifier_tokens REAL,
    wall_seconds REAL NOT NULL, flops REAL,
    PRIMARY KEY (model, strategy, budget, problem_id, seed));
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, ended_at REAL, command TEXT NOT NULL,
    status TEXT NOT NULL, jobs_done INTEGER NOT NULL DEFAULT 0, wall_seconds REAL, backend_seconds REAL);
"""


class StoreError(RuntimeError):
    """The store cannot be used as asked (a different config, a newer schema, a file that is not a store)."""


@dataclass(frozen=True)
class SampleRow:
    idx: int
    text: str
    answer: str | None
    correct: bool
    verdict: str
    completion_tokens: int | None
    finish_reason: str | None
    logprobs: Sequence[float] | None
    scores: Sequence[float]
    chosen: bool


@dataclass(frozen=True)
class UnitRow:
    budget: int
    answer: str | None
    correct: float
    answer_correct: bool
    n_subsets: int
    estimated_cost: bool
    prompt_tokens: float | None
    cached_prompt_tokens: float | None
    completion_tokens: float | None
    verifier_tokens: float | None
    wall_seconds: float
    flops: float | None


@dataclass(frozen=True)
class JobRecord:
    model: str
    strategy: str
    problem_id: str
    seed: int
    budget: int
    spec: str
    reuse: bool
    stop_reason: str
    answer: str | None
    trace: Sequence[dict[str, Any]]
    prompt_tokens: int | None
    cached_prompt_tokens: int | None
    completion_tokens: int | None
    calls: int
    verifier_prompt_tokens: int | None
    verifier_tokens: int | None
    flops: float | None
    verifier_flops: float | None
    wall_seconds: float
    backend_seconds: float | None
    samples: Sequence[SampleRow]
    units: Sequence[UnitRow]


def _logprob_summary(lps: Sequence[float] | None) -> tuple[float | None, float | None, float | None, int | None]:
    if lps is None:
        return None, None, None, None
    if not lps:
        return 0.0, None, None, 0
    s = float(sum(lps))
    return s, s / len(lps), float(min(lps)), len(lps)


class Store:
    """One run's SQLite file. Not shared between threads: the runner writes from one thread."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT below
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives the process being killed (it is in the WAL
            # file); only an OS crash or power loss can roll back the last commits.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a usable thinkscale run store: {e}") from None
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}; this thinkscale writes {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ meta and config

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                        "excluded.value", (key, value))

    def bind_config(self, config: dict[str, Any], info: dict[str, Any]) -> None:
        """Record ``config`` on first use; afterwards refuse any other. ``info`` (command, git commit, start time)
        is kept as recorded first and never compared."""
        with self.transaction():
            stored = self.get_meta("config")
            if stored is None:
                self.set_meta("config", json.dumps(config, sort_keys=True))
                self.set_meta("info", json.dumps(info, sort_keys=True))
                return
        old = json.loads(stored)
        if old != config:
            diffs = [f"  {k}: stored {json.dumps(old.get(k))} vs now {json.dumps(config.get(k))}"
                     for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
            raise StoreError(f"{self.path} holds a run with a different config, so it cannot be resumed with this "
                             "one:\n" + "\n".join(diffs) + "\nuse another --out folder, or the run's own config")

    def bind_model(self, model: str, identity: dict[str, Any]) -> None:
        """Like ``bind_config`` for what is only known once a model is loaded (its file fingerprint, parameters)."""
        key = f"model:{model}"
        with self.transaction():
            stored = self.get_meta(key)
            if stored is None:
                self.set_meta(key, json.dumps(identity, sort_keys=True))
                return
        if json.loads(stored) != identity:
            raise StoreError(f"{self.path}: model {model!r} is not the one this run started with: stored "
                             f"{stored}, now {json.dumps(identity, sort_keys=True)}")

    def config(self) -> dict[str, Any]:
        stored = self.get_meta("config")
        if stored is None:
            raise StoreError(f"{self.path} has no run in it")
        return dict(json.loads(stored))

    def info(self) -> dict[str, Any]:
        """What was recorded when the run started (command-independent facts: git commit, versions) and each
        model's identity (file fingerprint, parameters, catalog sha256) as bound on first load."""
        stored = self.get_meta("info")
        out = {} if stored is None else dict(json.loads(stored))
        models = {r[0].removeprefix("model:"): json.loads(r[1])
                  for r in self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'model:%' ORDER BY key")}
        if models:
            out["models"] = models
        return out

    # ------------------------------------------------------------------ writing

    def add_problems(self, dataset: str, rows: Sequence[tuple[str, str, str, int | None, str]]) -> None:
        """(problem_id, task, reference, level, text) rows; re-adding an identical row is a no-op."""
        with self.transaction() as db:
            for pid, task, ref, level, text in rows:
                old = db.execute("SELECT dataset, task, reference, level, text FROM problems WHERE problem_id = ?",
                                 (pid,)).fetchone()
                if old is None:
                    db.execute("INSERT INTO problems VALUES (?, ?, ?, ?, ?, ?)", (pid, dataset, task, ref, level, text))
                elif tuple(old) != (dataset, task, ref, level, text):
                    raise StoreError(f"{self.path}: problem {pid!r} differs from the one stored")

    def done_jobs(self) -> set[tuple[str, str, str, int, int]]:
        return {tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT model, strategy, problem_id, seed, budget FROM jobs")}

    def write_job(self, job: JobRecord) -> int:
        """Insert a finished job with its samples and units in one transaction; returns its job_id."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs (model, strategy, problem_id, seed, budget, spec, reuse, stop_reason, answer, trace,"
                " prompt_tokens, cached_prompt_tokens, completion_tokens, calls, verifier_prompt_tokens,"
                " verifier_tokens, flops, verifier_flops, wall_seconds, backend_seconds, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.model, job.strategy, job.problem_id, job.seed, job.budget, job.spec, int(job.reuse),
                 job.stop_reason, job.answer, json.dumps(list(job.trace), default=str), job.prompt_tokens,
                 job.cached_prompt_tokens, job.completion_tokens, job.calls, job.verifier_prompt_tokens,
                 job.verifier_tokens, job.flops, job.verifier_flops, job.wall_seconds, job.backend_seconds,
                 time.time()))
            job_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO samples VALUES (" + ", ".join("?" * 14) + ")",
                [(job_id, s.idx, s.text, s.answer, int(s.correct), s.verdict, s.completion_tokens, s.finish_reason,
                  *_logprob_summary(s.logprobs), json.dumps([float(x) for x in s.scores]), int(s.chosen))
                 for s in job.samples])
            _insert_units(db, job_id, job)
        return job_id

    def replace_grades(self, job_id: int, job: JobRecord) -> None:
        """Rescoring: the samples' grades and the job's units from ``job``, in one transaction."""
        with self.transaction() as db:
            for s in job.samples:
                db.execute("UPDATE samples SET correct = ?, verdict = ? WHERE job_id = ? AND idx = ?",
                           (int(s.correct), s.verdict, job_id, s.idx))
            db.execute("DELETE FROM units WHERE job_id = ?", (job_id,))
            _insert_units(db, job_id, job)

    def start_session(self, command: str) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO sessions (started_at, command, status) VALUES (?, ?, 'running')",
                             (time.time(), command))
        return int(cur.lastrowid or 0)

    def end_session(self, session_id: int, *, status: str, jobs_done: int, wall_seconds: float,
                    backend_seconds: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE sessions SET ended_at = ?, status = ?, jobs_done = ?, wall_seconds = ?, "
                       "backend_seconds = ? WHERE session_id = ?",
                       (time.time(), status, jobs_done, wall_seconds, backend_seconds, session_id))

    # ------------------------------------------------------------------ reading

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cur = self.db.cursor()
        cur.row_factory = sqlite3.Row
        return list(cur.execute(sql, params))


def _insert_units(db: sqlite3.Connection, job_id: int, job: JobRecord) -> None:
    db.executemany(
        "INSERT INTO units VALUES (" + ", ".join("?" * 17) + ")",
        [(job.model, job.strategy, u.budget, job.problem_id, job.seed, job_id, u.answer, u.correct,
          int(u.answer_correct), u.n_subsets, int(u.estimated_cost), u.prompt_tokens, u.cached_prompt_tokens,
          u.completion_tokens, u.verifier_tokens, u.wall_seconds, u.flops) for u in job.units])


def open_existing(out_dir: str | Path) -> Store:
    """A run folder's store for reading (report, export); a clear error when there is none."""
    path = Path(out_dir) / DB_NAME
    if not path.is_file():
        raise StoreError(f"{out_dir} is not a run folder: it has no {DB_NAME} (run `thinkscale eval --out "
                         f"{out_dir} ...` first)")
    return Store(out_dir)
