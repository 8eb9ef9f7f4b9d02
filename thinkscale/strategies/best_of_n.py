"""Best-of-N: sample N chains of thought, score each with a verifier, return the best-scored answered one.

Cobbe et al., "Training Verifiers to Solve Math Word Problems", https://arxiv.org/abs/2110.14168 (verifier reranking);
Lightman et al., "Let's Verify Step by Step", https://arxiv.org/abs/2305.20050 (best-of-N with a PRM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies._verified import VerifiedSampling
from thinkscale.strategies.base import register
from thinkscale.verifiers.aggregate import Selection


@register("best-of-n", "N sampled chains, each scored by a verifier (P(yes), confidence, PRM); the best-scored wins",
          "https://arxiv.org/abs/2110.14168")
@dataclass(frozen=True)
class BestOfN(VerifiedSampling):
    """Args: the knobs of ``strategies._verified.VerifiedSampling`` (``n_samples`` is the budget knob).

    Selection is ``argmax`` over answered candidates (ties broken by ``rng``). Budget: every chain may use
    ``max_tokens`` completion tokens, so only the chains that fit in the worst case are sampled; verifier calls
    are charged to ``Role.VERIFIER`` and count against ``max_calls`` (see ``strategies._verified``).

    >>> execute(BestOfN(n_samples=8, verifier="pyes"), problem, backend, Budget(),  # doctest: +SKIP
    ...         rng=random.Random(0))
    """

    selection: ClassVar[Selection] = Selection.ARGMAX
