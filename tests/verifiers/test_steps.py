"""Step splitting and the prefixes a process verifier scores."""

from __future__ import annotations

import pytest

from thinkscale.types import Candidate
from thinkscale.verifiers.base import candidate_steps, split_steps, step_prefixes

SPLIT_CASES = [
    ("a\n\nb\n\nc", ("a", "b", "c"), "blank lines separate steps"),
    ("a\nstill a\n\nb", ("a\nstill a", "b"), "a single newline stays inside a step"),
    ("a\n  \t\nb", ("a", "b"), "a whitespace-only line is blank"),
    ("a\n\n\n\nb\n\n", ("a", "b"), "runs of blank lines and trailing blanks make no empty steps"),
    ("  one step  ", ("one step",), "no separator: one step, stripped"),
    ("", (), "nothing: no steps"),
    ("\n\n \n", (), "only blanks: no steps"),
]


@pytest.mark.parametrize(("text", "steps", "why"), SPLIT_CASES)
def test_split_steps(text, steps, why):
    assert split_steps(text) == steps, why


def test_split_steps_takes_another_separator():
    assert split_steps("Step 1: a Step 2: b", r"\s*(?=Step \d+:)") == ("Step 1: a", "Step 2: b")
    assert split_steps("a\nb\nc", r"\n") == ("a", "b", "c")


def test_candidate_steps_prefers_the_candidates_own_steps():
    c = Candidate(text="x\n\ny", answer=None, steps=("x\n\ny as one step",))
    assert candidate_steps(c) == ("x\n\ny as one step",)
    assert candidate_steps(Candidate(text="x\n\ny", answer=None)) == ("x", "y")
    assert candidate_steps(Candidate(text="", answer=None)) == ("",), "an empty candidate still gets one score"


def test_step_prefixes():
    assert step_prefixes(("a", "b", "c")) == ["a", "a\n\nb", "a\n\nb\n\nc"]
    assert step_prefixes(("a", "b"), joiner="\n") == ["a", "a\nb"]
