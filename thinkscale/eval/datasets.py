"""Benchmark datasets shipped with thinkscale, and loading a user's own JSONL in the same schema.

Every file is JSON Lines, one object per line with the keys ``id``, ``problem``, ``answer``, ``solution`` and
``meta`` (see ``thinkscale/eval/data/README.md`` for sources, licenses and per-file notes). A dataset knows its
answer ``Task`` (how a prediction is compared with the reference) and its prompt. The reference never reaches a
strategy: ``EvalProblem.problem`` is built without it and the grader gets ``reference`` separately.

    ds = load_dataset("gsm8k")                 # the GSM8K test split, 1319 problems
    sub = ds.subset(limit=100, seed=0)         # the same 100 problems on every run with seed 0
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from thinkscale.answers import Task
from thinkscale.answers.equivalence import check
from thinkscale.prompts import MATH_SYSTEM
from thinkscale.types import Message, Problem

GAME24_SYSTEM = ("Use each of the four given numbers exactly once, with + - * / and parentheses, to make 24. "
                 "Think step by step, then write the final expression as \\boxed{EXPRESSION}, e.g. "
                 "\\boxed{(10-4)*(5-1)}.")
KEYS = ("id", "problem", "answer", "solution", "meta")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    file: str
    task: Task
    system: str
    summary: str


# The one place shipped datasets are listed. ``gsm8k`` is the test split; ``gsm8k-train`` is for fitting.
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("gsm8k", "gsm8k_test.jsonl", Task.NUMERIC, MATH_SYSTEM, "GSM8K test, 1319 grade-school word problems"),
    DatasetSpec("gsm8k-train", "gsm8k_train.jsonl", Task.NUMERIC, MATH_SYSTEM,
                "GSM8K train, 7473 problems (for fitting verifiers, not for evaluation)"),
    DatasetSpec("math500", "math500.jsonl", Task.MATH, MATH_SYSTEM, "MATH-500 (PRM800K test split), levels 1-5"),
    DatasetSpec("amc23", "amc23.jsonl", Task.INTEGER, MATH_SYSTEM, "AMC 12A/12B 2023, 40 integer answers"),
    DatasetSpec("aime24", "aime24.jsonl", Task.INTEGER, MATH_SYSTEM, "AIME 2024 I+II, 30 problems"),
    DatasetSpec("aime25", "aime25.jsonl", Task.INTEGER, MATH_SYSTEM, "AIME 2025 I+II, 30 problems"),
    DatasetSpec("game24", "game24.jsonl", Task.GAME24, GAME24_SYSTEM, "Game of 24, 1362 puzzles ranked by difficulty"),
)}


@dataclass(frozen=True)
class EvalProblem:
    """One dataset row. ``problem`` is what a strategy sees (no reference); ``reference`` is for grading only
    (for game24, the four numbers). ``level`` is the dataset's own difficulty (MATH levels 1-5) or None."""

    id: str
    problem: Problem
    reference: str
    task: Task
    level: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Dataset:
    name: str
    task: Task
    problems: tuple[EvalProblem, ...]
    sha256: str  # of the file's bytes: recorded in a run's config, so a changed file cannot be resumed into

    def __len__(self) -> int:
        return len(self.problems)

    def at_levels(self, levels: Sequence[int] | None) -> Dataset:
        """The problems of the given difficulty levels (MATH's 1-5), in file order; ``None`` = all. ValueError for a
        dataset without levels or a choice that keeps no problem. Applied before ``subset``: a sweep draws its
        ``limit`` problems from these."""
        if levels is None:
            return self
        if any(p.level is None for p in self.problems):
            raise ValueError(f"levels: the problems of {self.name} carry no difficulty level (a row's meta.level, as "
                             "in MATH-500)")
        wanted = set(levels)
        kept = tuple(p for p in self.problems if p.level in wanted)
        if not kept:
            found = sorted({p.level for p in self.problems if p.level is not None})
            raise ValueError(f"levels {sorted(wanted)}: no problem of {self.name} has them (its levels: {found})")
        return Dataset(self.name, self.task, kept, self.sha256)

    def subset(self, limit: int | None, seed: int) -> Dataset:
        """``limit`` problems drawn with ``random.Random(seed)``, kept in file order. The draw depends only on the
        seed and the file's row count, so it is the same on every run. ``None`` = all problems."""
        if limit is None:
            return self
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        if limit > len(self.problems):
            raise ValueError(f"limit {limit} is more than the {len(self.problems)} problems in {self.name}")
        picked = sorted(random.Random(seed).sample(range(len(self.problems)), limit))
        return Dataset(self.name, self.task, tuple(self.problems[i] for i in picked), self.sha256)


