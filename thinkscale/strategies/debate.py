"""Multi-agent debate: N agents answer, then in each of R rounds every agent reads the other agents' latest answers
and revises its own; the final answer is the majority of the last round.

Du et al., "Improving Factuality and Reasoning in Language Models through Multiagent Debate",
https://arxiv.org/abs/2305.14325
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, Event, GenRequest, Message, Result

# Du et al.'s arithmetic/GSM8K debate prompt (their released code), asking for the boxed answer in the words of
# Qwen's math prompt: an earlier "Write the final answer as \boxed{ANSWER}" was copied verbatim by the 0.5B in 2 of
# the first 80 round-1 answers of the strategies sweep, both at 4 agents (MoA's aggregator had done the same).
DEFAULT_DEBATE_PROMPT = (
    "These are the solutions to the problem from other agents:\n\n{others}\n\nUsing the reasoning from other agents "
    "as additional advice, can you give an updated answer? Examine your solution and that of the other agents step "
    "by step, and put your final answer within \\boxed{{}}.")


@event("debate_round")
@dataclass(frozen=True)
class DebateRound(Event):
    """One round: agent i wrote candidate ``wrote[i]`` after reading the candidates ``read[i]`` (the other agents'
    previous answers; empty in round 0)."""

    round: int
    wrote: tuple[int, ...]
    read: tuple[tuple[int, ...], ...]


def others_message(texts: list[str], template: str) -> Message:
    """The user turn that shows an agent the other agents' answers (each once, in agent order)."""
    body = "\n\n".join(f"One agent solution: ```{t.strip()}```" for t in texts)
    return Message("user", template.replace("{{", "\0").replace("}}", "\1").replace("{others}", body)
                   .replace("\0", "{").replace("\1", "}"))


@register("debate", "multi-agent debate: N agents answer, then R rounds in which each reads the others' answers and "
          "revises; majority of the last round", "https://arxiv.org/abs/2305.14325")
@dataclass(frozen=True)
class Debate:
    """Args:
        n_agents: agents. The budget knob.
        rounds: debate rounds after the first answers (0 = a plain majority vote of N samples).
        temperature, top_p, max_tokens: sampling knobs of every answer (``max_tokens`` per answer).
        debate_prompt: the user turn of a debate round; ``{others}`` is replaced by the other agents' answers.

    Each agent keeps its own conversation: the problem, its own answers as assistant turns, and between them the
    other agents' previous answers as one user turn, so an agent sees its own answer once and every other agent's
    latest answer once (Du et al.'s format; the growing conversation is a cached prefix on llama.cpp). Round 0 is
    one request with ``n = n_agents``; each later round is one batched call of N requests. Budget: a round starts
    only whole (N x ``max_tokens``, N calls); when the budget stops the debate early, the last whole round votes
    (``stop_reason="budget"``).

    >>> execute(Debate(n_agents=3, rounds=2), problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "n_agents"

    n_agents: int = 3
    rounds: int = 2
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    debate_prompt: str = DEFAULT_DEBATE_PROMPT

    def __post_init__(self) -> None:
        check_int("n_agents", self.n_agents)
        check_int("rounds", self.rounds, low=0)
        check_int("max_tokens", self.max_tokens)
        check_top_p(self.top_p)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (N agents at 0 give N copies), "
                             f"got {self.temperature!r}")
        if "{others}" not in self.debate_prompt:
            raise ValueError("debate_prompt must contain {others}")

    def run(self, ctx: Run) -> Result:
        n = self.n_agents
        if not ctx.fits(completion_tokens=n * self.max_tokens, calls=1):
            ctx.stop("budget", "budget allows no first round")
            return ctx.result((), stop_reason="budget")
        (first,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=n, temperature=self.temperature,
                                            top_p=self.top_p, max_tokens=self.max_tokens, seed=ctx.seed())],
                                tag="round 0")
        cands: list[Candidate] = candidates_from(first)
        latest = list(range(n))  # each agent's latest answer
        conversations = [list(ctx.problem.messages) + [Message("assistant", c.text)] for c in cands]
        ctx.note(DebateRound(0, tuple(latest), tuple(() for _ in range(n))))
        budget_hit = False
        for round_ in range(1, self.rounds + 1):
            if not ctx.fits(completion_tokens=n * self.max_tokens, calls=n):
                budget_hit = True
                ctx.stop("budget", f"budget cannot pay for round {round_}")
                break
            read = [tuple(latest[j] for j in range(n) if j != i) for i in range(n)]
            for i in range(n):
                conversations[i].append(others_message([cands[j].text for j in read[i]], self.debate_prompt))
            reqs = [GenRequest(messages=tuple(conv), temperature=self.temperature, top_p=self.top_p,
                               max_tokens=self.max_tokens, seed=ctx.seed()) for conv in conversations]
            completions = ctx.generate(reqs, tag=f"round {round_}", refs=latest)
            new = [replace(candidates_from(c)[0], parent=latest[i]) for i, c in enumerate(completions)]
            wrote = []
            for i, c in enumerate(new):
                cands.append(c)
                wrote.append(len(cands) - 1)
                conversations[i].append(Message("assistant", c.text))
            ctx.note(DebateRound(round_, tuple(wrote), tuple(read)))
            latest = wrote
        return vote_result(ctx, cands, budget_hit=budget_hit, voters=latest)
