"""The majority vote as a run's final step, shared by every strategy that ends with one (self-consistency, RSA,
SC-TIR, PAL, adaptive-sc, auto). Not a strategy: no ``@register``."""

from __future__ import annotations

from collections.abc import Sequence

from thinkscale.strategies.base import majority_vote, voted_index
from thinkscale.strategies.events import Vote
from thinkscale.strategies.run import Run
from thinkscale.types import Candidate, Result


def vote_result(ctx: Run, candidates: Sequence[Candidate], *, budget_hit: bool,
                voters: Sequence[int] | None = None, stop_detail: str | None = None) -> Result:
    """The majority over the answers of ``voters`` (indices into ``candidates``; default all), ties broken by the
    run's rng; the chosen candidate is the first voter with the winning normalised answer."""
    pool = list(range(len(candidates))) if voters is None else list(voters)
    winner, counts, tie = majority_vote([candidates[i].answer for i in pool], ctx.rng)
    ctx.note(Vote({a: float(c) for a, c in counts.items()}, winner, tie))
    return ctx.result(candidates, chosen_index=voted_index(candidates, winner, pool),
                      votes={a: float(c) for a, c in counts.items()}, votes_kind="count",
                      stop_reason="budget" if budget_hit else "done", stop_detail=stop_detail)
