"""Best-of-N: sample N chains of thought, score each with a verifier, return the best-scored answered one.

Cobbe et al., "Training Verifiers to Solve Math Word Problems", https://arxiv.org/abs/2110.14168 (verifier reranking);
Lightman et al., "Let's Verify Step by Step", https://arxiv.org/abs/2305.20050 (best-of-N with a PRM).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.backends.base import Backend
from thinkscale.strategies._verified import check_common_knobs, run_scored
from thinkscale.strategies.base import register
from thinkscale.types import Budget, Problem, Result
from thinkscale.verifiers.aggregate import Selection, StepAggregation


@register("best-of-n", "N sampled chains, each scored by a verifier (P(yes), confidence, PRM); the best-scored wins",
          "https://arxiv.org/abs/2110.14168")
@dataclass(frozen=True)
class BestOfN:
    """Args:
        n_samples: chains to sample (one batched call). The budget knob.
        verifier: a registered verifier name (``pyes``, ``confidence-mean``, ``confidence-lowest-group``, ``prm``,
            ``prm-http``, ``game24``); built on the generator's own backend. ``reference`` is refused.
        verifier_path: the saved head of a ``prm`` verifier, or the URL of ``prm-http``.
        step_aggregation: how a PRM's per-step scores become one (``last``, ``min``, ``product``, ``mean``).
        temperature, top_p, max_tokens: sampling knobs; ``max_tokens`` per chain.

    Selection is ``argmax`` over answered candidates (ties broken by ``rng``). Budget: every chain may use
    ``max_tokens`` completion tokens, so only the chains that fit in the worst case are sampled; verifier calls
    are charged to ``Role.VERIFIER`` and count against ``max_calls`` (see ``strategies._verified``).

    >>> BestOfN(n_samples=8, verifier="pyes").run(problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = True
    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 8
    verifier: str = "pyes"
    verifier_path: str | None = None
    step_aggregation: StepAggregation = StepAggregation.LAST
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_common_knobs(self)

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
        return run_scored(self, Selection.ARGMAX, problem, backend, budget, rng=rng)
