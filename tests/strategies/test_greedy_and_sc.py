"""Greedy and self-consistency on the scripted fake: the chosen answer, what was asked of the backend, what the
ledger says it cost, and that a budget is never overspent."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from tests.strategies.helpers import algo_trace
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy, get_strategy
from thinkscale.strategies.events import event_from_json
from thinkscale.strategies.greedy import Greedy
from thinkscale.strategies.run import execute
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.types import Budget, Problem, Usage

# Rendered by the fake as "<user> What is 6 times 7?": 6 prompt words.
PROBLEM = Problem.from_text("What is 6 times 7?")


def run_sc(texts: list[str], *, seed: int = 0, budget: Budget | None = None, **knobs):
    knobs.setdefault("n_samples", len(texts))
    backend = ScriptedBackend(texts)
    result = execute(SelfConsistency(**knobs), PROBLEM, backend, budget or Budget(), rng=random.Random(seed))
    return result, backend


# --- greedy ----------------------------------------------------------------------------------------------------


def test_greedy_sends_one_temperature_zero_request_and_returns_its_answer():
    backend = ScriptedBackend(["6 times 7 is \\boxed{42}"])
    result = execute(Greedy(max_tokens=64), PROBLEM, backend, Budget(), rng=random.Random(0))
    assert result.answer == "42"
    assert backend.calls == 1
    (req,) = backend.requests
    assert (req.n, req.temperature, req.max_tokens, req.messages) == (1, 0.0, 64, PROBLEM.messages)
    assert result.stop_reason == "done" and result.strategy == "greedy"


def test_greedy_ledger_is_the_backend_usage():
    """Prompt 6 words, completion "6 times 7 is \\boxed{42}" = 5 words, 1 call;
    FLOPs = 2 x 1e6 params x (6 + 5) = 22e6."""
    result = execute(Greedy(), PROBLEM, ScriptedBackend(["6 times 7 is \\boxed{42}"]), Budget(), rng=random.Random(0))
    assert result.ledger.total() == Usage(6, 0, 5, 1, 0.0, 22e6)


def test_greedy_caps_max_tokens_at_the_token_budget():
    """512 tokens wanted but only 10 allowed: the one request asks for at most 10, so it cannot overspend."""
    backend = ScriptedBackend([" ".join(["word"] * 50)])
    result = execute(Greedy(max_tokens=512), PROBLEM, backend, Budget(max_completion_tokens=10), rng=random.Random(0))
    assert backend.requests[0].max_tokens == 10
    assert result.ledger.total().completion_tokens == 10


def test_greedy_without_an_answer_says_none():
    result = execute(Greedy(), PROBLEM, ScriptedBackend(["I do not know."]), Budget(), rng=random.Random(0))
    assert result.answer is None


# --- self-consistency: voting ----------------------------------------------------------------------------------


def test_majority_vote_counts_equal_numbers_as_one_answer():
    """"1,000", "1000.0" and "1000" all normalise to "1000": 3 votes beat 2 for "7". The result reports the
    winning answer as the first sample that voted for it wrote it."""
    result, backend = run_sc(["So \\boxed{1,000}", "#### 1000.0", "The answer is 7.", "\\boxed{1000}", "Answer: 7"])
    assert result.answer == "1,000"
    assert backend.calls == 1 and backend.requests[0].n == 5
    assert result.stop_reason == "done"
    assert result.chosen is result.candidates[0]  # the first sample that voted for the winner
    vote = next(e for e in algo_trace(result) if e["event"] == "vote")
    assert vote["counts"] == {"1000": 3, "7": 2}
    assert vote["tie_broken_by_rng"] is False


def test_samples_without_an_answer_do_not_vote():
    """Two samples have no answer and one says 9: if "no answer" voted it would win 2 to 1."""
    result, _ = run_sc(["I am not sure.", "Hmm, hard to say.", "\\boxed{9}"])
    assert result.answer == "9"
    assert next(e for e in algo_trace(result) if e["event"] == "vote")["counts"] == {"9": 1}


def test_no_answers_at_all_gives_none():
    result, _ = run_sc(["No idea.", "Cannot tell."])
    assert result.answer is None and result.chosen is None
    assert len(result.candidates) == 2


TIE = ["\\boxed{3}", "\\boxed{5}"]


def test_tie_is_broken_the_same_way_under_the_same_seed():
    for seed in range(5):
        assert run_sc(TIE, seed=seed)[0].answer == run_sc(TIE, seed=seed)[0].answer


def test_tie_break_uses_the_rng():
    """If the tie-break ignored the rng, every seed would pick the same one of "3" and "5"."""
    winners = {seed: run_sc(TIE, seed=seed)[0].answer for seed in range(20)}
    assert set(winners.values()) == {"3", "5"}
    vote = next(e for e in algo_trace(run_sc(TIE)[0]) if e["event"] == "vote")
    assert vote["tie_broken_by_rng"] is True


def test_tie_break_does_not_depend_on_sample_order():
    """The tied answers are sorted before the rng picks, so the seed alone decides."""
    for seed in range(10):
        assert run_sc(TIE, seed=seed)[0].answer == run_sc(TIE[::-1], seed=seed)[0].answer


def test_same_rng_seed_sends_the_same_sampling_seed():
    a = run_sc(TIE, seed=11)[1].requests[0]
    b = run_sc(TIE, seed=11)[1].requests[0]
    c = run_sc(TIE, seed=12)[1].requests[0]
    assert a.seed == b.seed != c.seed


# --- self-consistency: cost and budget -------------------------------------------------------------------------


def test_ledger_total_is_the_sum_of_the_scripted_usage():
    """Prompt 6 words, computed once for the batch; samples 5 + 3 + 3 = 11 words; one call;
    FLOPs = 2 x 1e6 x (6 + 11) = 34e6."""
    result, _ = run_sc(["6 times 7 is \\boxed{42}", "I think \\boxed{42}", "It is 41"])
    assert result.ledger.total() == Usage(6, 0, 11, 1, 0.0, 34e6)
    assert sum(c.completion_tokens for c in result.candidates) == 11


def test_token_budget_samples_only_what_fits_in_the_worst_case():
    """25 tokens, 10 per chain at most: floor(25 / 10) = 2 chains of the 8 asked for. Every scripted text is 12 words,
    so each chain uses its full 10 and the spend is 20 <= 25."""
    texts = [" ".join(["step"] * 11) + " \\boxed{4}"] * 8
    result, backend = run_sc(texts, n_samples=8, max_tokens=10, budget=Budget(max_completion_tokens=25))
    assert backend.requests[0].n == 2
    assert backend.remaining == 6
    assert result.stop_reason == "budget"
    assert result.ledger.total().completion_tokens == 20
    assert all(c.finish_reason == "length" for c in result.candidates)


def test_exactly_enough_budget_samples_everything():
    """8 chains x 10 tokens = 80 = the budget: all 8 sampled and the run is "done"."""
    texts = [" ".join(["step"] * 12)] * 8
    result, backend = run_sc(texts, n_samples=8, max_tokens=10, budget=Budget(max_completion_tokens=80))
    assert backend.requests[0].n == 8
    assert result.stop_reason == "done"
    assert result.ledger.total().completion_tokens == 80


@pytest.mark.parametrize("max_completion_tokens", [1, 7, 10, 33, 64, 100])
def test_spend_never_exceeds_the_token_budget(max_completion_tokens):
    texts = [" ".join(["w"] * 40)] * 8
    result, _ = run_sc(texts, n_samples=8, max_tokens=16, budget=Budget(max_completion_tokens=max_completion_tokens))
    assert result.ledger.total().completion_tokens <= max_completion_tokens


def test_budget_too_small_for_one_chain_makes_no_backend_call():
    """9 tokens cannot fit one chain of up to 10: no call at all (the empty script would raise if asked)."""
    backend = ScriptedBackend([])
    result = execute(SelfConsistency(n_samples=4, max_tokens=10),
        PROBLEM, backend, Budget(max_completion_tokens=9), rng=random.Random(0))
    assert backend.calls == 0
    assert result.answer is None and result.candidates == ()
    assert result.stop_reason == "budget"
    assert result.ledger.total().calls == 0


def test_trace_is_json_and_holds_the_vote_counts():
    result, _ = run_sc(["\\boxed{2}", "\\boxed{2}", "\\boxed{3}"])
    trace = json.loads(json.dumps(algo_trace(result)))
    vote = next(e for e in trace if e["event"] == "vote")
    assert vote["counts"] == {"2": 2, "3": 1}
    assert vote["winner"] == "2"
    generate = next(e for e in result.trace_json() if e["event"] == "generate")
    assert generate["requests"][0]["n"] == 3 and generate["usage"]["completion_tokens"] == 3
    assert event_from_json(json.loads(json.dumps(generate))) == result.trace[0]  # the JSON form reads back


# --- knobs and registry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("knobs", "needle"), [
    (dict(n_samples=0), "n_samples"),
    (dict(n_samples=-3), "n_samples"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature"),
    (dict(max_tokens=0), "max_tokens"),
])
def test_self_consistency_rejects_bad_knobs(knobs, needle):
    with pytest.raises(ValueError, match=needle):
        SelfConsistency(**knobs)


def test_greedy_rejects_zero_max_tokens():
    with pytest.raises(ValueError, match="max_tokens"):
        Greedy(max_tokens=0)


def test_unknown_strategy_lists_the_known_names():
    with pytest.raises(ValueError) as info:
        get_strategy("nope")
    message = str(info.value)
    assert "'nope'" in message and "greedy" in message and "self-consistency" in message


def test_get_strategy_finds_registered_strategies():
    assert get_strategy("greedy").factory is Greedy
    assert get_strategy("self-consistency").factory is SelfConsistency


# --- a prefilled reply (a model trained to open its turn with <think>) --------------------------------------------


@pytest.mark.parametrize("strategy", [Greedy(prefill="<think>\n"), SelfConsistency(n_samples=2, prefill="<think>\n")])
def test_a_prefill_opens_the_reply_and_the_model_continues_it(strategy) -> None:
    """The request is the problem plus an assistant turn holding exactly the prefill, continued (continue_final);
    the answer is read from what the model wrote after it."""
    backend = ScriptedBackend(["6 x 7 = 42\n</think>\n\\boxed{42}"] * 2)
    result = execute(strategy, PROBLEM, backend, Budget(), rng=random.Random(0))
    (req,) = backend.requests
    assert req.continue_final
    assert req.messages == (*PROBLEM.messages, req.messages[-1])
    assert (req.messages[-1].role, req.messages[-1].content) == ("assistant", "<think>\n")
    assert result.answer == "42"
    assert all(c.text == "6 x 7 = 42\n</think>\n\\boxed{42}" for c in result.candidates)


@pytest.mark.parametrize("strategy", [Greedy(), SelfConsistency(n_samples=2)])
def test_without_a_prefill_the_request_is_the_problem_alone(strategy) -> None:
    backend = ScriptedBackend(["\\boxed{42}"] * 2)
    execute(strategy, PROBLEM, backend, Budget(), rng=random.Random(0))
    (req,) = backend.requests
    assert not req.continue_final and req.messages == PROBLEM.messages


@pytest.mark.parametrize("strategy", [Greedy(prefill="<think>\n"), SelfConsistency(n_samples=2, prefill="<think>")])
def test_a_prefill_on_a_backend_that_cannot_continue_a_turn_is_refused_before_any_call(strategy) -> None:
    class NoContinue(ScriptedBackend):
        capabilities = dataclasses.replace(ScriptedBackend.capabilities, continue_final=False)

    backend = NoContinue(["\\boxed{42}"] * 2)
    with pytest.raises(NotImplementedError, match="continue_final"):
        execute(strategy, PROBLEM, backend, Budget(), rng=random.Random(0))
    assert backend.calls == 0


def test_a_prefill_in_a_spec_decodes_its_newline() -> None:
    assert build_strategy("self-consistency:prefill=<think>\\n").prefill == "<think>\n"
