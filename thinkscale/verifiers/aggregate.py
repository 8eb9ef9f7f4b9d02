"""How verifier scores become one score per candidate, and one chosen answer. Enums and pure functions.

``StepAggregation`` reduces a process verifier's per-step scores to one number (sal ``utils/score.py``
``aggregate_scores`` uses the same four; PRM papers mostly use ``last``, ``min`` or ``product``).
``Selection`` picks the answer: ``majority`` (self-consistency), ``weighted_majority`` (sum of scores per answer,
Li et al. 2023 / Uesato et al. 2022 "RM-weighted voting"), ``argmax`` (best-of-N).

Ties are explicit: tied answers are sorted and ``rng`` picks one, so the outcome depends only on the seed.
Unanswered candidates (``answer is None``) neither vote nor win: best-of-N returns the best *answered* candidate.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from thinkscale.answers.extract import normalize_answer


class StepAggregation(enum.StrEnum):
    LAST = "last"  # the score of the full solution (a PRM's last step sees everything)
    MIN = "min"  # a chain is as good as its weakest step
    PRODUCT = "product"  # P(every step is correct) if steps were independent
    MEAN = "mean"


def aggregate_steps(scores: Sequence[float], how: StepAggregation) -> float:
    """One score from per-step scores. An outcome verifier's single score is returned unchanged by all four."""
    if not scores:
        raise ValueError("no step scores to aggregate")
    how = StepAggregation(how)
    if how is StepAggregation.LAST:
        return float(scores[-1])
    if how is StepAggregation.MIN:
        return float(min(scores))
    if how is StepAggregation.PRODUCT:
        return float(math.prod(scores))
    return float(math.fsum(scores) / len(scores))


class Selection(enum.StrEnum):
    MAJORITY = "majority"
    WEIGHTED_MAJORITY = "weighted_majority"
    ARGMAX = "argmax"


@dataclass(frozen=True)
class Choice:
    """What ``select`` chose. ``index``: the chosen candidate (for votes, the winning answer's highest-scored
    candidate, the lowest index among equals); ``answer``: the winning normalised answer; ``tally``: votes or
    summed scores per answer (argmax: each answer's best score); ``tie``: whether ``rng`` broke a tie."""

    index: int | None
    answer: str | None
    tally: dict[str, float] = field(default_factory=dict)
    tie: bool = False


# Sums of the same scores in a different order differ in the last bits: treat those as ties, not as wins.
_REL_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-12)


def select(answers: Sequence[str | None], scores: Sequence[float] | None, how: Selection, *, rng: random.Random,
           key: Callable[[str | None], str | None] = normalize_answer) -> Choice:
    """Choose among candidates by their answers and (for the weighted kinds) one score each.

    Args:
        answers: each candidate's extracted answer (None = no answer).
        scores: one score per candidate (e.g. ``aggregate_steps`` of a PRM's step scores); unused by ``majority``
            except to pick the representative candidate of the winning answer.
        how: a ``Selection``.
        rng: breaks ties among tied answers (sorted first) or tied argmax candidates.
        key: how answers are compared (default ``normalize_answer``: ``"1,000"`` equals ``"1000"``).
    """
    how = Selection(how)
    if scores is None:
        if how is not Selection.MAJORITY:
            raise ValueError(f"{how.value} needs one score per candidate")
        scores = [0.0] * len(answers)
    if len(scores) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    keys = [key(a) if a is not None else None for a in answers]
    answered = [i for i, k in enumerate(keys) if k is not None]
    if not answered:
        return Choice(None, None)
    if how is Selection.ARGMAX:
        best = max(scores[i] for i in answered)
        tied = [i for i in answered if _close(scores[i], best)]
        index = tied[0] if len(tied) == 1 else rng.choice(tied)
        tally: dict[str, float] = {}
        for i in answered:
            k = keys[i]
            assert k is not None
            tally[k] = max(tally.get(k, -math.inf), float(scores[i]))
        return Choice(index, keys[index], tally, len(tied) > 1)
    tally = {}
    for i in answered:
        k = keys[i]
        assert k is not None
        tally[k] = tally.get(k, 0.0) + (1.0 if how is Selection.MAJORITY else float(scores[i]))
    top = max(tally.values())
    tied_answers = sorted(a for a, v in tally.items() if _close(v, top))
    winner = tied_answers[0] if len(tied_answers) == 1 else rng.choice(tied_answers)
    members = [i for i in answered if keys[i] == winner]
    index = max(members, key=lambda i: (scores[i], -i))
    return Choice(index, winner, tally, len(tied_answers) > 1)
