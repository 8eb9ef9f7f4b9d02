"""What the viewer reads: a run folder (the eval store, ``results.sqlite``) or a trace file (``thinkscale solve
--trace FILE``, or the ``--json`` output of ``solve``, which also keeps the samples).

Both are checked when loaded (``load_source``), so a missing or corrupt one is a one-line error before the page is
served. Every failure a request can meet later (a job id that is not in the run, a store that became unreadable) is
a ``ViewerError`` with a status code and a sentence, which the routes return as a JSON error: never a 500.

The store is read through its own read-only SQLite connection per request (``Store`` objects are not shared between
threads, and the viewer must never write to a run it shows).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkscale.eval.store import DB_NAME, SCHEMA_VERSION
from thinkscale.strategies.events import parse_trace
from thinkscale.viewer.model import CandidateRow, RunRecord, build_view

MAX_TRACE_BYTES = 256 * 1024 * 1024  # a trace file larger than this is refused rather than read into memory


class ViewerError(ValueError):
    """Bad input, said in one sentence; ``status`` is the HTTP status the routes answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TraceSource:
    """A trace file, read once and kept (it is small next to a run store)."""

    path: Path
    doc: dict[str, Any]
    kind: str = "trace"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.path.name, "path": str(self.path)}

    def view(self) -> dict[str, Any]:
        return build_view(trace_record(self.doc))


def load_trace(path: Path) -> TraceSource:
    """A ``--trace`` file (``{"strategy", "spec", "knobs", "answer", "stop_reason", "ledger", "trace"}``) or
    ``solve --json`` output (which has ``samples`` too); ViewerError saying what is wrong otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise ViewerError(f"{path} is {size} bytes: too large for a trace file")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ViewerError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ViewerError(f"{path} is not a trace file: it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ViewerError(f"{path} is not a trace file: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("trace"), list):
        raise ViewerError(f"{path} is not a trace file: expected a JSON object with a \"trace\" list (what "
                          "`thinkscale solve --trace FILE` writes)")
    try:
        trace_record(doc)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ViewerError(f"{path} is not a trace file: {e}") from None
    return TraceSource(path, doc)


def trace_record(doc: dict[str, Any]) -> RunRecord:
    """The RunRecord of a trace file's document (the samples of ``solve --json`` output become the candidates)."""
    events = parse_trace(doc["trace"])
    samples = doc.get("samples")
    cands = None
    if isinstance(samples, list):
        chosen = doc.get("chosen_index")
        cands = tuple(CandidateRow(i, _opt_str(s.get("answer")), _opt_str(s.get("text")),
                                   _opt_int(s.get("completion_tokens")), _opt_str(s.get("finish_reason")),
                                   chosen=i == chosen) for i, s in enumerate(samples) if isinstance(s, dict))
    ledger = doc.get("ledger")
    if ledger is None and isinstance(doc.get("usage"), dict):  # solve --json: the totals and by_role
        ledger = {"total": doc["usage"], "by_role": doc.get("by_role") or {},
                  "elapsed_seconds": doc["usage"].get("wall_seconds")}
    knobs = doc.get("knobs") if isinstance(doc.get("knobs"), dict) else {}
    return RunRecord(strategy=str(doc.get("strategy") or "?"), events=events, spec=_opt_str(doc.get("spec")),
                     answer=_opt_str(doc.get("answer")), stop_reason=_opt_str(doc.get("stop_reason")),
                     candidates=cands, ledger=ledger if isinstance(ledger, dict) else None, knobs=knobs or {},
                     extra={"model": _opt_str(doc.get("model"))})


