"""Aggregations: step reductions and answer selection, table-driven, with seeded tie-breaks."""

from __future__ import annotations

import math
import random

import pytest

from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select

STEP_CASES = [
    # (scores, how, expected, why)
    ((0.9, 0.5, 0.8), "last", 0.8, "the final step's score"),
    ((0.9, 0.5, 0.8), "min", 0.5, "the weakest step"),
    ((0.9, 0.5, 0.8), "product", 0.36, "0.9 * 0.5 * 0.8"),
    ((0.9, 0.5, 0.8), "mean", 2.2 / 3, "(0.9 + 0.5 + 0.8) / 3"),
    ((0.7,), "last", 0.7, "an outcome score passes through"),
    ((0.7,), "min", 0.7, "an outcome score passes through"),
    ((0.7,), "product", 0.7, "an outcome score passes through"),
    ((0.7,), "mean", 0.7, "an outcome score passes through"),
]


@pytest.mark.parametrize(("scores", "how", "expected", "why"), STEP_CASES)
def test_aggregate_steps(scores, how, expected, why):
    assert aggregate_steps(scores, StepAggregation(how)) == pytest.approx(expected), why


def test_aggregate_steps_rejects_empty_and_unknown():
    with pytest.raises(ValueError):
        aggregate_steps((), StepAggregation.LAST)
    with pytest.raises(ValueError):
        aggregate_steps((0.5,), "median")  # type: ignore[arg-type]


SELECT_CASES = [
    # (answers, scores, how, expected index, expected answer, tie, why)
    (["3", "4", "3"], None, "majority", 0, "3", False, "two votes for 3; its first candidate represents it"),
    (["3", "4", "3", "4"], [0.1, 0.2, 0.9, 0.3], "majority", 3, "4", True,
     "a 2-2 tie: Random(0).choice(['3', '4']) is '4'; its representative is the best-scored '4' (index 3)"),
    (["3", "4", "4"], [0.9, 0.3, 0.4], "weighted_majority", 0, "3", False, "0.9 for 3 beats 0.3 + 0.4 = 0.7 for 4"),
    (["3", "4", "4"], [0.5, 0.3, 0.4], "weighted_majority", 2, "4", False,
     "0.7 for 4 beats 0.5 for 3; the representative is 4's higher-scored candidate"),
    (["3", "4", "4"], [0.2, 0.9, 0.1], "argmax", 1, "4", False, "the single best candidate"),
    (["3", None, "4"], [0.2, 0.99, 0.1], "argmax", 0, "3", False, "an unanswered candidate cannot win"),
    (["1,000", "1000.0", "7"], None, "majority", 0, "1000", False, "answers are compared normalised"),
    ([None, None], [0.5, 0.6], "argmax", None, None, False, "nothing to choose"),
]


@pytest.mark.parametrize(("answers", "scores", "how", "index", "answer", "tie", "why"), SELECT_CASES)
def test_select(answers, scores, how, index, answer, tie, why):
    choice = select(answers, scores, Selection(how), rng=random.Random(0))
    assert (choice.index, choice.answer, choice.tie) == (index, answer, tie), why


def test_majority_tie_is_broken_by_the_seed_alone():
    """The tied answers are sorted before rng.choice, so candidate order does not matter, only the seed."""
    a = ["4", "3", "4", "3"]
    b = ["3", "4", "3", "4"]
    for seed in range(20):
        ca = select(a, None, Selection.MAJORITY, rng=random.Random(seed))
        cb = select(b, None, Selection.MAJORITY, rng=random.Random(seed))
        assert ca.tie and ca.answer == cb.answer
    winners = {select(a, None, Selection.MAJORITY, rng=random.Random(s)).answer for s in range(20)}
    assert winners == {"3", "4"}  # both are reachable: the tie really is random


def test_argmax_tie_uses_rng_and_sums_that_differ_in_the_last_bit_tie():
    winners = {select(["1", "2"], [0.5, 0.5], Selection.ARGMAX, rng=random.Random(s)).index for s in range(20)}
    assert winners == {0, 1}
    # 0.1 + 0.2 != 0.3 in floating point, but it is the same evidence: a tie, not a win
    choice = select(["1", "1", "2"], [0.1, 0.2, 0.3], Selection.WEIGHTED_MAJORITY, rng=random.Random(0))
    assert choice.tie
    assert choice.tally == {"1": pytest.approx(0.3), "2": 0.3}


def test_weighted_majority_needs_scores():
    with pytest.raises(ValueError, match="needs one score"):
        select(["1"], None, Selection.WEIGHTED_MAJORITY, rng=random.Random(0))
    with pytest.raises(ValueError, match="2 answers but 1 scores"):
        select(["1", "2"], [0.5], Selection.ARGMAX, rng=random.Random(0))


def test_tally_reports_votes_and_best_scores():
    c = select(["5", "5", "6"], [0.2, 0.4, 0.9], Selection.MAJORITY, rng=random.Random(0))
    assert c.tally == {"5": 2.0, "6": 1.0} and c.index == 1  # 5 wins; its best-scored candidate is index 1
    c = select(["5", "5", "6"], [0.2, 0.4, 0.9], Selection.ARGMAX, rng=random.Random(0))
    assert c.tally == {"5": 0.4, "6": 0.9} and math.isclose(c.tally["6"], 0.9)
