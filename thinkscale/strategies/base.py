"""The Strategy protocol, the registry of strategies, and the helpers every strategy shares.

A strategy is a frozen dataclass of knobs with ``run(problem, backend, budget, *, rng) -> Result``. It charges every
backend call to the ledger, never spends past the Budget (it stops early with ``stop_reason="budget"``), draws all
randomness from ``rng``, and returns every candidate with a JSON-serialisable trace.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from thinkscale.answers.extract import extract_answer, normalize_answer
from thinkscale.backends.base import Backend
from thinkscale.types import Budget, Candidate, Completion, Ledger, Problem, Role


class Strategy(Protocol):
    name: ClassVar[str]

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Any: ...


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    factory: type
    summary: str
    paper: str


REGISTRY: dict[str, StrategyInfo] = {}


def register(name: str, summary: str, paper: str):
    def deco(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        REGISTRY[name] = StrategyInfo(name, cls, summary, paper)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def get_strategy(name: str) -> StrategyInfo:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(REGISTRY))}") from None


def _load_all() -> None:
    # Importing the modules registers them; one place lists them all.
    from thinkscale.strategies import greedy, self_consistency  # noqa: F401


def candidates_from(completion: Completion) -> list[Candidate]:
    return [Candidate(text=s.text, answer=extract_answer(s.text), completion_tokens=s.completion_tokens,
                      finish_reason=s.finish_reason) for s in completion.samples]


def charge(ledger: Ledger, role: Role, completions: Sequence[Completion]) -> None:
    for c in completions:
        ledger.charge(role, c.usage)


def majority_vote(answers: Sequence[str | None], rng: random.Random) -> tuple[str | None, dict[str, int], bool]:
    """Most frequent normalised answer; ties are broken by ``rng`` among the tied answers (sorted first, so the
    outcome depends only on the seed). Returns (winner, counts, was_tie). ``None`` answers do not vote."""
    counts = Counter(a for a in (normalize_answer(x) for x in answers) if a is not None)
    if not counts:
        return None, {}, False
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    return (tied[0] if len(tied) == 1 else rng.choice(tied)), dict(counts), len(tied) > 1


def affordable_samples(budget: Budget, ledger: Ledger, wanted: int, max_tokens: int) -> int:
    """How many samples of ``max_tokens`` each fit in what is left of the budget (worst case), up to ``wanted``."""
    n = wanted
    rem = budget.remaining_completion_tokens(ledger)
    if rem is not None:
        n = min(n, max(0, rem) // max_tokens)
    if budget.max_calls is not None and ledger.total().calls >= budget.max_calls:
        n = 0
    return n
