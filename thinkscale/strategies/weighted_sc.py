"""Weighted self-consistency: sample N chains, weight each chain's vote by its verifier score, return the answer with
the largest total weight ("RM-weighted voting").

Li et al., "Making Large Language Models Better Reasoners with Step-Aware Verifier", https://arxiv.org/abs/2206.02336;
Uesato et al., "Solving math word problems with process- and outcome-based feedback", https://arxiv.org/abs/2211.14275.
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


@register("weighted-sc", "N sampled chains, majority vote weighted by verifier scores (P(yes), confidence, PRM)",
          "https://arxiv.org/abs/2206.02336")
@dataclass(frozen=True)
class WeightedSelfConsistency:
    """Args:
        n_samples: chains to sample (one batched call). The budget knob.
        verifier: a registered verifier name (``pyes``, ``confidence-mean``, ``confidence-lowest-group``, ``prm``,
            ``prm-http``, ``game24``); built on the generator's own backend. ``reference`` is refused.
        verifier_path: the saved head of a ``prm`` verifier, or the URL of ``prm-http``.
        step_aggregation: how a PRM's per-step scores become one (``last``, ``min``, ``product``, ``mean``).
        temperature, top_p, max_tokens: sampling knobs; ``max_tokens`` per chain.

    Selection is ``weighted_majority``: each answered chain adds its score to its normalised answer; the largest sum
    wins (ties broken by ``rng``); the chosen candidate is the winning answer's best-scored chain. Budget as for
    best-of-N: chains that fit at ``max_tokens`` each; verifier calls charged to ``Role.VERIFIER``.

    >>> WeightedSelfConsistency(n_samples=8, verifier="confidence-mean").run(  # doctest: +SKIP
    ...     problem, backend, Budget(max_completion_tokens=4096), rng=random.Random(0))
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
        return run_scored(self, Selection.WEIGHTED_MAJORITY, problem, backend, budget, rng=rng)
