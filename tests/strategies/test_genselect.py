"""Generative selection on the scripted fake: the options shown (distinct answers, most voted first, the tail of one
chain each), the reply read in both modes, the vote as fallback, the verifier's account, and every budget."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies.helpers import PROBLEM, algo_trace, endless, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.genselect import GenerativeSelection
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Candidate, Role
from thinkscale.verifiers import genselect as gs


def cand(text: str, answer: str | None) -> Candidate:
    return Candidate(text=text, answer=answer)


# ------------------------------------------------------------------ the prompt and the reply


def test_options_are_distinct_answers_most_voted_first_ties_by_first_appearance():
    cands = [cand("a", "7"), cand("b", "5"), cand("c", None), cand("d", "5.0"), cand("e", "9"), cand("f", "7")]
    opts = gs.options(cands)
    assert [(o.answer, o.members) for o in opts] == [("7", (0, 5)), ("5", (1, 3)), ("9", (4,))]
    assert [o.shown for o in opts] == [0, 1, 4]
    assert [o.answer for o in gs.options(cands, pool=[4, 3, 1])] == ["5", "9"]


def test_rationale_keeps_the_tail_from_a_line_start():
    text = "first line that is long\n" + "x" * 30 + "\nthe answer is 42"
    assert gs.rationale("short", 100) == "short"
    tail = gs.rationale(text, 50)
    assert tail.startswith("... ") and tail.endswith("the answer is 42") and len(tail) <= 54
    assert "first line" not in tail


def test_messages_show_the_problem_every_option_once_and_prefill_in_direct_mode():
    cands = [cand("so 6*7 = 42 \\boxed{42}", "42"), cand("6+7 = 13 \\boxed{13}", "13"), cand("redo \\boxed{42}", "42")]
    opts = gs.options(cands)
    direct = gs.messages(PROBLEM, cands, opts, gs.Mode.DIRECT, 600)
    assert direct[-1].role == "assistant" and direct[-1].content == gs.PREFILL
    user = direct[-2].content
    assert "What is 6 times 7?" in user and "Candidate A (final answer: 42)" in user
    assert "Candidate B (final answer: 13)" in user and "Candidate C" not in user
    assert "so 6*7 = 42" in user and "redo" not in user  # the first chain of an answer is the one shown
    reason = gs.messages(PROBLEM, cands, opts, gs.Mode.REASON, 600)
    assert reason[-1].role == "user" and "The correct candidate is X" in reason[-1].content
    with pytest.raises(ValueError, match="2 to 26 distinct answers"):
        gs.messages(PROBLEM, cands, opts[:1], gs.Mode.DIRECT, 600)


ABC = ["42", "13", "7"]


@pytest.mark.parametrize(("reply", "mode", "n", "want"), [
    (" B", gs.Mode.DIRECT, 3, 1),
    (" Candidate C.", gs.Mode.DIRECT, 3, 2),
    (": (A)", gs.Mode.DIRECT, 3, 0),
    (" D", gs.Mode.DIRECT, 3, None),          # not one of the 3 letters
    (" clearly wrong", gs.Mode.DIRECT, 3, None),
    ("Candidate A adds; candidate B multiplies. The correct candidate is B", gs.Mode.REASON, 2, 1),
    ("Candidate A is right; candidate B is not. The correct candidate is A", gs.Mode.REASON, 2, 0),
    ("The correct candidate is **B**", gs.Mode.REASON, 2, 1),
    ("candidate Z is nonsense, so candidate A", gs.Mode.REASON, 2, 0),  # Z is not one of the 2 letters
    ("the candidate is a mess", gs.Mode.REASON, 2, None),  # a lower-case article is no letter
    ("I cannot tell", gs.Mode.REASON, 2, None),
    (" 13.", gs.Mode.DIRECT, 3, 1),  # an option's answer instead of its letter
    ("it is 7, not 13", gs.Mode.REASON, 3, None),  # two options' answers: names none
    ("1,3", gs.Mode.DIRECT, 3, 1),
    (" 99", gs.Mode.DIRECT, 3, None),
    (" \\(\\boxed{C}\\).", gs.Mode.DIRECT, 3, 2),  # what qwen2.5-coder-0.5b writes under the boxed system prompt
    (" \\boxed{\\text{B}}", gs.Mode.DIRECT, 3, 1),
    ("A adds, so \\boxed{B}. Candidate A is wrong", gs.Mode.REASON, 3, 0),  # the last one named counts
    ("Candidate A is wrong, so \\boxed{B}", gs.Mode.REASON, 3, 1),
])
def test_parse_choice(reply, mode, n, want):
    assert gs.parse_choice(reply, ABC[:n], mode) == want


# ------------------------------------------------------------------ the strategy


def test_the_model_can_pick_a_minority_answer_and_is_charged_as_verifier():
    """3 chains 13, 13, 42: the selection reply " B" names 42 (option B, shown as chain 2), which wins against
    the vote; the reply's tokens land on the verifier's account, the chains' on the generator's."""
    script = [words(4, "13"), words(5, "13"), words(6, "42"), "B"]
    b = ScriptedBackend(script)
    result = execute(GenerativeSelection(n_samples=3, max_tokens=20), PROBLEM, b, Budget(), rng=random.Random(0))
    assert result.answer == "42" and result.chosen_index == 2 and result.stop_reason == "done"
    judge = b.requests[-1]
    assert judge.continue_final and judge.temperature == 0 and judge.max_tokens == 8
    assert result.ledger.by_role()[Role.VERIFIER].completion_tokens == 1
    assert result.ledger.by_role()[Role.GENERATOR].completion_tokens == 15
    (ev,) = [e for e in algo_trace(result) if e["event"] == "genselect"]
    assert ev["answers"] == ["13", "42"] and ev["shown"] == [0, 2] and ev["choice"] == 1 and ev["winner"] == "42"


def test_agreeing_chains_need_no_selection_call():
    b = ScriptedBackend([words(3, "42"), words(4, "42")])
    result = execute(GenerativeSelection(n_samples=2, max_tokens=20), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.calls == 1 and result.answer == "42"


def test_a_reply_naming_no_option_falls_back_to_the_vote():
    b = ScriptedBackend([words(4, "13"), words(5, "13"), words(6, "42"), "maybe"])
    result = execute(GenerativeSelection(n_samples=3, max_tokens=20), PROBLEM, b, Budget(), rng=random.Random(0))
    assert result.answer == "13" and b.calls == 2
    assert result.stop_detail == "the selection reply named no candidate; the vote decided"
    events = [e["event"] for e in algo_trace(result)]
    assert events[-2:] == ["genselect", "vote"]


def test_reason_mode_reads_the_last_named_candidate():
    reply = "Candidate A forgot to multiply. Candidate B is right. The correct candidate is B"
    b = ScriptedBackend([words(4, "13"), words(5, "13"), words(6, "42"), reply])
    result = execute(GenerativeSelection(n_samples=3, max_tokens=20, mode="reason"), PROBLEM, b, Budget(),
                     rng=random.Random(0))
    assert result.answer == "42" and not b.requests[-1].continue_final and b.requests[-1].max_tokens == 512


def test_the_budget_keeps_room_for_the_selection_reply():
    """max_tokens 20, reply 8: 50 tokens pay for 2 chains and the reply, not 3 chains and the reply."""
    b = ScriptedBackend([words(20, "1"), words(20, "2"), "A"])
    result = execute(GenerativeSelection(n_samples=3, max_tokens=20), PROBLEM, b, Budget(max_completion_tokens=50),
                     rng=random.Random(0))
    assert b.requests[0].n == 2 and result.stop_reason == "budget" and result.answer == "1"


@pytest.mark.parametrize(("knob", "value", "why"), [
    ("mode", "vote", "mode must be one of direct, reason"),
    ("temperature", "0", "temperature must be a finite number > 0"),
    ("judge_max_tokens", "-1", "judge_max_tokens"),
    ("rationale_chars", "0", "rationale_chars"),
])
def test_bad_knobs_are_refused(knob, value, why):
    with pytest.raises(ValueError, match=why):
        build_strategy(f"genselect:{knob}={value}")


budgets = st.builds(Budget, max_completion_tokens=st.one_of(st.none(), st.integers(1, 300)),
                    max_calls=st.one_of(st.none(), st.integers(1, 4)))


@settings(max_examples=60, deadline=None)
@given(budget=budgets, seed=st.integers(0, 2**16), mode=st.sampled_from(["direct", "reason"]))
def test_spend_never_exceeds_the_budget_and_a_seed_replays(budget, seed, mode):
    spec = f"genselect:n_samples=4,max_tokens=20,judge_max_tokens=10,mode={mode}"
    a = execute(build_strategy(spec), PROBLEM, endless(), budget, rng=random.Random(seed))
    b = execute(build_strategy(spec), PROBLEM, endless(), budget, rng=random.Random(seed))
    total = a.ledger.total()
    if budget.max_completion_tokens is not None:
        assert total.completion_tokens <= budget.max_completion_tokens
    if budget.max_calls is not None:
        assert total.calls <= budget.max_calls
    assert (a.answer, a.chosen_index, a.stop_reason) == (b.answer, b.chosen_index, b.stop_reason)
    json.dumps(list(algo_trace(a)))
