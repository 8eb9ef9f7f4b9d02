"""Greedy chain-of-thought: one sample at temperature 0. The baseline every scaling method must beat."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.backends.base import Backend
from thinkscale.strategies.base import candidates_from, charge, check_int, register
from thinkscale.types import Budget, GenRequest, Ledger, Problem, Result, Role


@register("greedy", "one greedy chain-of-thought sample (the baseline)",
          "https://arxiv.org/abs/2201.11903")
@dataclass(frozen=True)
class Greedy:
    """Args: max_tokens: completion tokens for the one sample. Budget: one call of at most ``max_tokens``.

    >>> Greedy(max_tokens=256).run(problem, backend, Budget(), rng=random.Random(0)).answer  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "max_tokens"

    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_int("max_tokens", self.max_tokens)

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
        ledger = Ledger()
        rem = budget.remaining_completion_tokens(ledger)
        max_tokens = self.max_tokens if rem is None else min(self.max_tokens, rem)
        req = GenRequest(messages=problem.messages, n=1, temperature=0.0, max_tokens=max_tokens)
        completions = backend.generate([req])
        charge(ledger, Role.GENERATOR, completions)
        cands = candidates_from(completions[0])
        trace = ({"event": "generate", "n": 1, "max_tokens": max_tokens,
                  "usage": completions[0].usage.to_dict()},)
        return Result(answer=cands[0].answer, chosen=cands[0], candidates=tuple(cands), ledger=ledger,
                      stop_reason="done", strategy="greedy", trace=trace)
