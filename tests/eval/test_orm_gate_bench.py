"""bench/orm_gate.py's gate, by hand: stop at greedy when its score clears the threshold, else vote with the sampled
chains, a tie the greedy answer is in going to it."""

from __future__ import annotations

import pytest

from tests.helpers.bench import load_bench
from thinkscale.types import Candidate

gate = load_bench("orm_gate").gate


def chain(answer: str | None, tokens: int) -> Candidate:
    return Candidate(text=f"... {answer}", answer=answer, completion_tokens=tokens)


G_WRONG = (chain("5", 100), False)
RIGHT, WRONG = (chain("7", 120), True), (chain("5", 80), False)


def test_a_trusted_greedy_chain_stops_at_its_tokens() -> None:
    assert gate(0.9, 0.5, G_WRONG, [RIGHT, RIGHT]) == (0.0, 100.0, True)


def test_otherwise_the_sampled_chains_vote_with_it() -> None:
    # greedy 5, sampled 7 and 7: 7 wins 2-1; tokens 100 + 120 + 120; not greedy's answer
    assert gate(0.1, 0.5, G_WRONG, [RIGHT, RIGHT]) == (1.0, 340.0, False)
    # greedy 5, sampled 7: a 1-1 tie the greedy answer is in goes to greedy
    assert gate(0.1, 0.5, G_WRONG, [RIGHT]) == (0.0, 220.0, True)


def test_a_tie_without_the_greedy_answer_is_split() -> None:
    unanswered = (chain(None, 100), False)
    value, tokens, same = gate(0.1, 0.5, unanswered, [RIGHT, WRONG])
    assert (value, tokens, same) == (pytest.approx(0.5), 300.0, False)
