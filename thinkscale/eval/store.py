"""The run store: one SQLite file (WAL mode) under a run's ``--out`` folder, ``results.sqlite``.

A *job* is what the harness runs: a strategy config on one problem with one seed, at one budget (or, for
prefix-consistent strategies, once at the largest budget). When a job finishes, its row, one row per sample and one
row per *unit* (problem, strategy config, budget, seed) it yields are written in one transaction, so a crash or a
``kill -9`` loses at most the jobs in flight. Primary keys make a second copy of a job, sample or unit impossible:
an insert that would duplicate one fails instead of being ignored.

Tables (see ``SCHEMA``): ``meta`` (config, schema version), ``problems``, ``jobs``, ``samples``, ``units``,
``chains`` (every chain a job's generate requests got, keyed by request and place in the seeded draw: what sample
sharing serves later jobs from, and which chains a job was served instead of generating), ``sessions`` (one row
per invocation: wall time, time inside backend calls, harness overhead). ``chains`` came after schema 1 was
released; it is created in older stores on open (their earlier jobs have no chains to share). Its ``source_run`` and
``source_run_job`` columns (a chain served from another run's store: ``SweepConfig.share_chains_from``) came later
still: they are added to older stores on open, and read as empty from a store opened read-only.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
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
CREATE TABLE IF NOT EXISTS chains (
    job_id INTEGER NOT NULL REFERENCES jobs(job_id),
    call INTEGER NOT NULL, pos INTEGER NOT NULL,         -- the job's keyed generate request (in order), sample j
    request_key TEXT NOT NULL,                           -- thinkscale.eval.chains.request_id: prompt, knobs, seed
    place INTEGER NOT NULL,                              -- first_sample + j: the chain's place in the seeded draw
    text TEXT NOT NULL, finish_reason TEXT NOT NULL, completion_tokens INTEGER,
    prompt_tokens INTEGER, cached_prompt_tokens INTEGER,  -- of the request that generated the chain
    seconds REAL, flops REAL,                            -- the chain's 1/n share of that request's
    source_job INTEGER REFERENCES jobs(job_id),          -- NULL: generated by this job; else served from that job's
    source_run TEXT, source_run_job INTEGER,             -- or served from job source_run_job of the run source_run
    PRIMARY KEY (job_id, call, pos));
CREATE INDEX IF NOT EXISTS chains_generated ON chains (request_key, place) WHERE source_job IS NULL;
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, ended_at REAL, command TEXT NOT NULL,
    status TEXT NOT NULL, jobs_done INTEGER NOT NULL DEFAULT 0, wall_seconds REAL, backend_seconds REAL);
"""


@dataclass(frozen=True)
class SessionProgress:
    """A running session's counts so far: jobs it committed, wall seconds since its model loaded, seconds with a
    backend call in flight."""

    session_id: int
    jobs_done: int
    wall_seconds: float
    backend_seconds: float


