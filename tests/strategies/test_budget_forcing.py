"""Budget forcing (s1) on the scripted fake: "Wait" replaces an early end of thinking, the answer is forced with
"Final answer:" at the maximum, thinking tokens never pass the maximum, and the budget reserves the answer."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.budget_forcing import BudgetForcing
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Role

THINK = dict(think_start="<think>\n", think_end="</think>")


def run(script: list[str], budget: Budget | None = None, **knobs):
    b = ScriptedBackend(script)
    return execute(BudgetForcing(**knobs), PROBLEM, b, budget or Budget(), rng=random.Random(0)), b


def test_below_the_minimum_the_end_of_thinking_is_replaced_by_wait():
    """min 6: the first call stops at </think> after 3 tokens, so "Wait" is appended and thinking continues; the
    second stops after 3 more (6 >= 6), so </think> is added and the answer is generated after it."""
    script = ["one two three</think> ignored", "four five six</think>", "\\boxed{42}"]
    result, b = run(script, min_thinking_tokens=6, max_thinking_tokens=50, **THINK)
    first, second, answer = b.requests
    assert first.continue_final and first.messages[-1].content == "<think>\n"
    assert first.stop == ("</think>",) and first.max_tokens == 50
    assert second.continue_final and second.messages[-1].content == "<think>\none two three\nWait"
    assert second.max_tokens == 47  # what is left of the 50
    assert answer.messages[-1].content.endswith("four five six</think>\n")  # after_think: "\n"
    assert "Final answer:" not in answer.messages[-1].content  # thinking ended on its own: nothing forced
    assert result.answer == "42" and result.stop_reason == "done"
    assert [e["event"] for e in result.trace_json()] == ["generate", "wait", "generate", "generate", "answer"]
    assert algo_trace(result)[0] == {"event": "wait", "thinking_tokens": 3, "waits": 1}


def test_at_the_maximum_the_answer_is_forced():
    """max 8: the model would think for 20 tokens; it is cut at 8 and "</think>" + "Final answer:" is appended."""
    script = [words(20), "42"]
    result, b = run(script, max_thinking_tokens=8, answer_max_tokens=5, **THINK)
    think, answer = b.requests
    assert think.max_tokens == 8
    assert answer.continue_final and answer.max_tokens == 5
    assert answer.messages[-1].content == "<think>\n" + words(8) + "</think>\nFinal answer:"
    assert result.answer == "42"  # read from "Final answer: 42", not from the thinking
    assert next(e for e in algo_trace(result) if e["event"] == "force_answer")["reason"] == "max_thinking_tokens"
    assert algo_trace(result)[-1]["thinking_tokens"] == 8
    assert result.stop_reason == "done"


def test_forced_answer_ignores_answers_written_while_thinking():
    result, _ = run(["maybe \\boxed{7} hmm " + words(10), "42"], max_thinking_tokens=6, **THINK)
    assert result.answer == "42"


def test_plain_chat_model_continues_its_own_turn_and_needs_no_delimiters():
    """No think_end: the model's end of turn ends thinking. min 5: the first reply (2 tokens) is continued with
    "Wait"; the second brings it to 5 tokens, and that reply is the answer (no separate answer call)."""
    script = ["about 41", "no, \\boxed{42}"]
    result, b = run(script, min_thinking_tokens=3)
    first, second = b.requests
    assert not first.continue_final and first.messages == PROBLEM.messages and first.stop == ()
    assert second.continue_final and second.messages[-1].content == "about 41\nWait"
    assert result.answer == "42" and b.calls == 2
    assert result.chosen is not None and result.chosen.text == "about 41\nWaitno, \\boxed{42}"


def test_waits_are_capped_by_max_waits():
    """A model that keeps stopping at once: 2 waits, then thinking ends although below the minimum."""
    result, b = run(["a", "b", "c", "\\boxed{1}"], min_thinking_tokens=100, max_thinking_tokens=200, max_waits=2,
                    **THINK)
    assert b.calls == 4  # 3 thinking calls (2 waits) + the answer
    assert [e["event"] for e in algo_trace(result)].count("wait") == 2
    assert any(e["event"] == "max_waits_reached" for e in algo_trace(result))


@pytest.mark.parametrize("max_completion_tokens", [6, 7, 9, 12, 20, 33, 64])
def test_thinking_and_answer_never_exceed_the_budget_or_the_maximum(max_completion_tokens):
    """answer_max_tokens 5 is always reserved: thinking gets at most budget - 5 tokens and at most 20."""
    script = [words(9) + "</think>", words(9) + "</think>", words(30), words(30), words(30)]
    result, b = run(script, Budget(max_completion_tokens=max_completion_tokens), min_thinking_tokens=15,
                    max_thinking_tokens=20, answer_max_tokens=5, **THINK)
    spent = result.ledger.total().completion_tokens
    assert spent <= max_completion_tokens
    assert algo_trace(result)[-1]["thinking_tokens"] <= 20
    if max_completion_tokens - 5 < 20:
        assert result.stop_reason == "budget"
        assert next(e for e in algo_trace(result) if e["event"] == "force_answer")["reason"] == "budget"


def test_budget_that_cannot_pay_for_the_answer_makes_no_call():
    result, b = run([], Budget(max_completion_tokens=5), answer_max_tokens=5)
    assert b.calls == 0 and result.stop_reason == "budget" and result.answer is None


def test_call_budget_reserves_the_answer_call():
    """max_calls 3: the first thinking call stops early and "Wait" follows; the second stops early too, but a third
    thinking call would leave no call for the answer, so no "Wait" is appended: thinking ends below the minimum and
    the answer is generated after </think> with the third call."""
    result, b = run(["a</think>", "b</think>", "\\boxed{5}"], Budget(max_calls=3), min_thinking_tokens=10, **THINK)
    assert b.calls == 3 and result.ledger.total().calls == 3 and b.remaining == 0
    assert b.requests[1].messages[-1].content == "<think>\na\nWait"
    assert b.requests[2].messages[-1].content == "<think>\na\nWaitb</think>\n"  # no dangling "Wait"
    assert result.answer == "5" and result.stop_reason == "budget"
    assert [e["event"] for e in algo_trace(result)].count("wait") == 1


def test_a_budget_that_cuts_thinking_forces_the_answer():
    """Budget 12, answer 5 reserved: thinking may use 7 tokens; the model would think for 30, so it is cut at 7 and
    the answer forced with "Final answer:" (reason: budget)."""
    result, b = run([words(30), "7"], Budget(max_completion_tokens=12), answer_max_tokens=5, **THINK)
    assert b.requests[0].max_tokens == 7
    assert b.requests[1].messages[-1].content.endswith("</think>\nFinal answer:")
    assert next(e for e in algo_trace(result) if e["event"] == "force_answer")["reason"] == "budget"
    assert result.stop_reason == "budget" and result.answer == "7"
    assert result.ledger.total().completion_tokens == 8


def test_generator_tokens_are_thinking_plus_answer():
    result, _ = run([words(4) + "</think>", "so \\boxed{3}"], **THINK)
    assert result.ledger.total(Role.GENERATOR).completion_tokens == 4 + 2
    assert algo_trace(result)[-1]["answer_tokens"] == 2


@pytest.mark.parametrize(("knobs", "needle"), [
    (dict(min_thinking_tokens=10, max_thinking_tokens=5), "min_thinking_tokens"),
    (dict(max_thinking_tokens=0), "max_thinking_tokens"),
    (dict(answer_max_tokens=0), "answer_max_tokens"),
    (dict(wait=" "), "wait"),
    (dict(max_waits=-1), "max_waits"),
])
def test_bad_knobs(knobs, needle):
    with pytest.raises(ValueError, match=needle):
        BudgetForcing(**knobs)


def test_a_backend_that_cannot_continue_a_turn_is_refused_before_any_call():
    class NoContinue(ScriptedBackend):
        capabilities = dataclasses.replace(ScriptedBackend.capabilities, continue_final=False)

    b = NoContinue(["a \\boxed{1}"])
    with pytest.raises(NotImplementedError, match="continue_final"):
        execute(BudgetForcing(), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.calls == 0


@pytest.mark.parametrize(("after", "forced"), [("\n", False), ("\n\n", False), ("", False), ("\n", True)])
def test_the_answer_follows_think_end_and_after_think(after: str, forced: bool) -> None:
    """The answer call's prompt ends on think_end + after_think (+ answer_prefix when forced), whether the thinking
    ended on whitespace or not: a thinking model that writes "</think>" and a newline as its own tokens must see them
    so (ending on ">" made the trained 0.5B end its turn with no answer)."""
    script = [words(20), "\\boxed{9}"] if forced else ["a b\n</think>", "\\boxed{9}"]
    result, b = run(script, max_thinking_tokens=8, after_think=after, **THINK)
    thinking = "<think>\n" + (words(8) if forced else "a b\n")
    assert b.requests[-1].messages[-1].content == thinking + "</think>" + after + ("Final answer:" if forced else "")
    assert result.answer == "9"
