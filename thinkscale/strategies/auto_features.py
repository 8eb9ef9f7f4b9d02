"""Difficulty from a first wave of samples: cheap signals, a scalar score, and bins. Pure functions, no model calls.

A first wave of W chains (drawn exactly as self-consistency draws its first W) gives:

- ``agreement``: the leading normalised answer's share of the wave, counting unanswered chains in the denominator
  (4 of 4 agree -> 1.0; 2 of 4 with two unanswered -> 0.5; nobody answered -> 0.0);
- ``answered``: the fraction of chains with an extractable answer;
- ``confidence``: the mean over chains of DeepConf's lowest-group confidence, ``exp`` of the lowest mean logprob over
  windows of ``window`` tokens (``verifiers/confidence.py``; Fu et al., https://arxiv.org/abs/2508.15260); None when
  the wave was drawn without logprobs;
- ``P``: Adaptive-Consistency's posterior that the leader stays the majority (``majority_stays_probability``).

The difficulty score is in [0, 1], higher = harder: ``1 - agreement`` (``DifficultyScore.AGREEMENT``), or
``1 - (agreement + confidence) / 2`` (``AGREEMENT_CONFIDENCE``, which needs logprobs), or ``1 - p`` where ``p`` is
a verifier's probability that the wave's first chain is right (``VERIFIER``: with a greedy-first wave of one chain,
the trained ORM judging the greedy chain; the score that lets auto stop at one chain). Bins split the score at fitted
edges: bin ``i`` holds scores in ``[edges[i-1], edges[i])``, so bin 0 is the easiest. ``fit_edges`` starts from one
bin per distinct score (a wave of 4 has only 5 agreement values, so quantile edges would split ties arbitrarily)
and merges the smallest bin into its smaller neighbour until at most ``n_bins`` remain, each with at least
``min_per_bin`` problems where possible; an edge is the midpoint between the neighbouring bins' scores.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.strategies.adaptive_sc import majority_stays_probability
from thinkscale.types import Candidate
from thinkscale.verifiers.confidence import lowest_group_logprob


class DifficultyScore(enum.StrEnum):
    AGREEMENT = "agreement"
    AGREEMENT_CONFIDENCE = "agreement+confidence"
    VERIFIER = "verifier"

    @property
    def needs_logprobs(self) -> bool:
        return self is DifficultyScore.AGREEMENT_CONFIDENCE

    @property
    def needs_verifier(self) -> bool:
        return self is DifficultyScore.VERIFIER


@dataclass(frozen=True)
class WaveFeatures:
    n: int
    answered: float
    agreement: float
    top_answer: str | None
    counts: dict[str, int]
    P: float
    confidence: float | None
    verifier_p: float | None = None  # the policy's verifier's probability that the wave's first chain is right

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trace_confidence(logprobs: Sequence[float] | None, window: int) -> float | None:
    """DeepConf lowest-group confidence of one chain in (0, 1]; 0.0 for a chain with no tokens; None without
    logprobs."""
    if logprobs is None:
        return None
    if not logprobs:
        return 0.0
    return math.exp(lowest_group_logprob(logprobs, window))


def wave_features(candidates: Sequence[Candidate], *, window: int = 2048) -> WaveFeatures:
    """The signals of one wave (see the module doc). An empty wave has agreement 0 and answered 0."""
    n = len(candidates)
    keys = [normalize_answer(c.answer) for c in candidates]
    counts = dict(Counter(k for k in keys if k is not None))
    top = max(counts.values()) if counts else 0
    leaders = sorted(a for a, v in counts.items() if v == top)
    confs = [trace_confidence(c.logprobs, window) for c in candidates]
    confidence = None if not confs or any(c is None for c in confs) else math.fsum(
        c for c in confs if c is not None) / n
    return WaveFeatures(n=n, answered=(len([k for k in keys if k is not None]) / n) if n else 0.0,
                        agreement=top / n if n else 0.0, top_answer=leaders[0] if len(leaders) == 1 else None,
                        counts=counts, P=majority_stays_probability(counts), confidence=confidence)


def difficulty_score(features: WaveFeatures, how: DifficultyScore) -> float:
    """The scalar difficulty in [0, 1] (higher = harder); raises ValueError when ``how`` needs confidence and the
    wave has none."""
    how = DifficultyScore(how)
    if how is DifficultyScore.AGREEMENT:
        return 1.0 - features.agreement
    if how is DifficultyScore.VERIFIER:
        if features.verifier_p is None:
            raise ValueError("difficulty score 'verifier' needs the verifier's score of the wave's first chain")
        return 1.0 - features.verifier_p
    if features.confidence is None:
        raise ValueError("difficulty score 'agreement+confidence' needs the wave's logprobs (none were returned)")
    return 1.0 - (features.agreement + features.confidence) / 2.0


def bin_index(score: float, edges: Sequence[float]) -> int:
    """Bin of ``score``: the number of edges <= score (bin 0 is the easiest)."""
    return bisect.bisect_right(list(edges), score)


def bin_names(n_bins: int) -> list[str]:
    if n_bins < 1:
        raise ValueError(f"need at least one bin, got {n_bins}")
    named = {1: ["all"], 2: ["easy", "hard"], 3: ["easy", "medium", "hard"],
             4: ["easy", "medium", "hard", "hardest"]}
    return named.get(n_bins, [f"bin{i + 1}" for i in range(n_bins)])


def fit_edges(scores: Sequence[float], *, n_bins: int, min_per_bin: int = 1) -> list[float]:
    """Edges splitting ``scores`` into at most ``n_bins`` bins of distinct-score runs (see the module doc).

    Example: scores 0 (x6), 0.25 (x2), 0.5 (x1), 0.75 (x1) into 3 bins: the smallest run (0.5, tied with 0.75, the
    first wins) merges into its smaller neighbour (0.75): runs {0}: 6, {0.25}: 2, {0.5, 0.75}: 2 -> edges
    [0.125, 0.375]."""
    if n_bins < 1 or min_per_bin < 1:
        raise ValueError(f"n_bins and min_per_bin must be >= 1, got {n_bins}, {min_per_bin}")
    if not scores:
        raise ValueError("no scores to fit bins on")
    counts = Counter(scores)
    runs: list[list[float]] = [[v] for v in sorted(counts)]
    sizes = [counts[v] for v in sorted(counts)]

    def merge_smallest() -> None:
        i = min(range(len(runs)), key=lambda k: (sizes[k], k))
        if i == 0:
            j = 1
        elif i == len(runs) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        runs[lo:hi + 1] = [runs[lo] + runs[hi]]
        sizes[lo:hi + 1] = [sizes[lo] + sizes[hi]]

    while len(runs) > n_bins:
        merge_smallest()
    while len(runs) > 1 and min(sizes) < min_per_bin:
        merge_smallest()
    return [(runs[i][-1] + runs[i + 1][0]) / 2.0 for i in range(len(runs) - 1)]