class RunSource:
    """A run folder: the problem table and each job's view, read from its store."""

    kind = "run"

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / DB_NAME).is_file():
            raise ViewerError(f"{path} is not a run folder: it has no {DB_NAME} (run `thinkscale eval --out {path} "
                              "...` first)")
        try:
            with self._db() as db:
                meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'config')"))
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except ViewerError as e:
            raise ViewerError(f"{path / DB_NAME} is not a usable thinkscale run store ({e.__cause__ or e})") from None
        missing = {"problems", "jobs", "samples", "units"} - tables
        if missing:
            raise ViewerError(f"{path / DB_NAME} is not a thinkscale run store: it has no {', '.join(sorted(missing))} "
                              "table")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise ViewerError(f"{path / DB_NAME} has store schema {meta.get('schema_version')}; this thinkscale "
                              f"reads {SCHEMA_VERSION}")
        try:
            self.config = json.loads(meta["config"]) if "config" in meta else {}
        except json.JSONDecodeError as e:
            raise ViewerError(f"{path / DB_NAME}: its stored config is not JSON ({e.msg})") from None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.path.name or str(self.path), "path": str(self.path)}

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            # a file: URI, percent-encoded, so a '?' or '#' in a folder name stays part of the path
            db = sqlite3.connect((self.path / DB_NAME).absolute().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise ViewerError(f"the run store {self.path / DB_NAME} cannot be opened: {e}", 503) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=5000")
            yield db
        except sqlite3.Error as e:
            raise ViewerError(f"the run store {self.path / DB_NAME} cannot be read: {e}", 503) from e
        finally:
            db.close()

    def summary(self) -> dict[str, Any]:
        """The problem table (one row per unit: problem, model, strategy, budget, seed) and what the run holds."""
        with self._db() as db:
            rows = [dict(r) for r in db.execute(
                "SELECT u.problem_id, u.model, u.strategy, u.budget, u.seed, u.job_id, u.answer, u.correct,"
                " u.answer_correct, u.n_subsets, u.completion_tokens, u.wall_seconds, p.level, p.reference,"
                " j.budget AS job_budget, j.stop_reason"
                " FROM units u LEFT JOIN problems p USING (problem_id) LEFT JOIN jobs j USING (job_id)"
                " ORDER BY u.problem_id, u.model, u.strategy, u.budget, u.seed")]
            n_problems = int(db.execute("SELECT COUNT(*) FROM problems").fetchone()[0])
        return {**self.describe(), "config": self.config, "n_problems": n_problems, "units": rows,
                "strategies": sorted({r["strategy"] for r in rows}), "models": sorted({r["model"] for r in rows}),
                "budgets": sorted({r["budget"] for r in rows})}

    def job(self, job_id: int) -> dict[str, Any]:
        """One job's view: its trace and samples, the problem and reference, and the units it yields (a job run once
        at the largest budget is scored at the smaller ones from subsets of its samples)."""
        with self._db() as db:
            job = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if job is None:
                raise ViewerError(f"there is no job {job_id} in the run {self.path}", 404)
            samples = list(db.execute("SELECT * FROM samples WHERE job_id = ? ORDER BY idx", (job_id,)))
            problem = db.execute("SELECT * FROM problems WHERE problem_id = ?", (job["problem_id"],)).fetchone()
            units = [dict(r) for r in db.execute(
                "SELECT budget, seed, answer, correct, answer_correct, n_subsets, completion_tokens FROM units"
                " WHERE job_id = ? ORDER BY budget", (job_id,))]
            others = [dict(r) for r in db.execute(
                "SELECT model, strategy, budget, seed, job_id, answer, answer_correct FROM units"
                " WHERE problem_id = ? ORDER BY model, strategy, budget, seed", (job["problem_id"],))]
        try:
            trace = json.loads(job["trace"])
        except (TypeError, json.JSONDecodeError) as e:
            raise ViewerError(f"job {job_id}'s stored trace is not valid JSON: {e}", 422) from None
        return build_view(job_record(job, samples, problem, units, others, trace))


def job_record(job: sqlite3.Row, samples: list[sqlite3.Row], problem: sqlite3.Row | None,
               units: list[dict[str, Any]], others: list[dict[str, Any]], trace: Any) -> RunRecord:
    cands = tuple(CandidateRow(int(s["idx"]), s["answer"], s["text"], s["completion_tokens"], s["finish_reason"],
                               tuple(float(x) for x in json.loads(s["scores"] or "[]")), bool(s["chosen"]),
                               bool(s["correct"])) for s in samples)
    chosen = next((c for c in cands if c.chosen), None)
    spec = str(job["spec"])
    return RunRecord(
        strategy=str(job["strategy"]), events=parse_trace(trace if isinstance(trace, list) else []), spec=spec,
        answer=job["answer"], stop_reason=job["stop_reason"], candidates=cands, ledger=_job_ledger(job),
        problem=None if problem is None else {"id": problem["problem_id"], "text": problem["text"],
                                              "reference": problem["reference"], "level": problem["level"],
                                              "dataset": problem["dataset"], "task": problem["task"]},
        correct=None if chosen is None else chosen.correct, knobs=_spec_knobs(spec),
        extra={"job_id": int(job["job_id"]), "model": job["model"], "budget": job["budget"], "seed": job["seed"],
               "reuse": bool(job["reuse"]), "units": units, "others": others})


def _job_ledger(job: sqlite3.Row) -> dict[str, Any]:
    """A job's cost in ``Ledger.to_dict()``'s form from its columns: the generator's tokens, the verifier's, and
    the totals (calls, backend seconds and FLOPs are stored for the whole job only)."""
    v_prompt, v_all = job["verifier_prompt_tokens"], job["verifier_tokens"]
    v_completion = None if v_all is None or v_prompt is None else v_all - v_prompt
    flops, v_flops = job["flops"], job["verifier_flops"]
    generator = {"prompt_tokens": job["prompt_tokens"], "cached_prompt_tokens": job["cached_prompt_tokens"],
                 "completion_tokens": job["completion_tokens"],
                 "flops": None if flops is None or v_flops is None else flops - v_flops}
    by_role: dict[str, Any] = {"generator": generator}
    if v_all:
        by_role["verifier"] = {"prompt_tokens": v_prompt, "completion_tokens": v_completion, "flops": v_flops}
    total = {"prompt_tokens": _add(job["prompt_tokens"], v_prompt if v_all else 0),
             "completion_tokens": _add(job["completion_tokens"], v_completion if v_all else 0),
             "cached_prompt_tokens": job["cached_prompt_tokens"] if not v_all else None,
             "calls": job["calls"], "seconds": job["backend_seconds"], "flops": flops}
    return {"by_role": by_role, "total": total, "elapsed_seconds": job["wall_seconds"]}


def _add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def _spec_knobs(spec: str) -> dict[str, Any]:
    """The knobs a job's spec sets (as text), for the tree's step aggregation; {} when it does not parse."""
    from thinkscale.strategies.base import parse_spec

    try:
        return dict(parse_spec(spec)[1])
    except ValueError:
        return {}


Source = RunSource | TraceSource


def load_source(path: Path | None) -> Source | None:
    """What ``thinkscale view PATH`` shows: a run folder (a directory) or a trace file; None for no path."""
    if path is None:
        return None
    if not path.exists():
        raise ViewerError(f"{path} does not exist: give a run folder (`thinkscale eval --out`) or a trace file "
                          "(`thinkscale solve --trace FILE`)")
    if path.is_dir():
        return RunSource(path)
    return load_trace(path)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _opt_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None
