"""Final-answer extraction and normalisation for voting. Pure functions, no model calls.

Order of preference: the last ``\\boxed{...}`` (nested braces), a GSM8K ``#### n`` line, "the (final) answer is ...",
then the last number in the text. Returns None when there is no answer; it never guesses beyond that.
"""

from __future__ import annotations

import re
from fractions import Fraction

_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_BIG_EXPONENT = re.compile(r"[eE][+-]?[\d_]{4,}")


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
        nums = _NUMBER.findall(tail)
        if nums:
            return nums[0]
        tail = tail.split("\n")[0].strip().rstrip(".").strip()
        if tail:
            return tail
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


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
