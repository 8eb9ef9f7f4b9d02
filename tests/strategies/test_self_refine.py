"""Self-refine on the scripted fake: the draft-critique-revise loop, its stopping rules, the conversation it extends
(so the prefix cache is reused), and its budget."""

from __future__ import annotations

import random

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.run import execute
from thinkscale.strategies.self_refine import SelfRefine, judge_verdict
from thinkscale.types import Budget


def run(script: list[str], budget: Budget | None = None, **knobs):
    b = ScriptedBackend(script)
    return execute(SelfRefine(**knobs), PROBLEM, b, budget or Budget(), rng=random.Random(0)), b


def test_stops_as_soon_as_the_critique_judges_the_draft_correct():
    """Draft, critique "correct": 2 calls, although 3 rounds were allowed (the empty rest of the script would raise
    ScriptExhausted on a third call)."""
    result, b = run(["draft \\boxed{42}", "all good. VERDICT: CORRECT"], max_rounds=3)
    assert b.calls == 2
    assert result.answer == "42" and result.stop_reason == "done"
    assert [e["event"] for e in algo_trace(result)] == ["draft", "critique", "stop"]
    assert algo_trace(result)[1]["verdict"] == "correct"
    assert result.candidates[0].scores == (1.0,)


def test_revises_until_max_rounds_when_never_judged_correct():
    """max_rounds 2: draft, (critique, revise) x 2 = 5 calls; the answer is the last revision's."""
    script = ["d0 \\boxed{40}", "no. VERDICT: INCORRECT", "d1 \\boxed{41}", "still no. VERDICT: INCORRECT",
              "d2 \\boxed{42}"]
    result, b = run(script, max_rounds=2)
    assert b.calls == 5 and b.remaining == 0
    assert result.answer == "42" and result.stop_reason == "done"
    assert [c.answer for c in result.candidates] == ["40", "41", "42"]
    assert [c.parent for c in result.candidates] == [None, 0, 1]
    assert [c.scores for c in result.candidates] == [(0.0,), (0.0,), ()]  # the last draft was never critiqued


def test_a_critique_without_a_verdict_leads_to_a_revision():
    result, b = run(["d0 \\boxed{40}", "hmm, not sure", "d1 \\boxed{41}", "fine. verdict: correct"], max_rounds=3)
    assert b.calls == 4 and result.answer == "41"
    assert [e.get("verdict") for e in algo_trace(result) if e["event"] == "critique"] == ["none", "correct"]


def test_every_call_extends_the_previous_conversation():
    """Each request's messages are the previous request's plus its reply and the next user turn, so the prompt
    the fake (and llama.cpp) computes is only the new turns: the cached-prefix count grows with the conversation."""
    script = ["d0 \\boxed{40}", "VERDICT: INCORRECT", "d1 \\boxed{41}", "VERDICT: CORRECT"]
    result, b = run(script, max_rounds=3)
    reqs = b.requests
    for prev, nxt, reply in zip(reqs, reqs[1:], script, strict=False):
        assert nxt.messages[:len(prev.messages)] == prev.messages
        assert nxt.messages[len(prev.messages)].role == "assistant"
        assert nxt.messages[len(prev.messages)].content == reply
        assert nxt.messages[-1].role == "user"
    assert "VERDICT: CORRECT" in reqs[1].messages[-1].content  # the critique turn names the markers
    usages = [e["usage"] for e in algo_trace(result) if "usage" in e]
    # from the second call on, everything up to the previous prompt is cached (the fake's word-prefix cache)
    for prev_req, u in zip(reqs, usages[1:], strict=False):
        prev_words = sum(len(m.content.split()) + 1 for m in prev_req.messages)
        assert u["cached_prompt_tokens"] >= prev_words - 1


def test_stop_at_repeat_ends_the_loop_at_the_first_verbatim_copy():
    """A revision identical to the draft before it is a fixed point: with stop_at_repeat the run stops there (5
    calls instead of 7) with its answer; off (the default) the loop goes on to max_rounds. The first revision (d1
    after d0) differs from its draft: no repeat."""
    script = ["d0 \\boxed{40}", "VERDICT: INCORRECT", "d1 \\boxed{41}", "VERDICT: INCORRECT", "d1 \\boxed{41}",
              "VERDICT: INCORRECT", "d1 \\boxed{41}"]
    result, b = run(script, max_rounds=3, stop_at_repeat=True)
    assert b.calls == 5 and result.answer == "41" and result.stop_reason == "done"
    stop = [e for e in algo_trace(result) if e["event"] == "stop"]
    assert [(e["reason"], e["detail"]) for e in stop] == [
        ("fixed_point", "the revision of round 2 repeats the draft before it word for word")]
    result, b = run(script, max_rounds=3)
    assert b.calls == 7 and result.answer == "41" and not [e for e in algo_trace(result) if e["event"] == "stop"]


def test_a_round_starts_only_if_critique_and_revision_both_fit():
    """Draft 10 tokens max; a round needs 4 + 10 = 14. Budget 30: draft (10 used) + one round (24) fits,
    a second round would need 38 > 30: stop with "budget" after 3 calls."""
    script = [words(12, "40"), "no VERDICT: INCORRECT", words(12, "41")]
    result, b = run(script, Budget(max_completion_tokens=30), max_rounds=3, max_tokens=10, critique_max_tokens=4)
    assert b.calls == 3
    assert result.stop_reason == "budget"
    assert result.ledger.total().completion_tokens <= 30
    # both drafts were cut at 10 tokens, before their \boxed answer: no answer at all
    assert result.answer is None


def test_budget_too_small_for_the_draft_makes_no_call():
    result, b = run([], Budget(max_completion_tokens=5), max_tokens=10)
    assert b.calls == 0 and result.stop_reason == "budget" and result.answer is None


def test_a_revision_without_an_answer_keeps_the_previous_answer():
    result, _ = run(["d0 \\boxed{40}", "VERDICT: INCORRECT", "I give up"], max_rounds=1)
    assert result.answer == "40" and result.chosen is result.candidates[0]


@pytest.mark.parametrize(("text", "verdict"), [
    ("VERDICT: CORRECT", True),
    ("verdict: incorrect", False),
    ("VERDICT: INCORRECT ... on reflection VERDICT: CORRECT", True),
    ("VERDICT: CORRECT but wait, VERDICT: INCORRECT", False),
    ("no verdict here", None),
])
def test_judge_verdict_reads_the_last_marker(text, verdict):
    assert judge_verdict(text, "VERDICT: CORRECT", "VERDICT: INCORRECT") is verdict


def test_a_marker_inside_the_other_does_not_count():
    """With markers "correct" / "incorrect", the "correct" inside "incorrect" must not read as correct."""
    assert judge_verdict("this is incorrect", "correct", "incorrect") is False
    assert judge_verdict("incorrect at first, now correct", "correct", "incorrect") is True


@pytest.mark.parametrize(("knobs", "needle"), [
    (dict(max_rounds=-1), "max_rounds"),
    (dict(critique_max_tokens=0), "critique_max_tokens"),
    (dict(critique_prompt="Is it right?"), "{correct}"),
    (dict(verdict_correct="ok", verdict_incorrect="OK"), "same"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(stop_at_repeat="yes"), "stop_at_repeat must be true or false, got 'yes'"),
])
def test_bad_knobs(knobs, needle):
    with pytest.raises(ValueError, match=needle):
        SelfRefine(**knobs)
