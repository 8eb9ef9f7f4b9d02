"""Self-consistency: sample N chains of thought and take the majority answer.

Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models", https://arxiv.org/abs/2203.11171
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.run import Run, candidates_from, opened_reply
from thinkscale.strategies.voting import vote_result
from thinkscale.types import GenRequest, Result
from thinkscale.verifiers.aggregate import Selection


@register("self-consistency", "N sampled chains of thought, majority vote over normalised answers",
          "https://arxiv.org/abs/2203.11171")
@dataclass(frozen=True)
class SelfConsistency:
    """Args:
        n_samples: chains to sample (one batched call: the prompt is computed once).
        temperature, top_p: sampling knobs.
        max_tokens: completion tokens per chain.
        prefill: the reply's opening, continued by the model (``<think>\\n`` for a model trained to open its reply
            with a thinking block; default none).

    Budget: each chain may use up to ``max_tokens``; with a completion-token budget only as many chains as fit in
    the worst case are sampled, and the result says ``stop_reason="budget"`` when that is fewer than asked.
    Ties in the vote are broken by the run's ``rng``.

    >>> execute(SelfConsistency(n_samples=8), problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = True
    prefix_selection: ClassVar[Selection] = Selection.MAJORITY
    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    prefill: str = ""

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples)
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.temperature <= 0:
            raise ValueError(f"self-consistency needs temperature > 0 (got {self.temperature}); use greedy")
        check_int("max_tokens", self.max_tokens)

    def run(self, ctx: Run) -> Result:
        n = ctx.affordable(self.n_samples, self.max_tokens)
        if n == 0:
            ctx.stop("budget", "budget allows no sample")
            return ctx.result((), stop_reason="budget")
        messages, continued = opened_reply(ctx, self.prefill)
        (completion,) = ctx.generate([GenRequest(messages=messages, n=n, temperature=self.temperature,
                                                 top_p=self.top_p, max_tokens=self.max_tokens, seed=ctx.seed(),
                                                 continue_final=continued)])
        return vote_result(ctx, candidates_from(completion), budget_hit=n < self.n_samples)