def data_dir() -> Path:
    return Path(str(resources.files("thinkscale.eval") / "data"))


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def load_dataset(name_or_path: str, *, task: Task | str | None = None, system: str | None = None) -> Dataset:
    """A shipped dataset by name (``gsm8k``, ``math500``, ...) or a JSONL file path in the same schema.

    A file needs ``task`` (how answers are compared); a shipped dataset has its own, and a different ``task`` is an
    error. ``system`` replaces the dataset's system prompt."""
    spec = DATASETS.get(name_or_path)
    if spec is not None:
        if task is not None and Task(task) is not spec.task:
            raise ValueError(f"dataset {spec.name!r} is graded as {spec.task.value!r}, not {Task(task).value!r}")
        return _load(data_dir() / spec.file, spec.name, spec.task, spec.system if system is None else system)
    path = Path(name_or_path)
    if not path.suffix == ".jsonl" and not path.exists():
        raise ValueError(f"unknown dataset {name_or_path!r}: give one of {', '.join(dataset_names())} "
                         "or the path of a .jsonl file")
    if task is None:
        raise ValueError(f"{path}: a dataset file needs its answer task (--task), one of: "
                         f"{', '.join(t.value for t in Task)}")
    task = Task(task)
    return _load(path, path.stem, task, (GAME24_SYSTEM if task is Task.GAME24 else MATH_SYSTEM)
                 if system is None else system)


def _load(path: Path, name: str, task: Task, system: str) -> Dataset:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read dataset {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 (byte {e.start})") from None
    problems: list[EvalProblem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        row = _parse_row(path, lineno, line, task)
        if row["id"] in seen:
            raise DatasetError(f"{path}:{lineno}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
        seen[row["id"]] = lineno
        problems.append(_to_problem(row, task, system))
    if not problems:
        raise DatasetError(f"{path}: no rows")
    return Dataset(name, task, tuple(problems), hashlib.sha256(raw).hexdigest())


def _parse_row(path: Path, lineno: int, line: str, task: Task) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(KEYS))
    if unknown:
        raise DatasetError(f"{where}: unknown keys {unknown}; a row has {', '.join(KEYS)}")
    for key in ("id", "problem", "answer"):
        if key not in row:
            raise DatasetError(f"{where}: missing key {key!r}")
        if not isinstance(row[key], str):
            raise DatasetError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
    if not row["id"].strip():
        raise DatasetError(f"{where}: 'id' is empty")
    if not row["problem"].strip():
        raise DatasetError(f"{where}: 'problem' is empty")
    if row.get("solution") is not None and not isinstance(row["solution"], str):
        raise DatasetError(f"{where}: 'solution' must be a string or null")
    if not isinstance(row.get("meta", {}), dict):
        raise DatasetError(f"{where}: 'meta' must be an object")
    reference = row["problem"] if task is Task.GAME24 else row["answer"]
    if task is not Task.GAME24 and not reference.strip():
        raise DatasetError(f"{where}: 'answer' is empty (only game24 rows may have no reference answer)")
    try:  # a reference the grader cannot read is a data bug: find it now, not after hours of sampling
        check(task, None, reference)
    except ValueError as e:
        raise DatasetError(f"{where}: reference {reference!r} cannot be graded as {task.value}: {e}") from None
    return row


def _to_problem(row: dict[str, Any], task: Task, system: str) -> EvalProblem:
    meta = dict(row.get("meta") or {})
    level = meta.get("level")
    msgs = ((Message("system", system),) if system else ()) + (Message("user", row["problem"]),)
    return EvalProblem(id=row["id"], problem=Problem(id=row["id"], messages=msgs, reference=None),
                       reference=row["problem"] if task is Task.GAME24 else row["answer"], task=task,
                       level=level if isinstance(level, int) and not isinstance(level, bool) else None, meta=meta)
