"""Confidence from the generator's own logprobs: hand-computed, including the sliding-window minimum."""

from __future__ import annotations

import math

import pytest

from thinkscale.backends.scripted import ScriptedBackend, ScriptItem
from thinkscale.types import Candidate, GenRequest, Ledger, Problem
from thinkscale.verifiers.base import VerifierError
from thinkscale.verifiers.confidence import (
    LowestGroupConfidence,
    MeanLogprobConfidence,
    lowest_group_logprob,
    mean_logprob,
)

P = Problem.from_text("q")
LPS = (-0.1, -0.1, -2.0, -3.0, -0.1, -0.1)


def cand(lps):
    return Candidate(text="t", answer="1", logprobs=lps)


def test_mean_confidence_is_exp_of_the_mean_logprob():
    """mean = (-0.1 * 4 - 2 - 3) / 6 = -0.9 -> exp(-0.9) = 0.40657."""
    assert mean_logprob(LPS) == pytest.approx(-0.9)
    (s,) = MeanLogprobConfidence().score(P, [cand(LPS)], ledger=Ledger())
    assert s == (pytest.approx(math.exp(-0.9)),)


@pytest.mark.parametrize(("window", "expected", "why"), [
    (1, -3.0, "the single worst token"),
    (2, -2.5, "tokens 3-4: (-2 - 3) / 2"),
    (3, -5.1 / 3, "tokens 2-4 and 3-5 tie: (-0.1 - 2 - 3) / 3"),
    (6, -0.9, "one window: the overall mean"),
    (2048, -0.9, "the window is capped to the length: the overall mean"),
])
def test_lowest_group_is_the_minimum_window_mean(window, expected, why):
    assert lowest_group_logprob(LPS, window) == pytest.approx(expected), why
    (s,) = LowestGroupConfidence(window=window).score(P, [cand(LPS)], ledger=Ledger())
    assert s == (pytest.approx(math.exp(expected)),), why


def test_lowest_group_ranks_a_locally_confused_trace_below_a_uniform_one():
    """Same mean (-0.9) but one has a bad stretch: the mean cannot tell them apart, the lowest group can."""
    uniform = (-0.9,) * 6
    mean = MeanLogprobConfidence().score(P, [cand(LPS), cand(uniform)], ledger=Ledger())
    low = LowestGroupConfidence(window=2).score(P, [cand(LPS), cand(uniform)], ledger=Ledger())
    assert mean[0] == pytest.approx(mean[1])
    assert low[0][0] < low[1][0]


def test_no_logprobs_is_an_error_and_an_empty_sample_scores_zero():
    with pytest.raises(VerifierError, match="logprobs=True"):
        MeanLogprobConfidence().score(P, [Candidate(text="t", answer=None)], ledger=Ledger())
    assert LowestGroupConfidence().score(P, [cand(())], ledger=Ledger()) == [(0.0,)]
    assert MeanLogprobConfidence().score(P, [cand(())], ledger=Ledger()) == [(0.0,)]
    with pytest.raises(ValueError):
        LowestGroupConfidence(window=0)


def test_confidence_works_on_logprobs_a_backend_returned_and_charges_nothing():
    fake = ScriptedBackend([ScriptItem("a b c", logprobs=(-0.2, -0.4, -0.6))])
    (c,) = fake.generate([GenRequest(prompt="q", logprobs=True)])
    s = c.samples[0]
    ledger = Ledger()
    scores = MeanLogprobConfidence().score(P, [Candidate(text=s.text, answer=None, logprobs=s.logprobs)],
                                           ledger=ledger)
    assert scores == [(pytest.approx(math.exp(-0.4)),)]
    assert ledger.entries == []
