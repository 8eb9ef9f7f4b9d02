"""Self-consistency: sample N chains of thought and take the majority answer.

Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models", https://arxiv.org/abs/2203.11171
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.base import Backend
from thinkscale.strategies.base import affordable_samples, candidates_from, charge, check_int, majority_vote, register
from thinkscale.types import Budget, GenRequest, Ledger, Problem, Result, Role


@register("self-consistency", "N sampled chains of thought, majority vote over normalised answers",
          "https://arxiv.org/abs/2203.11171")
@dataclass(frozen=True)
class SelfConsistency:
    """Args:
        n_samples: chains to sample (one batched call: the prompt is computed once).
        temperature, top_p: sampling knobs.
        max_tokens: completion tokens per chain.

    Budget: each chain may use up to ``max_tokens``; with a completion-token budget only as many chains as fit in
    the worst case are sampled, and the result says ``stop_reason="budget"`` when that is fewer than asked.
    Ties in the vote are broken by the caller's ``rng``.

    >>> SelfConsistency(n_samples=8).run(problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = True
    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples)
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.temperature <= 0:
            raise ValueError(f"self-consistency needs temperature > 0 (got {self.temperature}); use greedy")
        check_int("max_tokens", self.max_tokens)

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
        ledger = Ledger()
        n = affordable_samples(budget, ledger, self.n_samples, self.max_tokens)
        trace: list[dict] = []
        if n == 0:
            return Result(None, None, (), ledger, "budget", "self-consistency",
                          ({"event": "stop", "reason": "budget allows no sample"},))
        req = GenRequest(messages=problem.messages, n=n, temperature=self.temperature, top_p=self.top_p,
                         max_tokens=self.max_tokens, seed=rng.randrange(2**31 - 1))
        completions = backend.generate([req])
        charge(ledger, Role.GENERATOR, completions)
        cands = candidates_from(completions[0])
        trace.append({"event": "generate", "n": n, "seed": req.seed, "usage": completions[0].usage.to_dict()})
        winner, counts, tie = majority_vote([c.answer for c in cands], rng)
        trace.append({"event": "vote", "counts": counts, "tie_broken_by_rng": tie, "winner": winner})
        # The vote compares normalised answers; the result reports the first winning sample's answer as written.
        chosen = next((c for c in cands if c.answer is not None and normalize_answer(c.answer) == winner), None)
        return Result(answer=chosen.answer if chosen else None, chosen=chosen, candidates=tuple(cands), ledger=ledger,
                      stop_reason="budget" if n < self.n_samples else "done", strategy="self-consistency",
                      trace=tuple(trace))

