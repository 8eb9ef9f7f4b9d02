"""Recursive self-aggregation (RSA): keep a population of N solutions; each round, N new solutions are written, each
by showing the model K members drawn from the current population and asking for one improved solution; after T rounds
the answer is the majority over the last population.

Venkatraman et al., "Recursive Self-Aggregation Unlocks Deep Thinking in Large Language Models",
https://arxiv.org/abs/2509.26626
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import ClassVar

from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, Event, GenRequest, Message, Problem, Result
from thinkscale.verifiers.base import problem_text


@event("aggregate")
@dataclass(frozen=True)
class Aggregate(Event):
    """One RSA round: for each new solution, the members of the previous population it was shown (indices into
    that population)."""

    round: int
    members: tuple[tuple[int, ...], ...]

# The answer format in the words of Qwen's math prompt (the house "\boxed{ANSWER}" is copied verbatim by the 0.5B
# in long aggregation prompts: see debate.py and moa.py).
DEFAULT_AGGREGATION_PROMPT = (
    "Problem:\n{problem}\n\nHere are {k} candidate solutions to this problem. Some of them may be wrong, and they "
    "may disagree.\n\n{solutions}\n\nCheck them against each other and against the problem, keep the correct "
    "reasoning and fix the mistakes, and write one complete, correct solution. Put your final answer within "
    "\\boxed{{}}.")


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{problem\}|\{solutions\}|\{k\}")


def aggregation_messages(problem: Problem, members: list[str], template: str) -> tuple[Message, ...]:
    """The problem's system messages, then one user turn with the problem and the members (numbered)."""
    fill = {"{problem}": problem_text(problem), "{k}": str(len(members)), "{{": "{", "}}": "}",
            "{solutions}": "\n\n".join(f"Solution {i}:\n{text.strip()}" for i, text in enumerate(members, 1))}
    # one pass over the template, so braces inside the problem or the solutions are never substituted
    user = _PLACEHOLDER.sub(lambda m: fill[m.group(0)], template)
    return (*(m for m in problem.messages if m.role == "system"), Message("user", user))


@register("rsa", "recursive self-aggregation: N chains, T rounds of N re-solutions each from K sampled members; "
          "majority over the last round", "https://arxiv.org/abs/2509.26626")
@dataclass(frozen=True)
class RecursiveSelfAggregation:
    """Args:
        population: N, the solutions kept per round. The budget knob.
        aggregation_size: K, members shown in each aggregation prompt (distinct, drawn by ``rng``); 1 <= K <= N.
        rounds: T, aggregation rounds after the first population (0 = plain majority vote over N samples).
        max_tokens: completion tokens per solution; temperature, top_p: sampling knobs.
        aggregation_prompt: the user turn; ``{problem}``, ``{solutions}`` and ``{k}`` are replaced, ``{{``/``}}``
            are literal braces.

    Budget: the first population is one call of N samples; each round is one batched call of N requests (N calls),
    needing ``N * max_tokens`` completion tokens in the worst case. A round starts only if all of it fits, so a
    population is never cut in half; when the budget stops it early the answer is the majority over the last whole
    population and ``stop_reason="budget"``. If even the first population does not fit, as many samples as fit are
    voted on, with no aggregation.

    >>> execute(RecursiveSelfAggregation(population=8, aggregation_size=3, rounds=2),  # doctest: +SKIP
    ...         problem, backend, Budget(max_completion_tokens=8 * 3 * 512), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "population"

    population: int = 8
    aggregation_size: int = 3
    rounds: int = 2
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    aggregation_prompt: str = DEFAULT_AGGREGATION_PROMPT

    def __post_init__(self) -> None:
        for knob, low in (("population", 1), ("aggregation_size", 1), ("rounds", 0), ("max_tokens", 1)):
            check_int(knob, getattr(self, knob), low=low)
        if self.aggregation_size > self.population:
            raise ValueError(f"aggregation_size ({self.aggregation_size}) cannot exceed population "
                             f"({self.population}): each prompt shows K distinct members")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (a population at 0 is N copies), "
                             f"got {self.temperature!r}")
        check_top_p(self.top_p)
        if "{solutions}" not in self.aggregation_prompt:
            raise ValueError("aggregation_prompt must contain {solutions}")

    def run(self, ctx: Run) -> Result:
        n = self.population
        first = ctx.affordable(n, self.max_tokens)
        if first == 0:
            ctx.stop("budget", "budget allows no sample")
            return ctx.result((), stop_reason="budget")
        (completion,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=first, temperature=self.temperature,
                                                 top_p=self.top_p, max_tokens=self.max_tokens, seed=ctx.seed())],
                                     tag="populate")
        current = candidates_from(completion)
        everyone: list[Candidate] = list(current)
        if first < n:
            ctx.stop("budget", f"budget allows {first} of {n} first samples; no aggregation")
            return vote_result(ctx, everyone, budget_hit=True)
        budget_hit = False
        for round_ in range(1, self.rounds + 1):
            if not ctx.fits(completion_tokens=n * self.max_tokens, calls=n):
                budget_hit = True
                ctx.stop("budget", f"budget cannot pay for round {round_}")
                break
            offset = len(everyone) - n  # global index of the current population's first member
            members = [ctx.rng.sample(range(n), self.aggregation_size) for _ in range(n)]
            requests = [GenRequest(messages=aggregation_messages(ctx.problem, [current[j].text for j in m],
                                                                 self.aggregation_prompt),
                                   n=1, temperature=self.temperature, top_p=self.top_p,
                                   max_tokens=self.max_tokens, seed=ctx.seed()) for m in members]
            completions = ctx.generate(requests, tag=f"round {round_}", refs=[offset + m[0] for m in members])
            current = [replace(candidates_from(c)[0], parent=offset + m[0])
                       for c, m in zip(completions, members, strict=True)]
            everyone.extend(current)
            ctx.note(Aggregate(round_, tuple(tuple(m) for m in members)))
        last = range(len(everyone) - len(current), len(everyone))
        return vote_result(ctx, everyone, budget_hit=budget_hit, voters=last)
