"""Confidence from the generator's own token log-probabilities: free, no model call (nothing is charged).

Both verifiers need ``Candidate.logprobs`` (the sampled tokens' logprobs: generate with ``GenRequest(logprobs=True)``
and copy ``Sample.logprobs`` into the Candidate). Scores are mapped to [0, 1] by ``exp``:

- ``confidence-mean``: ``exp(mean logprob)``, the geometric mean of the sampled tokens' probabilities (1 / perplexity).
- ``confidence-lowest-group``: DeepConf-style lowest group confidence: the minimum, over sliding windows of
  ``window`` consecutive tokens (capped to the length), of the window's mean logprob, then ``exp``. One confused
  stretch sinks the whole trace, which the overall mean would average away.

Fu et al., "Deep Think with Confidence", https://arxiv.org/abs/2508.15260. DeepConf's token confidence is the negative
mean logprob of the top-k candidate tokens; these backends report only the sampled token's logprob, so ours is the
sampled-token version of the same windowed minimum. A candidate with no tokens scores 0.0 (no evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.types import Candidate, Ledger, Problem
from thinkscale.verifiers.base import VerifierError, VerifierKind, register


def mean_logprob(logprobs: Sequence[float]) -> float:
    if not logprobs:
        raise ValueError("no logprobs")
    return math.fsum(logprobs) / len(logprobs)


def lowest_group_logprob(logprobs: Sequence[float], window: int) -> float:
    """Minimum over all windows of ``min(window, len)`` consecutive tokens of the window's mean logprob."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = len(logprobs)
    if n == 0:
        raise ValueError("no logprobs")
    w = min(window, n)
    prefix = [0.0]
    for lp in logprobs:
        prefix.append(prefix[-1] + lp)
    return min(prefix[i + w] - prefix[i] for i in range(n - w + 1)) / w


def _logprobs(candidate: Candidate, i: int) -> tuple[float, ...]:
    if candidate.logprobs is None:
        raise VerifierError(f"candidate {i} has no logprobs: generate with GenRequest(logprobs=True) and copy "
                            "Sample.logprobs into Candidate.logprobs")
    return candidate.logprobs


@register("confidence-mean", "exp(mean token logprob) of the generator's own sample (no model call)")
@dataclass(frozen=True)
class MeanLogprobConfidence:
    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False
    reads_logprobs: ClassVar[bool] = True

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 0  # reads the generator's logprobs: no model call

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        out: list[tuple[float, ...]] = []
        for i, c in enumerate(candidates):
            lps = _logprobs(c, i)
            out.append((math.exp(mean_logprob(lps)) if lps else 0.0,))
        return out


@register("confidence-lowest-group", "DeepConf lowest sliding-window mean logprob, exp-mapped (no model call)")
@dataclass(frozen=True)
class LowestGroupConfidence:
    """Args: window: tokens per group (DeepConf uses 2048; capped to the sample's length)."""

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False
    reads_logprobs: ClassVar[bool] = True

    window: int = 2048

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 0  # reads the generator's logprobs: no model call

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        out: list[tuple[float, ...]] = []
        for i, c in enumerate(candidates):
            lps = _logprobs(c, i)
            out.append((math.exp(lowest_group_logprob(lps, self.window)) if lps else 0.0,))
        return out
