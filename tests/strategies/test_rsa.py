"""Recursive self-aggregation on the scripted fake: K distinct members per aggregation prompt, N prompts per round,
majority over the last population, whole rounds within the budget."""

from __future__ import annotations

import random
import re

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.rsa import RecursiveSelfAggregation
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Problem, Result

FIRST = ["alpha \\boxed{1}", "bravo \\boxed{1}", "charlie \\boxed{1}", "delta \\boxed{2}"]


def run(script, budget: Budget | None = None, seed: int = 0, problem: Problem = PROBLEM, **knobs):
    b = ScriptedBackend(script)
    return execute(RecursiveSelfAggregation(**knobs), problem, b, budget or Budget(), rng=random.Random(seed)), b


def test_each_aggregation_prompt_shows_k_distinct_members_of_the_current_population():
    """N 4, K 3: round 1 has 4 prompts (one batched call), each quoting 3 different first-population texts, which
    are exactly the members the trace records."""
    result, b = run(FIRST + [f"agg{i} \\boxed{{2}}" for i in range(4)], population=4, aggregation_size=3, rounds=1)
    assert b.calls == 2
    round1 = b.requests[1:]
    assert len(round1) == 4
    members = next(e for e in algo_trace(result) if e["event"] == "aggregate")["members"]
    for req, m in zip(round1, members, strict=True):
        prompt = req.messages[-1].content
        quoted = re.findall(r"Solution \d+:\n(\w+)", prompt)
        assert len(quoted) == 3 == len(set(quoted))
        assert quoted == [FIRST[j].split()[0] for j in m]
        assert "What is 6 times 7?" in prompt and "3 candidate solutions" in prompt


def rounds(result: Result) -> int:
    """The aggregation rounds a run made (one ``aggregate`` event each)."""
    return sum(e["event"] == "aggregate" for e in algo_trace(result))


def test_member_draws_come_from_the_rng():
    draws = {tuple(map(tuple, next(e for e in algo_trace(run(FIRST + ["x \\boxed{1}"] * 4, seed=s, population=4,
                                                              aggregation_size=2, rounds=1)[0])
                                   if e["event"] == "aggregate")["members"])) for s in range(6)}
    assert len(draws) > 1


def test_the_answer_is_the_majority_of_the_last_population():
    """The first population votes 1 (three to one); round 1 votes 2 (three to one): RSA answers 2."""
    script = FIRST + ["e \\boxed{2}", "f \\boxed{2}", "g \\boxed{1}", "h \\boxed{2}"]
    result, _ = run(script, population=4, aggregation_size=2, rounds=1)
    assert result.answer == "2" and result.stop_reason == "done"
    vote = algo_trace(result)[-1]
    assert vote["event"] == "vote" and vote["counts"] == {"2": 3, "1": 1}
    assert rounds(result) == 1 and result.votes == {"2": 3, "1": 1}
    assert len(result.candidates) == 8
    assert result.chosen is result.candidates[4]
    assert all(c.parent is not None and 0 <= c.parent < 4 for c in result.candidates[4:])


def test_zero_rounds_is_a_majority_vote_of_the_first_population():
    result, b = run(FIRST, population=4, aggregation_size=2, rounds=0)
    assert b.calls == 1 and result.answer == "1"


@pytest.mark.parametrize(("max_completion_tokens", "rounds_run", "stop"), [
    (39, 0, "budget"),  # 4 x 10 = 40 does not fit: only 3 first samples, no aggregation
    (40, 0, "budget"),  # the first population exactly; round 1 needs 40 more
    (79, 0, "budget"),
    (80, 1, "budget"),
    (120, 2, "done"),
])
def test_rounds_run_only_when_the_whole_round_fits(max_completion_tokens, rounds_run, stop):
    """Every text is 12 words, cut to max_tokens 10: each population costs exactly 40 tokens."""
    script = [words(12, "3")] * 12
    result, b = run(script, Budget(max_completion_tokens=max_completion_tokens), population=4, aggregation_size=2,
                    rounds=2, max_tokens=10)
    assert result.ledger.total().completion_tokens <= max_completion_tokens
    assert rounds(result) == rounds_run
    assert result.stop_reason == stop
    assert len(b.requests) == 1 + 4 * rounds_run


def test_a_call_budget_counts_each_aggregation_request():
    """The first population is 1 call; a round of N=4 requests is 4 calls: max_calls 5 allows one round."""
    result, b = run([words(3, "1")] * 12, Budget(max_calls=5), population=4, aggregation_size=2, rounds=2)
    assert result.ledger.total().calls == 5
    assert rounds(result) == 1 and result.stop_reason == "budget"


def test_braces_in_the_problem_are_kept_verbatim():
    problem = Problem.from_text("Simplify {solutions} and {{x}}")
    _, b = run(["a \\boxed{1}", "b \\boxed{1}", "c \\boxed{1}", "d \\boxed{1}"], problem=problem, population=2,
               aggregation_size=2, rounds=1)
    prompt = b.requests[1].messages[-1].content
    assert "Simplify {solutions} and {{x}}" in prompt
    assert prompt.endswith("Put your final answer within \\boxed{}.")  # Qwen's words, no placeholder to copy


@pytest.mark.parametrize(("knobs", "needle"), [
    (dict(population=2, aggregation_size=3), "aggregation_size"),
    (dict(aggregation_size=0), "aggregation_size"),
    (dict(rounds=-1), "rounds"),
    (dict(temperature=0.0), "temperature"),
    (dict(aggregation_prompt="no placeholder"), "{solutions}"),
])
def test_bad_knobs(knobs, needle):
    with pytest.raises(ValueError, match=needle):
        RecursiveSelfAggregation(**knobs)
