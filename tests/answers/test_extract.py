"""Final-answer extraction per task: the table in cases/extract.json, then hypothesis properties."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.answers.data import load_cases
from thinkscale.answers.extract import extract_answer, extract_choice, extract_expression, extract_for_task
from thinkscale.answers.task import Task

CASES = load_cases("extract")


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_extract_table(case):
    assert extract_for_task(case["text"], case["task"]) == case["expected"], case["why"]


# Texts built from the pieces the extractors look for, so their branches are hit often.
PIECES = [*"0123456789-+.,$/%(){}[]=*ABCDx \n", "\\boxed{", "\\fbox{", "\\text{", "\\frac{", "\\(", "\\)", "answer is ",
          "The answer: ", "####", "option ", "= 24", "\\times"]
ANSWERISH = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), ANSWERISH), st.sampled_from(list(Task)))
def test_extraction_never_raises_and_gives_none_or_a_non_empty_answer(text, task):
    answer = extract_for_task(text, task)
    assert answer is None or (isinstance(answer, str) and answer.strip() != "")


@given(st.fractions(max_denominator=10**6))
def test_extract_recovers_a_rendered_fraction(x: Fraction):
    latex = str(x.numerator) if x.denominator == 1 else f"\\frac{{{x.numerator}}}{{{x.denominator}}}"
    for rendered in (f"Work... so \\boxed{{{latex}}}.", f"The answer is ${latex}$.", f"... \\fbox{{{latex}}}"):
        assert extract_answer(rendered) == latex, rendered


@given(st.sampled_from("ABCDE"), st.sampled_from(["The answer is ({})", "Answer: {}", "\\boxed{{{}}}",
                                                 "so...\n({})", "\\boxed{{\\text{{({})}}}}"]))
def test_extract_choice_recovers_the_letter(letter, template):
    assert extract_choice("Let me think. " + template.format(letter)) == letter


@given(st.lists(st.integers(1, 13), min_size=4, max_size=4))
def test_extract_expression_recovers_a_rendered_expression(numbers):
    expression = "({} + {}) * ({} - {})".format(*numbers)
    assert extract_expression(f"steps...\nAnswer: {expression} = 24") == expression


HOSTILE_TEXTS = {
    "1 MB of digits": "1" * 1_000_000,
    "1 MB unclosed box": "\\boxed{" + "x" * 1_000_000,
    "500 nested braces": "\\boxed{" + "{" * 500 + "1" + "}" * 501,
    "many answer-is": "the answer is " * 50_000,
    "many boxes": "\\boxed{1}" * 100_000,
}


@pytest.mark.parametrize("text", HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_extraction_is_fast_on_hostile_text(text):
    for task in Task:
        start = time.process_time()  # in-process: CPU time, which a busy machine does not inflate
        extract_for_task(text, task)
        assert time.process_time() - start < 1.0, task
