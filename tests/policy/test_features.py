"""Difficulty features, scores and bins: pure functions, values computed by hand."""

from __future__ import annotations

import math

import pytest

from thinkscale.strategies.auto_features import (
    DifficultyScore,
    bin_index,
    bin_names,
    difficulty_score,
    fit_edges,
    wave_features,
)
from thinkscale.types import Candidate


def cand(answer: str | None, logprobs: tuple[float, ...] | None = None) -> Candidate:
    return Candidate(text="", answer=answer, logprobs=logprobs)


def test_wave_features_by_hand() -> None:
    """Answers 7, 7.0, 8, none: normalised 7 twice -> agreement 2/4, answered 3/4, P({7: 2, 8: 1}) =
    1 - I_0.5(3, 2) = 1 - (C(4,3) + C(4,4))/16 = 11/16. Confidences exp(-0.5), exp(-1), exp(0), exp(-2) with a
    window of 2 (lowest pair mean): chain 1 [-0.5, -0.5]; chain 2 [-1, -1, 0] -> min(-1, -0.5) = -1."""
    f = wave_features([cand("7", (-0.5, -0.5)), cand("7.0", (-1.0, -1.0, 0.0)), cand("8", (0.0,)),
                       cand(None, (-2.0, -2.0))], window=2)
    assert (f.n, f.agreement, f.answered, f.top_answer) == (4, 0.5, 0.75, "7")
    assert f.P == pytest.approx(11 / 16)
    assert f.confidence == pytest.approx((math.exp(-0.5) + math.exp(-1) + 1 + math.exp(-2)) / 4)
    assert difficulty_score(f, DifficultyScore.AGREEMENT) == 0.5
    assert difficulty_score(f, DifficultyScore.AGREEMENT_CONFIDENCE) == pytest.approx(1 - (0.5 + f.confidence) / 2)


def test_without_logprobs_there_is_no_confidence_score() -> None:
    f = wave_features([cand("1"), cand("1")])
    assert f.confidence is None and f.agreement == 1.0
    with pytest.raises(ValueError, match="needs the wave's logprobs"):
        difficulty_score(f, DifficultyScore.AGREEMENT_CONFIDENCE)


def test_a_tied_or_empty_wave() -> None:
    tied = wave_features([cand("1"), cand("2")])
    assert tied.top_answer is None and tied.agreement == 0.5 and tied.P == 0.5
    empty = wave_features([cand(None)] * 4)
    assert (empty.agreement, empty.answered, empty.P) == (0.0, 0.0, 0.0)


def test_fit_edges_merges_the_smallest_runs() -> None:
    """Docstring example: 0 x6, 0.25 x2, 0.5 x1, 0.75 x1 into 3 bins -> {0} {0.25} {0.5, 0.75}: edges at the
    midpoints 0.125 and 0.375."""
    scores = [0.0] * 6 + [0.25] * 2 + [0.5, 0.75]
    assert fit_edges(scores, n_bins=3) == [0.125, 0.375]
    # min_per_bin 3: {0.25} (2) merges with its smaller neighbour {0.5, 0.75} (2) -> {0} | {0.25..0.75}
    assert fit_edges(scores, n_bins=3, min_per_bin=3) == [0.125]
    assert fit_edges([0.0] * 5, n_bins=3) == []
    assert [bin_index(s, [0.125, 0.375]) for s in (0.0, 0.125, 0.25, 0.5, 1.0)] == [0, 1, 1, 2, 2]
    assert bin_names(3) == ["easy", "medium", "hard"] and bin_names(5)[-1] == "bin5"
    with pytest.raises(ValueError, match="no scores"):
        fit_edges([], n_bins=2)
