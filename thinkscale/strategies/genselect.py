"""Generative selection: sample N chains, then show the model their distinct answers with short rationales and let
it pick one (list-wise).

Toshniwal et al., "GenSelect: A Generative Approach to Best-of-N", https://arxiv.org/abs/2507.17797. The prompt and
the reading of the reply: ``thinkscale.verifiers.genselect``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, Event, GenRequest, Result, Role
from thinkscale.verifiers import genselect as gs

DEFAULT_JUDGE_TOKENS = {gs.Mode.DIRECT: 8, gs.Mode.REASON: 512}


@event("genselect")
@dataclass(frozen=True)
class GenSelect(Event):
    """The selection call: the options shown (their answers, in letter order, and the candidate shown for each),
    the reply, the option it named and the answer chosen (both None: it named none, and the vote decided)."""

    answers: tuple[str, ...]
    shown: tuple[int, ...]
    reply: str
    choice: int | None
    winner: str | None


@register("genselect", "N sampled chains, then the model picks among their distinct answers (each shown with the "
          "tail of its chain); the vote decides when it names none", "https://arxiv.org/abs/2507.17797")
@dataclass(frozen=True)
class GenerativeSelection:
    """Args:
        n_samples: chains to sample (one batched call). The budget knob.
        temperature, top_p, max_tokens: the chains' sampling knobs.
        mode: ``direct`` (the reply is prefilled with "The correct candidate is" and the model writes the letter)
            or ``reason`` (it checks the candidates, then names one; its last "candidate X" counts).
        judge_max_tokens: completion tokens of the selection reply (0: 8 in direct mode, 512 in reason mode).
        judge_temperature: the selection reply's temperature (0: greedy).
        rationale_chars: characters of each option's chain shown (its tail: the final computation and answer).

    When all chains agree (or at most one answer was given) no selection call is made. When the reply names no
    option, or the chains give more distinct answers than there are letters, the majority vote decides (the trace
    says so). The selection call is charged to the verifier role. Budget: the chains and the selection reply must
    fit together in the worst case; fewer chains are sampled when they do not (``stop_reason="budget"``).

    >>> execute(GenerativeSelection(n_samples=8), problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    mode: str = "direct"
    judge_max_tokens: int = 0
    judge_temperature: float = 0.0
    rationale_chars: int = 600

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"genselect samples its chains: temperature must be a finite number > 0, got "
                             f"{self.temperature}")
        check_top_p(self.top_p)
        check_int("max_tokens", self.max_tokens)
        try:
            gs.Mode(self.mode)
        except ValueError:
            raise ValueError(f"mode must be one of {', '.join(gs.Mode)}, got {self.mode!r}") from None
        check_int("judge_max_tokens", self.judge_max_tokens, low=0)
        if not math.isfinite(self.judge_temperature) or self.judge_temperature < 0:
            raise ValueError(f"judge_temperature must be a finite number >= 0, got {self.judge_temperature}")
        check_int("rationale_chars", self.rationale_chars)

    @property
    def judge_tokens(self) -> int:
        return self.judge_max_tokens or DEFAULT_JUDGE_TOKENS[gs.Mode(self.mode)]

    def run(self, ctx: Run) -> Result:
        judge = self.judge_tokens
        n = ctx.affordable(self.n_samples, self.max_tokens, calls=lambda n: 2, reserve_tokens=judge)
        if n == 0:
            ctx.stop("budget", "budget allows no sample and the selection reply")
            return ctx.result((), stop_reason="budget")
        (completion,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=n, temperature=self.temperature,
                                                 top_p=self.top_p, max_tokens=self.max_tokens, seed=ctx.seed())])
        cands = candidates_from(completion)
        budget_hit = n < self.n_samples
        opts = gs.options(cands)
        if len(opts) < 2:
            return vote_result(ctx, cands, budget_hit=budget_hit)
        if len(opts) > gs.MAX_OPTIONS or not ctx.fits(completion_tokens=judge, calls=1):
            why = "more distinct answers than letters" if len(opts) > gs.MAX_OPTIONS else "no time left to select"
            return vote_result(ctx, cands, budget_hit=budget_hit, stop_detail=f"the vote decided: {why}")
        return self._select(ctx, cands, opts, budget_hit, judge)

    def _select(self, ctx: Run, cands: list[Candidate], opts: list[gs.Option], budget_hit: bool, judge: int) -> Result:
        mode = gs.Mode(self.mode)
        req = GenRequest(messages=gs.messages(ctx.problem, cands, opts, mode, self.rationale_chars),
                         temperature=self.judge_temperature, top_p=1.0, max_tokens=judge, seed=ctx.seed(),
                         continue_final=mode is gs.Mode.DIRECT, stop=("\n",) if mode is gs.Mode.DIRECT else ())
        (reply,) = ctx.generate([req], Role.VERIFIER, tag="select", refs=[o.shown for o in opts])
        text = reply.samples[0].text
        answers, shown = tuple(o.answer for o in opts), tuple(o.shown for o in opts)
        choice = gs.parse_choice(text, answers, mode)
        if choice is None:
            ctx.note(GenSelect(answers, shown, text, None, None))
            return vote_result(ctx, cands, budget_hit=budget_hit,
                               stop_detail="the selection reply named no candidate; the vote decided")
        pick = opts[choice]
        counts = {o.answer: float(len(o.members)) for o in opts}
        ctx.note(GenSelect(answers, shown, text, choice, pick.answer))
        return ctx.result(cands, chosen_index=pick.shown, votes=counts, votes_kind="count",
                          stop_reason="budget" if budget_hit else "done")
