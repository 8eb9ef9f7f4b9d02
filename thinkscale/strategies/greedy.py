"""Greedy chain-of-thought: one sample at temperature 0. The baseline every scaling method must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.run import Run, candidates_from, opened_reply
from thinkscale.types import GenRequest, Result


@register("greedy", "one greedy chain-of-thought sample (the baseline)",
          "https://arxiv.org/abs/2201.11903")
@dataclass(frozen=True)
class Greedy:
    """Args:
        max_tokens: completion tokens for the one sample.
        prefill: the reply's opening, continued by the model (``<think>\\n`` for a model trained to open its reply
            with a thinking block; default none).

    Budget: one call of at most ``max_tokens`` (fewer when the token budget has less left); none when no call fits.

    >>> execute(Greedy(max_tokens=256), problem, backend, Budget(), rng=random.Random(0)).answer  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "max_tokens"

    max_tokens: int = 512
    prefill: str = ""

    def __post_init__(self) -> None:
        check_int("max_tokens", self.max_tokens)

    def run(self, ctx: Run) -> Result:
        rem = ctx.remaining_tokens()
        max_tokens = self.max_tokens if rem is None else min(self.max_tokens, rem)
        if max_tokens < 1 or not ctx.fits(completion_tokens=max_tokens):
            ctx.stop("budget", "budget allows no sample")
            return ctx.result((), stop_reason="budget")
        messages, continued = opened_reply(ctx, self.prefill)
        (completion,) = ctx.generate([GenRequest(messages=messages, n=1, temperature=0.0, max_tokens=max_tokens,
                                                 continue_final=continued)])
        return ctx.result(candidates_from(completion), chosen_index=0)
