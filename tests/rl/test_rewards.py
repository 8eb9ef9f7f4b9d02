"""The GRPO rewards are the eval harness's answer checkers: a completion earns `correct` exactly when `thinkscale eval`
would grade it right, whatever form TRL hands it in."""

from __future__ import annotations

import pytest

from thinkscale.answers.equivalence import grade
from thinkscale.answers.task import Verdict
from thinkscale.rl.rewards import ANSWER_MAX_CHARS, completion_text, correct, reward_functions, think_format

CASES = [  # (completion, reference, task)
    ("<think>3 + 4 = 7</think> The answer is \\boxed{7}.", "7", "numeric"),
    ("<think>3 + 4 = 8</think> \\boxed{8}", "7", "numeric"),
    ("So she pays $1,250.00 in all. \\boxed{1250}", "1250", "numeric"),
    ("The answer is \\boxed{\\frac{1}{2}}", "0.5", "math"),
    ("no final answer here", "7", "numeric"),
    ("\\boxed{(4 + 4) * (4 - 1)}", "4 4 4 1", "game24"),
    ("\\boxed{4 * 4 + 4 + 1}", "4 4 4 1", "game24"),
    ("\\boxed{025}", "25", "integer"),
]


@pytest.mark.parametrize(("text", "reference", "task"), CASES)
def test_correct_is_the_eval_verdict(text: str, reference: str, task: str) -> None:
    expected = float(grade(task, text, reference) is Verdict.EQUIVALENT)
    assert correct([text], [reference], [task]) == [expected]
    # TRL's conversational form: a list of messages
    assert correct([[{"role": "assistant", "content": text}]], [reference], [task]) == [expected]


def test_the_cases_hold_both_verdicts() -> None:
    got = correct([c[0] for c in CASES], [c[1] for c in CASES], [c[2] for c in CASES])
    assert got == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize(("text", "ok"), [
    ("<think>7 apples minus 2</think>\nSo \\boxed{5}.", True),
    ("  <think>\nshort\n</think>\\boxed{5}", True),
    ("<think></think>\\boxed{5}", False),                        # empty reasoning
    ("<think>reasoning</think> I am done.", False),             # no answer the task reads
    ("\\boxed{5}", False),                                        # no reasoning block
    ("<think>a</think><think>b</think>\\boxed{5}", False),       # two blocks
    ("<think>a \\boxed{5}", False),                               # never closed (a cut-off completion)
    ("Sure. <think>a</think>\\boxed{5}", False),                  # text before the block
    ("<think>a</think>\\boxed{5} </think>", False),               # stray tag after
    ("<think>a</think>" + " " * 300 + "The answer is \\boxed{5}.", True),  # only the stripped answer counts
])
def test_format_reward(text: str, ok: bool) -> None:
    assert think_format([text], ["numeric"]) == [float(ok)]


def test_format_reward_shrinks_with_the_working_after_the_block() -> None:
    after = "Step 1: 2 + 3 = 5. " * 20 + "\\boxed{5}"  # 389 characters of working outside the block
    plan, inside = "<think>plan: add</think>" + after, "<think>" + after + "</think>\\boxed{5}"
    assert think_format([plan, inside], ["numeric"] * 2) == [pytest.approx(ANSWER_MAX_CHARS / len(after)), 1.0]
    assert 0.5 < think_format([plan], ["numeric"])[0] < 0.52


def test_completion_text() -> None:
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    with pytest.raises(TypeError, match="completion"):
        completion_text(3)


def test_reward_names_are_checked() -> None:
    assert [f.__name__ for f in reward_functions(["correct", "format"])] == ["correct", "format"]
    with pytest.raises(ValueError, match="unknown reward 'speed'"):
        reward_functions(["correct", "speed"])
    with pytest.raises(ValueError, match="named twice"):
        reward_functions(["correct", "correct"])
    with pytest.raises(ValueError, match="at least one"):
        reward_functions([])
