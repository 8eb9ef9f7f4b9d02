"""Game of 24: the checker on hand-made expressions (cases/game24.json), every dataset row solvable, and the
brute-force solver's expressions accepted."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.answers.data import load_cases, load_rows
from thinkscale.answers import Task, Verdict, check, grade
from thinkscale.answers.game24 import check_24, parse_numbers, solve_24

CASES = load_cases("game24")


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_game24_table(case):
    start = time.process_time()  # in-process: CPU time, which a busy machine does not inflate
    assert check_24(case["expression"], case["numbers"]) is case["valid"], case["why"]
    assert time.process_time() - start < 0.1
    verdict = check(Task.GAME24, case["expression"], " ".join(map(str, case["numbers"])))
    assert verdict is (Verdict.EQUIVALENT if case["valid"] else Verdict.NOT_EQUIVALENT)


def test_every_dataset_row_is_solvable_and_the_solution_is_accepted():
    rows = load_rows("game24")
    assert len(rows) == 1362
    for r in rows:
        expression = solve_24(r["meta"]["numbers"])
        assert expression is not None, r["id"]
        assert check(Task.GAME24, expression, r["problem"]) is Verdict.EQUIVALENT, (r["id"], expression)


def test_a_tree_of_thoughts_style_response_is_graded():
    response = "4 + 8 = 12 (left: 6 12)\n6 * ... \nAnswer: (4 + 8) * (6 - 4) = 24"
    assert grade(Task.GAME24, response, "4 4 6 8") is Verdict.EQUIVALENT
    assert grade(Task.GAME24, response, "4 5 6 8") is Verdict.NOT_EQUIVALENT


@given(st.lists(st.integers(1, 13), min_size=4, max_size=4))
def test_solver_and_checker_agree(numbers):
    expression = solve_24(numbers)
    if expression is not None:
        assert check_24(expression, numbers)
        assert not check_24(expression, [n + 100 for n in numbers])


EXPRESSIONISH = st.lists(st.sampled_from([*"0123456789+-*/() .=_x", "**", "\\times", "÷", "1e9", "lambda", "[", "]"]),
                         max_size=40).map("".join)


@settings(max_examples=300)
@given(st.one_of(st.text(), EXPRESSIONISH))
def test_checker_never_raises(text):
    assert check_24(text, [1, 3, 4, 10]) in (True, False)


@pytest.mark.parametrize(("expression", "valid"), [("1" * 1_000_000, False), ("(" * 500 + "1" + ")" * 500, False),
                                                   ("9**9**9**9**9", False), ("1/" * 5000 + "1", False),
                                                   ("(" * 90 + "1+3" + ")" * 90 + "*(10-4)", True)])
def test_checker_is_fast_on_hostile_expressions(expression, valid):
    start = time.process_time()
    assert check_24(expression, [1, 3, 4, 10]) is valid
    assert time.process_time() - start < 0.5


def test_parse_numbers():
    assert parse_numbers("1 3 4 10") == parse_numbers("1, 3, 4, 10") == parse_numbers([1, 3, 4, 10]) == (1, 3, 4, 10)
