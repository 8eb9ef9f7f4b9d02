"""Task verifiers: exact checkers, no model calls (so nothing is charged to the ledger).

- ``Game24Verifier`` checks the final expression against the four numbers *in the problem statement*: it needs no
  answer key, so it may choose answers at solve time (Tree of Thoughts' Game of 24 has a perfect verifier).
- ``ReferenceVerifier`` grades against ``Problem.reference``, the answer key. It is for evaluation only: it cannot be
  built without ``eval_mode=True``, ``build_verifier`` refuses it in ``Mode.SOLVE``, and ``require_solve_safe``
  refuses it in a strategy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.answers.equivalence import grade
from thinkscale.answers.extract import extract_expression
from thinkscale.answers.game24 import check_24
from thinkscale.answers.task import Task, Verdict
from thinkscale.types import Candidate, Ledger, Problem
from thinkscale.verifiers.base import VerifierError, VerifierKind, problem_text, register

# whole integers: not part of a longer number or a decimal ("12." ending a sentence counts, "1.5" does not)
_INT = re.compile(r"(?<!\d)(?<!\d\.)\d+(?!\d)(?!\.\d)")
_FOUR = re.compile(r"(?<!\d)(?<!\d\.)(\d+)[ ,]+(\d+)[ ,]+(\d+)[ ,]+(\d+)(?!\d)(?!\.\d)")


def game24_numbers(problem: Problem) -> tuple[int, int, int, int]:
    """The four numbers of a Game of 24 problem: the only four integers in its user messages (``"1 1 4 6"``), else
    the last run of four integers separated by spaces or commas (``"Use 4 9 10 13 to make 24."``)."""
    text = problem_text(problem)
    ints = _INT.findall(text)
    if len(ints) == 4:
        a, b, c, d = (int(x) for x in ints)
        return a, b, c, d
    runs = _FOUR.findall(text)
    if runs:
        a, b, c, d = (int(x) for x in runs[-1])
        return a, b, c, d
    raise VerifierError(f"problem {problem.id!r}: cannot find the four Game of 24 numbers in {text[:80]!r}; "
                        "state them as four integers, e.g. '4 9 10 13'")


@register("game24", "exact Game of 24 check of the final expression against the problem's four numbers")
@dataclass(frozen=True)
class Game24Verifier:
    """1.0 if the candidate's final expression (``extract_expression``) uses the problem's four numbers once each
    and equals 24 exactly, else 0.0. Outcome verifier; no model calls."""

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 0  # exact arithmetic, no model call

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        numbers = game24_numbers(problem)
        out: list[tuple[float, ...]] = []
        for c in candidates:
            expr = extract_expression(c.text)
            out.append((1.0 if expr is not None and check_24(expr, numbers) else 0.0,))
        return out


@register("reference", "1.0 if the final answer matches the reference answer (eval mode only)")
@dataclass(frozen=True)
class ReferenceVerifier:
    """Grades each candidate's text against ``problem.reference`` with ``answers.grade`` for ``task``: 1.0 if
    equivalent, else 0.0 (a symbolic-check timeout counts as 0.0). Evaluation only: ``eval_mode=True`` is required.

    >>> ReferenceVerifier(Task.NUMERIC, eval_mode=True).score(problem, candidates, ledger=ledger)  # doctest: +SKIP
    """

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = True

    task: Task = Task.NUMERIC
    eval_mode: bool = False

    def __post_init__(self) -> None:
        if self.eval_mode is not True:
            raise ValueError("ReferenceVerifier reads the answer key: it grades results in evaluation only. Pass "
                             "eval_mode=True to grade; to choose answers at solve time use a verifier without the key")
        object.__setattr__(self, "task", Task(self.task))

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 0  # grades text, no model call

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        if problem.reference is None:
            raise VerifierError(f"problem {problem.id!r} has no reference answer to grade against")
        return [(1.0 if grade(self.task, c.text, problem.reference) is Verdict.EQUIVALENT else 0.0,)
                for c in candidates]
