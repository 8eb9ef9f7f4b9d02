"""Exact numbers and canonical LaTeX: a table, then properties (idempotence, round trips, never raising)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinkscale.answers.extract import normalize_answer
from thinkscale.answers.normalize import canonical_latex, format_number, parse_number

# (text, units allowed, value or None, why)
NUMBERS = [
    ("1,000", True, Fraction(1000), "thousands commas"),
    ("10,\\!080", False, Fraction(10080), "MATH thousands with \\!"),
    ("11,\\! 111,\\! 111,\\! 100", False, Fraction(11111111100), "several groups, spaces"),
    ("1{,}000", False, Fraction(1000), "LaTeX {,} separator"),
    ("\\$32,\\!348", False, Fraction(32348), "escaped dollar"),
    ("$-5", True, Fraction(-5), "sign after the currency"),
    ("-$5", True, Fraction(-5), "sign before the currency"),
    ("\u22125", True, Fraction(-5), "unicode minus"),
    (".35625", False, Fraction(57, 160), "leading-dot decimal, exact"),
    ("-\\dfrac12", False, Fraction(-1, 2), "brace-less \\dfrac"),
    ("\\frac{-3}{4}", False, Fraction(-3, 4), "sign inside the numerator"),
    ("\\frac{270}7\\text{ degrees}", False, Fraction(270, 7), "\\frac{a}b with a unit"),
    ("864 \\mbox{ inches}^2", False, Fraction(864), "squared unit"),
    ("90^\\circ", False, Fraction(90), "degrees"),
    ("50\\%", False, Fraction(50), "percent keeps the number"),
    ("18 dollars", True, Fraction(18), "plain-word unit"),
    ("18 dollars", False, None, "plain words are not units in MATH mode"),
    ("\\text{5}", False, Fraction(5), "\\text{} wrapper"),
    ("$\\frac{1}{2}$", False, Fraction(1, 2), "math delimiters"),
    ("42.", True, Fraction(42), "trailing period"),
    ("2\\sqrt{3}", False, None, "a radical is not a plain number"),
    ("1,-2", False, None, "a list"),
    ("5x", True, None, "a letter glued on"),
    ("1e5", True, None, "no scientific notation"),
    ("10^{10^{10}}", False, None, "powers are never evaluated"),
    ("1/0", True, None, "division by zero is not a number"),
    ("\\frac{1}{0}", False, None, "nor in LaTeX"),
    ("", True, None, "empty"),
    ("9" * 300, True, None, "longer than MAX_NUMBER_CHARS"),
]


@pytest.mark.parametrize(("text", "units", "value", "why"), NUMBERS, ids=[n[3] for n in NUMBERS])
def test_parse_number(text, units, value, why):
    assert parse_number(text, units=units) == value, why


@pytest.mark.parametrize(("a", "b"), [("\\left( 3, \\dfrac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
                                      ("90^{\\circ}", "90^\\circ"), ("$x + 1$.", "x+1"),
                                      ("\\text{\\text{east}}", "east"), ("1,\\!000", "1,000")])
def test_canonical_latex_removes_spelling_only(a, b):
    assert canonical_latex(a) == canonical_latex(b)


LATEXISH = st.lists(st.sampled_from([*"0123456789-+.,$/%(){}[]^_ x.", "\\frac", "\\dfrac", "\\left", "\\right",
                                     "\\text{", "\\!", "\\,", "\\circ", "\\(", "\\)", "\\mbox{", "\\%", "\\$"]),
                    max_size=30).map("".join)


@settings(max_examples=300)
@given(st.one_of(st.text(), LATEXISH))
def test_canonical_latex_is_idempotent(text):
    once = canonical_latex(text)
    assert canonical_latex(once) == once


@settings(max_examples=300)
@given(st.one_of(st.text(), LATEXISH))
def test_normalize_answer_is_idempotent(text):
    once = normalize_answer(text)
    assert normalize_answer(once) == once


@settings(max_examples=300)
@given(st.one_of(st.text(), LATEXISH), st.booleans())
def test_parse_number_never_raises(text, units):
    value = parse_number(text, units=units)
    assert value is None or isinstance(value, Fraction)


@given(st.fractions(max_denominator=10**9).filter(lambda f: abs(f.numerator) < 10**30))
def test_parse_number_reads_every_rendering_of_a_fraction(x: Fraction):
    renderings = [format_number(x), f"${format_number(x)}$", f"\\frac{{{x.numerator}}}{{{x.denominator}}}"]
    if x.denominator == 1:
        renderings += [f"{x.numerator:,}", f"{x.numerator}.00", f"{x.numerator}\\%"]
    for r in renderings:
        assert parse_number(r) == x, r
