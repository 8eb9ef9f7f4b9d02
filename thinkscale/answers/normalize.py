"""Exact numbers and canonical LaTeX strings from answer text. Pure functions, stdlib only.

``parse_number`` reads the answers a grader should compare as numbers (``"1,000"``, ``"$18.50"``, ``"50%"``,
``"\\frac{3}{4}"``, ``"-\\dfrac12"``, ``"90^\\circ"``, ``"5.4 \\text{ cents}"``) into an exact ``Fraction``, and returns
None for anything else (``"2\\sqrt{3}"``, ``"(1,2)"``, ``"1e5"``, ``"10^{10}"``), so nothing is ever evaluated.
``canonical_latex`` removes only spelling differences that never change meaning (spacing, ``\\left``/``\\right``,
``\\dfrac``/``\\tfrac``, a trailing period); it is the cheap "same string" test before symbolic comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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


# --- how large is a plain integer expression? ---------------------------------------------------------------------

# Integers up to this many digits are kept exactly; past it only log10 of the magnitude is kept.
MAX_EXACT_DIGITS = 10_000
# Past this many digits no comparison can build the number in time (sympy evaluates integer powers and factorials
# eagerly): ``10^{10^{10}}`` has ten billion digits, ``10!!`` (iterated, as LaTeX parsers read it) 22 million.
HUGE_DIGITS = 1_000_000
_LOG10_2 = math.log10(2)
_MAG_TOKEN = re.compile(r"\d+|\\cdot|\\times|[-+*^!{}()]")


@dataclass(frozen=True)
class Magnitude:
    """The value of an integer expression: exact while it has at most ``MAX_EXACT_DIGITS`` digits, else the sign
    (0 when unknown) and ``log10`` of the absolute value (``inf`` past floats)."""

    exact: int | None
    sign: int
    log10: float

    @property
    def huge(self) -> bool:
        """More than ``HUGE_DIGITS`` digits: too large for any symbolic comparison to build."""
        return self.log10 >= HUGE_DIGITS


def _mag_exact(value: int) -> Magnitude:
    """``value`` exactly, or only its size when it has more than ``MAX_EXACT_DIGITS`` digits."""
    if value == 0:
        return Magnitude(0, 0, -math.inf)
    sign = 1 if value > 0 else -1
    log = math.log10(abs(value))  # exact enough for any int size
    return Magnitude(value if log < MAX_EXACT_DIGITS + 1 else None, sign, log)


def _float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _mag_large(sign: int, log10: float) -> Magnitude:
    return Magnitude(None, sign, log10)


class _Unsupported(Exception):
    """Not a plain integer expression this estimator reads the way LaTeX answer parsers do."""


def _pow10(x: float) -> float:
    return math.inf if x > 308 else 10.0 ** x


class _MagParser:
    """Recursive descent over ``+ - * \\cdot \\times ^ !``, integers, ``{}`` and ``()``, read as latex2sympy (which
    math-verify uses) reads them: an unbraced ``a^b^c`` is ``(a^b)^c``, ``2^{10}!`` is ``(2^{10})!``, ``n!!`` is
    ``(n!)!``. Anything else (a letter, a fraction, a decimal point, an ambiguous form) raises ``_Unsupported``."""

    def __init__(self, text: str) -> None:
        self.tokens = _MAG_TOKEN.findall(text)
        if "".join(self.tokens) != text:
            raise _Unsupported
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Unsupported
        self.i += 1
        return tok

    def parse(self) -> Magnitude:
        value = self.expr()
        if self.peek() is not None:
            raise _Unsupported
        return value

    def expr(self) -> Magnitude:
        negate = self.peek() == "-"
        if self.peek() in ("+", "-"):
            self.take()
        value = self.term()
        if negate:
            value = _neg(value)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = _add(value, _neg(rhs) if op == "-" else rhs)
        return value

    def term(self) -> Magnitude:
        value = self.power()
        while self.peek() in ("*", "\\cdot", "\\times"):
            self.take()
            value = _mul(value, self.power())
        return value

    def power(self) -> Magnitude:
        value = self.atom()
        unbraced_exponent = False
        while self.peek() == "^":
            self.take()
            tok = self.peek()
            if tok is not None and tok.isdigit():
                exponent, unbraced_exponent = _mag_exact(int(self.take())), True
            elif tok in ("{", "("):
                exponent, unbraced_exponent = self.group(), False
            else:
                raise _Unsupported
            value = _pow(value, exponent)
        while self.peek() == "!":
            if unbraced_exponent:  # "2^3!": which one the factorial binds to depends on the parser
                raise _Unsupported
            self.take()
            value = _factorial(value)
            if self.peek() == "^":  # "5!^2"
                raise _Unsupported
        return value

    def atom(self) -> Magnitude:
        tok = self.peek()
        if tok is not None and tok.isdigit():
            self.take()
            if len(tok) > MAX_EXACT_DIGITS:
                raise _Unsupported
            return _mag_exact(int(tok))
        if tok in ("{", "("):
            return self.group()
        raise _Unsupported

    def group(self) -> Magnitude:
        closing = "}" if self.take() == "{" else ")"
        value = self.expr()
        self.take(closing)
        return value


def _neg(a: Magnitude) -> Magnitude:
    return _mag_exact(-a.exact) if a.exact is not None else _mag_large(-a.sign, a.log10)


def _add(a: Magnitude, b: Magnitude) -> Magnitude:
    if a.exact is not None and b.exact is not None:
        return _mag_exact(a.exact + b.exact)
    if a.exact is not None or b.exact is not None:  # a large value plus one below 10^MAX_EXACT_DIGITS
        large = b if a.exact is not None else a
        return _mag_large(large.sign, large.log10)
    if abs(a.log10 - b.log10) <= 1 + 1e-6 * max(a.log10, b.log10):  # they might cancel
        raise _Unsupported
    large = a if a.log10 > b.log10 else b
    return _mag_large(large.sign, large.log10)


def _mul(a: Magnitude, b: Magnitude) -> Magnitude:
    if a.exact == 0 or b.exact == 0:
        return _mag_exact(0)
    log = a.log10 + b.log10
    if a.exact is not None and b.exact is not None and log < MAX_EXACT_DIGITS - 1:
        return _mag_exact(a.exact * b.exact)
    return _mag_large(a.sign * b.sign, log)


def _pow(base: Magnitude, exponent: Magnitude) -> Magnitude:
    if exponent.sign < 0 or (exponent.exact is None and exponent.sign == 0):
        raise _Unsupported  # a fraction, or a sign we do not know
    if exponent.exact == 0:
        if base.exact == 0:
            raise _Unsupported  # 0^0
        return _mag_exact(1)
    if base.exact in (0, 1):
        return base
    if base.exact == -1:
        if exponent.exact is None:
            raise _Unsupported
        return _mag_exact(-1 if exponent.exact % 2 else 1)
    times = _float(exponent.exact) if exponent.exact is not None else _pow10(exponent.log10)
    log = times * base.log10
    if exponent.exact is not None and base.exact is not None and log < MAX_EXACT_DIGITS - 1:
        return _mag_exact(base.exact ** exponent.exact)
    if base.sign < 0:
        sign = (-1 if exponent.exact % 2 else 1) if exponent.exact is not None else 0
    else:
        sign = base.sign
    return _mag_large(sign, log)


def _factorial(n: Magnitude) -> Magnitude:
    if n.sign < 0 or (n.exact is None and n.sign == 0):
        raise _Unsupported
    if n.exact is not None and n.exact <= 3000:  # 3000! has 9131 digits
        return _mag_exact(math.factorial(n.exact))
    x = _float(n.exact) if n.exact is not None else _pow10(n.log10)
    log = math.lgamma(x + 1) / math.log(10) if x < 1e300 else math.inf
    return _mag_large(1, log)


def magnitude(text: str) -> Magnitude | None:
    """The size of ``text`` when it is a plain integer expression (integers, ``+ - * \\cdot \\times``, ``^``, ``!``,
    braces, parentheses), without building it: ``magnitude("10^{10^{10}}").log10 == 1e10``. None for anything else.
    Never slow: integers longer than ``MAX_EXACT_DIGITS`` are not kept exactly."""
    if not text or len(text) > 1000:
        return None
    s = canonical_latex(text)
    try:
        return _MagParser(s).parse()
    except (_Unsupported, RecursionError, OverflowError, ValueError):
        return None


def surely_different(a: Magnitude, b: Magnitude) -> bool:
    """True when two magnitudes cannot be the same number (exact values differ, or the sizes are far apart)."""
    if a.exact is not None and b.exact is not None:
        return a.exact != b.exact
    if math.isinf(a.log10) or math.isinf(b.log10):
        # -inf is zero and inf beyond floats: different unless both are the same one (two beyond floats may be equal)
        return a.log10 != b.log10
    return abs(a.log10 - b.log10) > 1 + 1e-6 * max(abs(a.log10), abs(b.log10))
