"""Weighted self-consistency: sample N chains, weight each chain's vote by its verifier score, return the answer with
the largest total weight ("RM-weighted voting").

Li et al., "Making Large Language Models Better Reasoners with Step-Aware Verifier", https://arxiv.org/abs/2206.02336;
Uesato et al., "Solving math word problems with process- and outcome-based feedback", https://arxiv.org/abs/2211.14275.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies._verified import VerifiedSampling
from thinkscale.strategies.base import register
from thinkscale.verifiers.aggregate import Selection


@register("weighted-sc", "N sampled chains, majority vote weighted by verifier scores (P(yes), confidence, PRM)",
          "https://arxiv.org/abs/2206.02336")
@dataclass(frozen=True)
class WeightedSelfConsistency(VerifiedSampling):
    """Args: the knobs of ``strategies._verified.VerifiedSampling`` (``n_samples`` is the budget knob).

    Selection is ``weighted_majority``: each answered chain adds its score to its normalised answer; the largest sum
    wins (ties broken by ``rng``); the chosen candidate is the winning answer's best-scored chain. Budget as for
    best-of-N: chains that fit at ``max_tokens`` each; verifier calls charged to ``Role.VERIFIER``.

    >>> execute(WeightedSelfConsistency(n_samples=8, verifier="confidence-mean"), problem, backend,  # doctest: +SKIP
    ...         Budget(max_completion_tokens=4096), rng=random.Random(0))
    """

    selection: ClassVar[Selection] = Selection.WEIGHTED_MAJORITY