def _write_session(db: sqlite3.Connection, s: SessionProgress, *, status: str) -> None:
    """A session's counts and status, stamped now (its end, or its last job while it runs)."""
    db.execute("UPDATE sessions SET ended_at = ?, status = ?, jobs_done = ?, wall_seconds = ?, backend_seconds = ? "
               "WHERE session_id = ?",
               (time.time(), status, s.jobs_done, s.wall_seconds, s.backend_seconds, s.session_id))


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
class ChainRow:
    """One chain a job's request got (see the ``chains`` table)."""

    call: int
    pos: int
    request_key: str
    place: int
    text: str
    finish_reason: str
    completion_tokens: int | None
    prompt_tokens: int | None
    cached_prompt_tokens: int | None
    seconds: float | None
    flops: float | None
    source_job: int | None  # None: generated by the job itself (unless served from another run: below)
    source_run: str | None = None  # served from another run's store (the folder as the sweep named it) ...
    source_run_job: int | None = None  # ... from this job of that run

    @property
    def served(self) -> bool:
        """Served from a store (this run's or another's) rather than generated by the job."""
        return self.source_job is not None or self.source_run is not None


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
    chains: Sequence[ChainRow] = ()


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
            _add_missing_columns(self.db)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a usable thinkscale run store: {e}") from None
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}; this thinkscale writes {SCHEMA_VERSION}")

    @classmethod
    def reader(cls, out_dir: str | Path) -> Store:
        """The store of an existing run, opened read-only: nothing in the folder is created or changed, so a run
        on a read-only disk or copied into an archive (``chmod -R a-w``) can be reported and exported. Writing
        through it fails (``attempt to write a readonly database``)."""
        self = cls.__new__(cls)
        self.dir = Path(out_dir)
        self.path = self.dir / DB_NAME
        self.db = _connect_read_only(self.path)
        try:
            version = self.get_meta("schema_version")
            if version is not None and int(version) != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has store schema {version}; this thinkscale reads {SCHEMA_VERSION}")
            _shadow_missing_tables(self.db)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreError(f"{self.path} is not a usable thinkscale run store: {e}") from None
        except BaseException:
            self.db.close()
            raise
        return self

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

    def bind_config(self, config: dict[str, Any], info: dict[str, Any],
                    grows: Callable[[dict[str, Any], dict[str, Any]], list[str] | None] | None = None) -> list[str]:
        """Record ``config`` on first use; afterwards refuse any other, except one that ``grows`` the stored one
        (``resumes``). Such a config replaces the stored one, an addition is appended to ``info["grown"]``, and
        what was added is returned. ``info`` (command, git commit, start time) is otherwise kept as recorded first
        and never compared."""
        with self.transaction():
            added = self.resumes(config, grows)
            text = json.dumps(config, sort_keys=True)
            if added is None:
                self.set_meta("config", text)
                self.set_meta("info", json.dumps(info, sort_keys=True))
                return []
            if added:
                first = json.loads(self.get_meta("info") or "{}")
                first.setdefault("grown", []).append({**info, "added": added})
                self.set_meta("info", json.dumps(first, sort_keys=True))
            if self.get_meta("config") != text:  # grown, or the same run written another way
                self.set_meta("config", text)
            return added

    def resumes(self, config: dict[str, Any],
                grows: Callable[[dict[str, Any], dict[str, Any]], list[str] | None] | None = None) -> list[str] | None:
        """Whether ``config`` may resume the run recorded here, reading only: None when none is recorded yet; else
        what it adds to the stored one, as ``grows(stored, config)`` names it (None from ``grows``: it changes more
        than that; empty: the same run, perhaps written another way). A StoreError naming every field that differs
        when it may not."""
        stored = self.get_meta("config")
        if stored is None:
            return None
        old = json.loads(stored)
        if old == config:
            return []
        added = grows(old, config) if grows is not None else None
        if added is None:
            diffs = [f"  {k}: stored {json.dumps(old.get(k))} vs now {json.dumps(config.get(k))}"
                     for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
            raise StoreError(f"{self.path} holds a run with a different config, so it cannot be resumed with this "
                             "one:\n" + "\n".join(diffs) + "\nuse another --out folder, or the run's own config (a "
                             "config may add strategies to a run, nothing else)")
        return added

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

    def drop_strategies(self, specs: Sequence[str], info: dict[str, Any]) -> dict[str, int]:
        """Delete every stored job of the strategy configs ``specs`` (with their samples, units and chains) in one
        transaction, so that the sweep runs them again: after a fix to a strategy's code, which the run's identity
        (its specs) does not see. ``info`` says what code the redo is for (``git_commit``, ``versions``) and when;
        ``{**info, "spec": spec, "jobs": n}`` is appended to the run's ``info["redone"]`` for each spec that had jobs.

        Refused (StoreError, nothing deleted) when jobs of another config were served chains that the jobs deleted
        generated (their rows would name jobs that are gone: redo those configs too, or none), and when a spec was
        already redone with the same code (``git_commit`` and ``versions`` equal): its jobs since then are what this
        code gives, and a resume command that kept the redo would throw them away each time. Returns the number of
        jobs deleted per spec."""
        specs = list(dict.fromkeys(specs))
        marks = ", ".join("?" * len(specs))
        gone = f"SELECT job_id FROM jobs WHERE strategy IN ({marks})"
        with self.transaction() as db:
            first = json.loads(self.get_meta("info") or "{}")
            code = {k: info.get(k) for k in ("git_commit", "versions")}
            again = sorted({r["spec"] for r in first.get("redone", []) if r.get("spec") in specs
                            and {k: r.get(k) for k in code} == code})
            if again:
                raise StoreError(f"{self.path}: {', '.join(map(repr, again))} already redone with this code (commit "
                                 f"{code['git_commit'] or 'unknown'}); its jobs since then are what this code gives. "
                                 "Leave the redo out to resume (a redo is for a changed strategy).")
            served = [r[0] for r in db.execute(
                f"SELECT DISTINCT j.strategy FROM chains c JOIN jobs j ON j.job_id = c.job_id WHERE j.strategy NOT IN "
                f"({marks}) AND c.source_job IN ({gone}) ORDER BY j.strategy", (*specs, *specs))]
            if served:
                raise StoreError(f"{self.path}: jobs of {', '.join(map(repr, served))} were served chains that jobs "
                                 f"of {', '.join(map(repr, specs))} generated; deleting these alone would leave them "
                                 "naming jobs that are gone: redo those too")
            counts = {s: int(db.execute("SELECT COUNT(*) FROM jobs WHERE strategy = ?", (s,)).fetchone()[0])
                      for s in specs}
            for table in ("chains", "units", "samples", "jobs"):
                db.execute(f"DELETE FROM {table} WHERE job_id IN ({gone})", specs)
            redone = [{**info, "spec": s, "jobs": n} for s, n in counts.items() if n]
            if redone:
                first.setdefault("redone", []).extend(redone)
                self.set_meta("info", json.dumps(first, sort_keys=True))
        return counts

    def done_jobs(self) -> set[tuple[str, str, str, int, int]]:
        return {tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT model, strategy, problem_id, seed, budget FROM jobs")}

    def write_job(self, job: JobRecord, session: SessionProgress | None = None) -> int:
        """Insert a finished job with its samples and units in one transaction; returns its job_id. ``session``:
        the running session's counts with this job, written in the same transaction (so a killed session's row
        says exactly which jobs and how much time it had when it was killed)."""
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
            db.executemany("INSERT INTO chains VALUES (" + ", ".join("?" * 15) + ")",
                           [(job_id, *astuple(c)) for c in job.chains])
            if session is not None:
                _write_session(db, session, status="running")
        return job_id

    def replace_grades(self, job_id: int, job: JobRecord) -> None:
        """Rescoring: the samples' grades and chosen flags, the job's trace and units from ``job``, in one
        transaction."""
        with self.transaction() as db:
            for s in job.samples:
                db.execute("UPDATE samples SET correct = ?, verdict = ?, chosen = ? WHERE job_id = ? AND idx = ?",
                           (int(s.correct), s.verdict, int(s.chosen), job_id, s.idx))
            # the trace in its current typed form (an old store's free-form trace is migrated here)
            db.execute("UPDATE jobs SET trace = ? WHERE job_id = ?", (json.dumps(list(job.trace), default=str),
                                                                     job_id))
            db.execute("DELETE FROM units WHERE job_id = ?", (job_id,))
            _insert_units(db, job_id, job)

    def start_session(self, command: str) -> int:
        """A new session row. Sessions still 'running' were killed (the sweep lock lets one process write a store
        at a time): they become 'killed', keeping the counts of the last job they wrote (``write_job``)."""
        with self.transaction() as db:
            db.execute("UPDATE sessions SET status = 'killed' WHERE status = 'running'")
            cur = db.execute("INSERT INTO sessions (started_at, command, status) VALUES (?, ?, 'running')",
                             (time.time(), command))
        return int(cur.lastrowid or 0)

    def end_session(self, session: SessionProgress, *, status: str) -> None:
        with self.transaction() as db:
            _write_session(db, session, status=status)

    # ------------------------------------------------------------------ reading

    def chains(self, *, job_id: int | None = None, model: str | None = None, generated: bool = False
               ) -> list[tuple[int, ChainRow]]:
        """(job_id, chain) rows of one job, or of one model's jobs; ``generated``: only chains a job generated
        itself. In job order, so the first job to store a chain comes first."""
        where: list[str] = []
        params: list[Any] = []
        if job_id is not None:
            where.append("c.job_id = ?")
            params.append(job_id)
        if model is not None:
            where.append("j.model = ?")
            params.append(model)
        if generated:
            where.append("c.source_job IS NULL AND c.source_run IS NULL")
        sql = ("SELECT c.* FROM chains c JOIN jobs j USING (job_id)" + (" WHERE " + " AND ".join(where) if where
                                                                        else "") + " ORDER BY c.job_id, c.call, c.pos")
        return [(int(r[0]), ChainRow(*r[1:])) for r in self.db.execute(sql, params)]

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


def open_existing(out_dir: str | Path, *, read_only: bool = False) -> Store:
    """A run folder's store; a clear error when there is none. ``read_only`` (report, export, anything that only
    reads): opened with SQLite's ``mode=ro``, or as ``immutable`` where the folder cannot be written (see
    ``Store.reader``), so a read-only archive of a run opens too."""
    path = Path(out_dir) / DB_NAME
    try:
        found = path.is_file()
    except (OSError, ValueError) as e:  # a name too long, a NUL in it
        raise StoreError(f"{out_dir} is not a run folder: {getattr(e, 'strerror', None) or e}") from None
    if not found:
        raise StoreError(f"{out_dir} is not a run folder: it has no {DB_NAME} (run `thinkscale eval --out "
                         f"{out_dir} ...` first)")
    return Store.reader(out_dir) if read_only else Store(out_dir)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store at ``path``. First ``mode=ro``: it reads the write-ahead log and waits
    for a writer's transactions like any reader, but needs the WAL's -wal and -shm files, which it creates when they
    are missing (the last writer removes them when it closes cleanly). In a folder that cannot be written that
    fails, and then the file is opened ``immutable`` (no locks, no WAL): exact, since with no WAL file every commit
    is in the database file, and nothing can be writing there. A WAL without its -shm in such a folder (a sweep
    killed before the folder was made read-only) cannot be read at all: an error naming it, never a silently
    shorter run."""
    uri = path.absolute().as_uri()  # percent-encoded: a '?' or '#' in a folder name stays part of the path

    def attempt(mode: str) -> sqlite3.Connection:
        db = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the open is lazy: read something
        except BaseException:
            db.close()
            raise
        return db

    try:
        return attempt("mode=ro")
    except sqlite3.OperationalError as e:
        if os.access(path.parent, os.W_OK):  # not the read-only folder case: a real failure (locked, corrupt)
            raise StoreError(f"{path} is not a usable thinkscale run store: {e}") from None
        first = e
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a usable thinkscale run store: {e}") from None
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{path} cannot be opened read-only ({first}): its write-ahead log {wal.name} holds "
                         "commits that only a writable folder can read; copy the run folder somewhere writable "
                         "(or run `thinkscale export` there once) and read the copy") from None
    try:
        return attempt("immutable=1")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a usable thinkscale run store: {e}") from None


# Columns added to a table of schema 1 after it was released: (table, column, type), in the order they were added.
ADDED_COLUMNS = (("chains", "source_run", "TEXT"), ("chains", "source_run_job", "INTEGER"))


def _missing_columns(db: sqlite3.Connection, schema: str = "main") -> list[tuple[str, str, str]]:
    tables = {t for t, _, _ in ADDED_COLUMNS}
    have = {t: {r[1] for r in db.execute(f"PRAGMA {schema}.table_info({t})")} for t in tables}
    return [(t, c, kind) for t, c, kind in ADDED_COLUMNS if have[t] and c not in have[t]]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Add ``ADDED_COLUMNS`` an older store lacks (NULL in its existing rows)."""
    for table, column, kind in _missing_columns(db):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _shadow_missing_tables(db: sqlite3.Connection) -> None:
    """Tables of ``SCHEMA`` an older store lacks (``chains``, added after schema 1) as empty TEMP tables, and a table
    lacking ``ADDED_COLUMNS`` as a TEMP view with them NULL (a TEMP name is found before the store's), so a
    read-only store answers the same queries as a writable one, which creates them on open."""
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for m in re.finditer(r"^CREATE TABLE IF NOT EXISTS (\w+) (\(.*?\));$", SCHEMA, re.S | re.M):
        if m.group(1) not in have:
            db.execute(f"CREATE TEMP TABLE {m.group(1)} {m.group(2)}")
    missing: dict[str, list[str]] = {}
    for table, column, _ in _missing_columns(db):
        missing.setdefault(table, []).append(column)
    for table, columns in missing.items():
        db.execute(f"CREATE TEMP VIEW {table} AS SELECT *, " + ", ".join(f"NULL AS {c}" for c in columns)
                   + f" FROM main.{table}")


def dump_sql(out_dir: str | Path, dest: str | Path) -> int:
    """Write a run's store as SQL text (``sqlite3``'s ``.dump``) to ``dest``, atomically, from one read snapshot:
    only committed jobs, even while a sweep writes. Rows come in insertion order, so successive dumps of a growing run
    differ mostly by what was appended (cheap to keep in git). Returns the number of jobs dumped."""
    src = Path(out_dir) / DB_NAME
    if not src.is_file():
        raise StoreError(f"{out_dir} is not a run folder: it has no {DB_NAME}")
    return dump_database(src, dest, count="SELECT COUNT(*) FROM jobs")


def load_sql(src: str | Path, out_dir: str | Path) -> int:
    """Make a run folder's store from a :func:`dump_sql` file, so the run resumes where the dump was taken (a session
    marked 'running' in it is marked 'killed' by the next sweep). Refuses to replace a store that exists. Returns the
    number of jobs loaded."""
    out = Path(out_dir)
    jobs = load_database(src, out / DB_NAME, count="SELECT COUNT(*) FROM jobs", what="a thinkscale store dump")
    Store(out).close()  # WAL mode, schema version checked
    return jobs


def dump_database(src: str | Path, dest: str | Path, *, count: str) -> int:
    """Any SQLite file (a run's store, a score cache) as SQL text at ``dest``, atomically, from one read snapshot;
    texts are written untranslated (a chain's carriage returns stay). ``count``: a query whose single value (e.g.
    its main table's rows), read in the same snapshot, is returned."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    db = sqlite3.connect(f"file:{src}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("BEGIN")  # one snapshot for the count and every table's rows
        counted = int(db.execute(count).fetchone()[0])
        with open(tmp, "w", encoding="utf-8", newline="") as f:  # no newline translation: texts keep their \r
            for line in db.iterdump():
                f.write(line + "\n")
        db.execute("COMMIT")
    finally:
        db.close()
    tmp.replace(dest)
    return counted


def load_database(src: str | Path, dest: str | Path, *, count: str, what: str = "an SQL dump of a database") -> int:
    """The SQLite file ``dest`` made from a :func:`dump_database` file, atomically and checked for integrity; refuses
    to replace a file that exists (StoreError). ``count``: a query whose single value is returned (a dump it fails on
    is not ``what`` the caller expects)."""
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest} exists; not replacing it with {src} (move it away first)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    counted = 0
    loaded = False
    try:
        with open(src, encoding="utf-8", newline="") as f:  # stored text's "\r\n" is data: read it untranslated
            db.executescript(f.read())
        if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
            raise StoreError(f"{src} does not load into an intact database")
        counted = int(db.execute(count).fetchone()[0])
        loaded = True
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{src} is not {what}: {e}") from None
    finally:
        db.close()
        if not loaded:
            tmp.unlink()
    tmp.replace(dest)
    return counted
