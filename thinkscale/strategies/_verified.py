"""What best-of-N and weighted self-consistency share: sample N chains, score them with a verifier, reduce step
scores, select. One implementation, so the two differ only in their ``Selection``.

The verifier knob is a registered name (``pyes``, ``confidence-mean``, ``prm``, ...; ``verifier_path`` gives a
``prm`` head's file or a ``prm-http`` URL), resolved by the run context on the run's backend, or a verifier object
(``BestOfN(verifier=MyVerifier())``).

Budget. Generation is charged to ``Role.GENERATOR`` and scoring to ``Role.VERIFIER``, on one ledger. A
completion-token budget limits the samples to what fits at ``max_tokens`` each (verifiers here generate nothing).
A call budget counts the verifier's calls too: the verifier declares what scoring costs (``max_calls``), N is chosen
so generation plus scoring fits, and when a PRM's step count (known only after generation) makes scoring all of
them too dear, only the first candidates that fit are scored and can be chosen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies.base import check_int, check_top_p, check_verifier_knob, operator_knob
from thinkscale.strategies.events import Select
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.types import Candidate, GenRequest, Result
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select
from thinkscale.verifiers.base import Verifier, reads_logprobs


@dataclass(frozen=True)
class VerifiedSampling:
    """The knobs and the run of best-of-N and weighted self-consistency, which differ only in ``selection``.

    Args:
        n_samples: chains to sample (one batched call). The budget knob.
        verifier: a registered verifier name (``pyes``, ``confidence-mean``, ``confidence-lowest-group``, ``prm``,
            ``prm-http``, ``game24``), built on the generator's own backend, or a verifier object. ``reference``
            (or any verifier that reads the answer key) is refused.
        verifier_path: the saved head of a ``prm`` verifier, or the URL of ``prm-http``.
        step_aggregation: how a PRM's per-step scores become one (``last``, ``min``, ``product``, ``mean``).
        temperature, top_p, max_tokens: sampling knobs; ``max_tokens`` per chain.
    """

    name: ClassVar[str]
    prefix_consistent: ClassVar[bool] = True
    budget_knob: ClassVar[str] = "n_samples"
    # how the scored candidates' answers are chosen: set by each subclass
    selection: ClassVar[Selection]

    n_samples: int = 8
    verifier: str | Verifier = "pyes"
    verifier_path: str | None = operator_knob(None)
    step_aggregation: StepAggregation = StepAggregation.LAST
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (sampling N chains at 0 gives N copies), "
                             f"got {self.temperature!r}")
        check_top_p(self.top_p)
        check_int("max_tokens", self.max_tokens)
        object.__setattr__(self, "step_aggregation", StepAggregation(self.step_aggregation))
        check_verifier_knob(self.verifier, self.verifier_path)

    def run(self, ctx: Run) -> Result:
        return run_scored(self, ctx)


def run_scored(strategy: VerifiedSampling, ctx: Run) -> Result:
    """Sample, score, select with ``strategy``'s knobs and its ``selection``."""
    verifier = ctx.verifier(strategy.verifier, strategy.verifier_path)
    probe = Candidate(text="x", answer=None)  # a one-step stand-in: a PRM's calls grow with steps, checked again
    n = ctx.affordable(strategy.n_samples, strategy.max_tokens,
                       calls=lambda k: 1 + verifier.max_calls([probe] * k))  # generation + scoring must fit
    if n == 0:
        ctx.stop("budget", "budget allows no sample")
        return ctx.result((), stop_reason="budget")
    (completion,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=n, temperature=strategy.temperature,
                                             top_p=strategy.top_p, max_tokens=strategy.max_tokens, seed=ctx.seed(),
                                             logprobs=reads_logprobs(verifier))])
    cands = candidates_from(completion)
    # Score the longest prefix of candidates whose scoring fits (all of them unless a PRM's steps make it too dear).
    k = ctx.scorable(verifier, cands)
    if k == 0:
        ctx.stop("budget", "budget leaves nothing to score with")
        return ctx.result(cands, stop_reason="budget")
    raw = ctx.verify(verifier, cands[:k])
    scores = [aggregate_steps(r, strategy.step_aggregation) for r in raw]
    cands = [dataclasses.replace(c, scores=tuple(r)) for c, r in zip(cands[:k], raw, strict=True)] + cands[k:]
    choice = select([c.answer for c in cands[:k]], scores, strategy.selection, rng=ctx.rng)
    ctx.note(Select(str(strategy.selection), tuple(range(k)), tuple(scores), dict(choice.tally), choice.answer,
                    choice.index, choice.tie))
    short = n < strategy.n_samples or k < len(cands)
    return ctx.result(cands, chosen_index=choice.index, votes=dict(choice.tally), votes_kind="score",
                      stop_reason="budget" if short else "done")
