"""Final-answer extraction and normalisation: the per-task table in cases/extract.json and hypothesis properties,
then the generic extractor (``extract_answer``) and ``normalize_answer``: tables of (input, expected, why), one test
each, and their properties."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.answers.data import load_cases
from thinkscale.answers.extract import (
    extract_answer,
    extract_choice,
    extract_expression,
    extract_for_task,
    normalize_answer,
)
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


# --- extract_answer and normalize_answer ------------------------------------------------------------------------

# (text, expected answer, why)
EXTRACT_CASES = [
    (r"so the result is \boxed{\frac{1}{2}}", r"\frac{1}{2}", "nested braces inside boxed are kept whole"),
    (r"first \boxed{1}, on reflection \boxed{2}", "2", "the last boxed wins"),
    (r"\boxed{7} (I checked it 3 times)", "7", "boxed beats a later number"),
    (r"\fbox{12}", "12", "fbox counts as boxed"),
    (r"\boxed{12 and the answer is 7", "7", "unclosed boxed falls back to 'the answer is'"),
    (r"\boxed{12 then 5", "5", "unclosed boxed falls back to the last number"),
    (r"\boxed{} so 5", "5", "empty boxed falls back"),
    ("Natalia sold 48 clips.\n#### 72", "72", "GSM8K #### line"),
    ("#### 1\nwait, no\n#### 72", "72", "the last #### line"),
    ("The answer is 5\n#### 6", "6", "#### beats 'the answer is'"),
    ("The answer is 42.", "42", "trailing period is not part of the number"),
    ("The final answer is: 17 apples", "17", "'final answer is:' then the first number after it"),
    ("The answer is 12. Check: 3 * 4 = 12, plus 2", "12", "'the answer is' beats the last number"),
    ("The answer is blue.", "blue", "a non-numeric answer after 'the answer is'"),
    ("so she earns $675 more. Therefore, the final answer is:", "$675",
     "'the answer is:' with nothing after it says no answer: the last number"),
    ("It is 12 and 5. The final answer is: **", "5", "only punctuation after 'the answer is' says no answer either"),
    ("I had 3 apples, got 5 more, so 8", "8", "last number"),
    ("It costs $1,234 in total", "$1,234", "dollar sign and thousands commas stay with the number"),
    ("It costs $1,234.50 in total", "$1,234.50", "decimals too"),
    ("The temperature fell to -12 degrees", "-12", "negative number"),
    ("x = -3.5", "-3.5", "negative decimal"),
    ("Half of it: 3/6", "3/6", "a fraction is one number"),
    ("no numbers here", None, "no answer"),
    ("", None, "empty text"),
    ("#### ", None, "an empty #### line is no answer"),
]


@pytest.mark.parametrize(("text", "expected", "why"), EXTRACT_CASES, ids=[c[2] for c in EXTRACT_CASES])
def test_extract_answer(text, expected, why):
    assert extract_answer(text) == expected, why


# (raw answer, normalised, why)
NORMALIZE_CASES = [
    ("1000", "1000", "integers stay"),
    ("1,000", "1000", "thousands commas go"),
    ("1000.0", "1000", "a whole decimal is an integer"),
    ("$1,000", "1000", "currency sign goes"),
    ("-$5", "-5", "negative amount"),
    ("3/6", "1/2", "fractions are reduced"),
    ("0.5", "1/2", "decimals become exact fractions"),
    ("-0.25", "-1/4", "negative decimal"),
    ("42.", "42", "trailing period"),
    ("  42 ", "42", "surrounding spaces"),
    ("50%", "50", "percent sign"),
    (r"\text{blue}", "blue", r"\text{} wrapper"),
    ("Blue.", "Blue", "text keeps its case, loses the trailing period"),
    (r"\frac{1}{2}", r"\frac{1}{2}", "LaTeX is not evaluated"),
    ("1/0", "1/0", "division by zero is text, not an error"),
    ("", None, "empty is no answer"),
    ("$", None, "only a currency sign is no answer"),
    (None, None, "None stays None"),
    ("$x$.", "x", "stripping repeats until nothing changes (idempotence)"),
    (r"\text{\text{x}}", "x", "nested \\text{} (idempotence)"),
    ("1e5000", "1e5000", "a 5001-digit number would overflow str(int): kept as text"),
    ("9" * 5000, "9" * 5000, "over Python's 4300-digit str(int) limit: kept as text"),
]


@pytest.mark.parametrize(("raw", "expected", "why"), NORMALIZE_CASES, ids=[c[2] for c in NORMALIZE_CASES])
def test_normalize_answer(raw, expected, why):
    assert normalize_answer(raw) == expected, why


def test_equal_numbers_written_differently_normalise_the_same():
    assert len({normalize_answer(a) for a in ["1,000", "1000.0", "$1000", "1000", "1,000.00"]}) == 1


@pytest.mark.timeout(5)
def test_normalize_is_fast_on_a_huge_exponent():
    """Fraction("1e999999999") would build a billion-digit integer; a model can write that in a box."""
    assert normalize_answer(extract_answer(r"\boxed{1e999999999}")) == "1e999999999"


# Texts built from the pieces the generic extractor looks for, so its interesting branches are hit often.
GENERIC_ANSWERISH = st.lists(st.sampled_from([*"0123456789-.,$/%eE {}#:\n", "\\boxed{", "\\fbox{", "\\text{",
                                              "answer is ", "The answer: ", "####"]), max_size=30).map("".join)
NUMBERISH = st.lists(st.sampled_from([*"0123456789-+.,$/%eE_ {}", "\\text{"]), max_size=20).map("".join)


@settings(max_examples=300)
@given(st.one_of(st.text(), GENERIC_ANSWERISH))
def test_extract_never_raises_and_gives_none_or_a_non_empty_answer(text):
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, str) and answer.strip() != "")


@settings(max_examples=300)
@given(st.one_of(st.text(), NUMBERISH, GENERIC_ANSWERISH))
def test_normalize_is_idempotent(raw):
    once = normalize_answer(raw)
    assert normalize_answer(once) == once


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_extract_recovers_a_rendered_integer(x):
    for rendered in (f"Work... so \\boxed{{{x}}}", f"Work...\n#### {x}", f"The answer is {x}.", f"= {x}"):
        assert extract_answer(rendered) == str(x), rendered
        assert normalize_answer(extract_answer(rendered)) == str(x)


@given(st.integers(min_value=0, max_value=10**12))
def test_thousands_separators_do_not_change_the_vote(x):
    assert normalize_answer(f"{x:,}") == normalize_answer(f"${x}") == str(x)
