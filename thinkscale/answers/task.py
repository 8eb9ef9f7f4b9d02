"""What kind of answer a problem has (how two answers are compared) and the three possible verdicts. Stdlib only."""

from __future__ import annotations

import enum


class Task(enum.StrEnum):
    """How a prediction is compared with a reference (see ``thinkscale.answers.equivalence.check``).

    - ``math``: MATH-style LaTeX (fractions, radicals, intervals, tuples, matrices, degrees, ``\\text{}``);
      exact numbers first, then symbolic equivalence with math-verify in a time-limited worker process.
    - ``numeric``: GSM8K-style numbers, compared exactly as fractions (commas, ``$``, units and ``%`` dropped).
    - ``integer``: AIME/AMC; both sides must be integers (``"025"`` equals ``"25"``).
    - ``game24``: the prediction is an arithmetic expression, the reference the four numbers it must use.
    - ``multiple_choice``: one option letter A-J.
    """

    MATH = "math"
    NUMERIC = "numeric"
    INTEGER = "integer"
    GAME24 = "game24"
    MULTIPLE_CHOICE = "multiple_choice"


class Verdict(enum.StrEnum):
    """``timeout``: no verdict within the wall-clock limit (the symbolic worker was killed, or died), or an answer
    that denotes a number too large for any limit (``10^{10^{10}}``) where the other side is not a number it can be
    told apart from by size; neither equivalent nor a proven mismatch, so callers decide how to count it (an eval
    usually counts it as wrong)."""

    EQUIVALENT = "equivalent"
    NOT_EQUIVALENT = "not_equivalent"
    TIMEOUT = "timeout"

    @property
    def label(self) -> str:
        """Human form printed by ``thinkscale check``: ``equivalent``, ``not equivalent`` or ``timeout``."""
        return self.value.replace("_", " ")

    @property
    def exit_code(self) -> int:
        """``thinkscale check`` exit status: 0 equivalent, 1 not equivalent, 3 timeout (2 is a usage error or bad
        input, as for every ``thinkscale`` command)."""
        return {Verdict.EQUIVALENT: 0, Verdict.NOT_EQUIVALENT: 1, Verdict.TIMEOUT: 3}[self]


def brief(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to ``limit`` characters and the full length said, for error messages that quote input
    (an answer can be megabytes long)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
