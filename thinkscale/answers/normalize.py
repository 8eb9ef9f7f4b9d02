"""Exact numbers and canonical LaTeX strings from answer text. Pure functions, stdlib only.

``parse_number`` reads the answers a grader should compare as numbers (``"1,000"``, ``"$18.50"``, ``"50%"``,
``"\\frac{3}{4}"``, ``"-\\dfrac12"``, ``"90^\\circ"``, ``"5.4 \\text{ cents}"``) into an exact ``Fraction``, and returns
None for anything else (``"2\\sqrt{3}"``, ``"(1,2)"``, ``"1e5"``, ``"10^{10}"``), so nothing is ever evaluated.
``canonical_latex`` removes only spelling differences that never change meaning (spacing, ``\\left``/``\\right``,
``\\dfrac``/``\\tfrac``, a trailing period); it is the cheap "same string" test before symbolic comparison.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Longer "numbers" are not answers; bounding them keeps Fraction arithmetic (and str(int)) cheap.
MAX_NUMBER_CHARS = 200

_SPACING = re.compile(r"\\[!,;: ]|\\quad|\\qquad|~")
_MATH_DELIMS = re.compile(r"^(?:\$+|\\\(|\\\[)\s*(.*?)\s*(?:\$+|\\\)|\\\])$", re.DOTALL)
_TEXT_WRAPPED = re.compile(r"^\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}$")
# A trailing unit: \text{ cm}, \mbox{ inches}^2, ^\circ, \%, %, a degree sign.
_LATEX_UNIT = re.compile(r"(?:\\(?:text|mbox|mathrm|textnormal)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?[23]\}?)?"
                         r"|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°|\\%|%)\s*$")
# A trailing plain-word unit after a space ("18 dollars", "3 km/h", "12 sq ft"); only for the numeric task, because
# in MATH answers "2 n" is an expression, not a unit ("5x" is never a number).
_WORD_UNIT = re.compile(r"\s+[A-Za-z][A-Za-z.'/]*(?:\^[23])?(?:\s+[A-Za-z][A-Za-z.'/]*(?:\^[23])?)*\s*$")
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|USD\s*|Rs\.?\s*)")
_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_PLAIN = re.compile(rf"^({_DECIMAL})(?:/({_DECIMAL}))?$")
_FRAC = re.compile(r"^\\[dt]?frac\s*(\{[^{}]*\}|\d)\s*(\{[^{}]*\}|\d)$")


def strip_math_delimiters(text: str) -> str:
    """``"$x$"`` / ``"\\(x\\)"`` / ``"\\[x\\]"`` -> ``"x"``, repeatedly; other text unchanged (stripped)."""
    s = text.strip()
    while True:
        m = _MATH_DELIMS.match(s)
        if not m or m.group(1) == s:
            return s
        s = m.group(1)


def parse_number(text: str, *, units: bool = True) -> Fraction | None:
    """The exact value of a written number, or None if ``text`` is not just a number (with decoration).

    Accepted decoration: math delimiters, a currency sign, a sign (``-``, ``+``, ``\\u2212``), thousands commas
    (also ``10,\\!080`` and ``1{,}000``), LaTeX spacing, ``\\text{...}`` wrapping, a percent sign (dropped: ``"50%"``
    is 50, because GSM8K-style references write percentages as plain numbers), degrees, a trailing period, and
    units written as ``\\text{ unit}``; with ``units=True`` also plain trailing words (``"18 dollars"``).
    """
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    s = strip_math_delimiters(text).rstrip(".").strip()
    m = _TEXT_WRAPPED.match(s)
    if m:
        s = m.group(1).strip()
    s = _SPACING.sub(" ", s).replace("{,}", ",").replace("\u2212", "-")
    for _ in range(3):  # "864 \mbox{ inches}^2", "5 \text{ cm}" + "%": a few trailing units at most
        s = _LATEX_UNIT.sub("", s).strip()
        if units:
            s = _WORD_UNIT.sub("", s).strip()
    sign = 1
    if s[:1] in ("+", "-"):
        sign, s = (-1 if s[0] == "-" else 1), s[1:].strip()
    s = _CURRENCY.sub("", s).strip()
    if s[:1] in ("+", "-") and sign == 1:  # "$-5" as well as "-$5"
        sign, s = (-1 if s[0] == "-" else 1), s[1:].strip()
    s = s.replace(" ", "")
    value = _plain_or_frac(s)
    return None if value is None else sign * value


def _plain_or_frac(s: str) -> Fraction | None:
    m = _PLAIN.match(s)
    if m:
        num = Fraction(m.group(1).replace(",", ""))
        if m.group(2) is None:
            return num
        den = Fraction(m.group(2).replace(",", ""))
        return None if den == 0 else num / den
    m = _FRAC.match(s)
    if m:
        num_f, den_f = (_signed(g.strip("{}").replace(" ", "")) for g in m.groups())
        if num_f is None or den_f is None or den_f == 0:
            return None
        return num_f / den_f
    return None


def _signed(s: str) -> Fraction | None:
    sign = -1 if s.startswith("-") else 1
    m = _PLAIN.match(s.lstrip("+-"))
    if not m or m.group(2) is not None:
        return None
    return sign * Fraction(m.group(1).replace(",", ""))


def format_number(value: Fraction) -> str:
    """``Fraction(3, 1)`` -> ``"3"``, ``Fraction(-1, 2)`` -> ``"-1/2"`` (the form ``normalize_answer`` votes with)."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])\s*")
_DISPLAY = re.compile(r"\\[dt]frac(?![A-Za-z])")
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")


def canonical_latex(text: str) -> str:
    """A spelling-insensitive form of a LaTeX answer, for the exact-match fast path: removes math delimiters,
    spacing commands and all whitespace, ``\\left``/``\\right``, ``\\text{}`` wrappers (keeping their content) and a
    trailing period; ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``^{\\circ}`` -> ``^\\circ``. Idempotent; never
    evaluates anything."""
    # Every pass that changes the string shortens it, so this terminates (one pass per \\text{} nesting level).
    prev, s = None, text
    while s != prev:
        prev = s
        s = strip_math_delimiters(s)
        s = _SPACING.sub(" ", s)
        s = _LEFT_RIGHT.sub("", s)
        s = _DISPLAY.sub(r"\\frac", s)
        s = _DEGREE.sub(r"^\\circ", s)
        s = _TEXT_CMD.sub(r"\1", s)
        s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def brace_depth(text: str) -> int:
    """Deepest nesting of ``{}``, ``()`` and ``[]`` (unbalanced closers are ignored); a cheap pathology test."""
    depth = deepest = 0
    for c in text:
        if c in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "})]" and depth > 0:
            depth -= 1
    return deepest
