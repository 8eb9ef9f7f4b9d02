"""Final-answer extraction and normalisation for voting. Pure functions, no model calls.

Order of preference: the last ``\\boxed{...}`` (nested braces), a GSM8K ``#### n`` line, "the (final) answer is ...",
then the last number in the text. Returns None when there is no answer; it never guesses beyond that.
"""

from __future__ import annotations

import re
from fractions import Fraction

_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?(?:/\d+)?")  # commas inside a number only: "5," is 5
_BIG_EXPONENT = re.compile(r"[eE][+-]?[\d_]{4,}")
_DELIMITED_MATH = re.compile(r"^(?:\$\$?([^$\n]+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\])")
_BARE_LATEX = re.compile(r"^\\[A-Za-z]")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}``, honouring nested braces; None if unclosed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_answer(text: str) -> str | None:
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    hashes = [h.strip() for h in _HASHES.findall(text) if h.strip()]
    if hashes:
        return hashes[-1]
    said = _ANSWER_IS.findall(text)
    if said:
        tail = said[-1].strip()
        math = _leading_math(tail)
        if math:
            return math
        nums = _NUMBER.findall(tail)
        if nums:
            return nums[0]
        tail = tail.split("\n")[0].strip().rstrip(".").strip()
        if any(c.isalnum() for c in tail):  # "the final answer is:" and the text ends (or "**", "\["): not said
            return tail
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def _leading_math(tail: str) -> str | None:
    """The formula that opens "the answer is ..." when it is LaTeX (``$\\frac{1}{2}$``, ``\\(x+1\\)``,
    ``\\sqrt{2}.``), so that it is not cut down to its first number. ``$5 and $6`` reads as money, not math."""
    m = _DELIMITED_MATH.match(tail)
    if m:
        content = next(g for g in m.groups() if g is not None).strip()
        if content and (any(c in content for c in "\\^{_") or not any(c.isspace() for c in content)):
            return content
        return None
    if _BARE_LATEX.match(tail):
        line = re.split(r"\.\s|\.$|\n", tail, maxsplit=1)[0].strip()
        return line or None
    return None


def normalize_answer(answer: str | None) -> str | None:
    """A canonical form for voting: numbers become exact (``"1,000.0"`` -> ``"1000"``, ``"3/6"`` -> ``"1/2"``);
    other text is stripped of ``$``, surrounding spaces and a trailing period. Idempotent."""
    if answer is None:
        return None
    a = answer
    while True:  # strip to a fixed point: "$x$." and "\\text{\\text{x}}" need two passes
        b = re.sub(r"^\\text\{(.*)\}$", r"\1", a.strip().strip("$").strip().rstrip(".").strip())
        if b == a:
            break
        a = b
    num = a.replace(",", "").replace("$", "").rstrip("%").strip()
    if _BIG_EXPONENT.search(num):  # Fraction("1e999999999") would build a billion-digit integer
        return a or None
    try:
        f = Fraction(num)
        # str() of an int over sys.get_int_max_str_digits() digits raises ValueError: then it stays text.
        return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
    except (ValueError, ZeroDivisionError):
        return a or None


_CHOICE_SAID = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*:?\s*(?:option\s*)?[(\[]?\s*([A-J])\s*[)\]]?"
                          r"(?![A-Za-z0-9])")
_CHOICE_ALONE = re.compile(r"^[\s*]*(?:\\text\{)?\s*[(\[]?\s*([A-J])\s*[)\]]?\s*\}?[.:]?[\s*]*$")


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The chosen option letter (upper case) of a multiple-choice response, or None.

    Looks, in order, at the last ``\\boxed{}`` (``B``, ``(B)``, ``\\text{(B)}``), the last "answer is (B)" /
    "Answer: B" / "option B", and a last line that is only a letter. A capital letter anywhere else ("A farmer
    has...") is never taken for a choice."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        m = _CHOICE_ALONE.match(boxed)
        if m and m.group(1) in letters:
            return m.group(1)
    said = [c for c in _CHOICE_SAID.findall(text) if c in letters]
    if said:
        return said[-1]
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        m = _CHOICE_ALONE.match(lines[-1])
        if m and m.group(1) in letters:
            return m.group(1)
    return None


_EXPRESSION_LINE = re.compile(r"^(?:.*?(?:answer|expression|solution)\s*(?:is|:)\s*:?)?\s*([-+*/()\d\s.×÷x·]+?)"
                              r"\s*=\s*24(?:\.0*)?\s*\.?\s*$", re.IGNORECASE)


def extract_expression(text: str) -> str | None:
    """The final Game of 24 expression of a response: the last ``\\boxed{}``, else the left-hand side of the last
    line that ends in ``= 24`` (``Answer: (6 - 4) * (1 + 3) = 24`` -> ``(6 - 4) * (1 + 3)``), else None."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for line in reversed(text.splitlines()):
        m = _EXPRESSION_LINE.match(line.replace("$", "").replace("\\times", "*").replace("\\div", "/"))
        if m and m.group(1).strip():
            return m.group(1).strip()
    return None


def extract_for_task(text: str, task: str) -> str | None:
    """The final answer of ``text`` as ``task`` (a ``Task`` or its value) reads it: an option letter for
    ``multiple_choice``, an expression for ``game24``, else ``extract_answer``."""
    if task == "multiple_choice":
        return extract_choice(text)
    if task == "game24":
        return extract_expression(text)
    return extract_answer(text)
