"""Is a predicted answer equivalent to the reference? One entry point, ``check(task, prediction, reference)``.

Per task (see ``Task``):

- ``numeric``: both sides read by ``parse_number`` (commas, ``$``, units, ``%`` dropped) and compared as exact
  fractions, so ``"1,000.00"`` equals ``"1000"`` and ``"0.1+0.2"`` is not a number at all.
- ``integer``: the same reading; both must be whole numbers (``"025"`` equals ``"25"``).
- ``math``: in order, (1) the same string up to spelling (``canonical_latex``), (2) both plain numbers: exact
  comparison (``\\frac{1}{2}`` = ``0.5``, ``90^\\circ`` = ``90``), (3) a cheap pre-check (length, nesting) that
  rejects pathological input, (4) the size of plain integer expressions, read without building them
  (``magnitude``): an answer with more than a million digits (``10^{10^{10}}``, ``10!!!!``) is never handed to
  sympy, which would build it; it is ``not_equivalent`` to a number of another size and ``timeout`` otherwise, at
  once, (5) math-verify in a worker process with a hard wall-clock limit (``thinkscale.answers.worker``), which may
  answer ``timeout``. Every step is symmetric in its two arguments, and steps 1-4 run in this process.
- ``game24``: the prediction is an expression and the reference the four numbers (``"1 3 4 10"``).
- ``multiple_choice``: option letters, after ``extract_choice`` on the prediction.

``prediction`` is an extracted answer (``None`` counts as wrong); ``grade`` extracts it from a whole response first.
A reference that cannot be read for its task (``"abc"`` for ``numeric``) raises ``ValueError``: that is a data bug,
not a wrong answer. Its message quotes the reference cut to a few dozen characters.
"""

from __future__ import annotations

from fractions import Fraction

from thinkscale.answers.extract import extract_choice, extract_for_task
from thinkscale.answers.game24 import check_24, parse_numbers
from thinkscale.answers.normalize import (
    brace_depth,
    canonical_latex,
    magnitude,
    parse_number,
    strip_math_delimiters,
    surely_different,
)
from thinkscale.answers.task import Task, Verdict, brief
from thinkscale.answers.worker import SymbolicChecker, default_checker

# Real answers are short (the longest MATH-500 reference is 53 characters) and shallow; anything beyond these never
# reaches sympy, whose parser and simplifier can take minutes on it. The worker's hard limit applies regardless.
MAX_SYMBOLIC_CHARS = 1000
MAX_SYMBOLIC_DEPTH = 24


def check(task: Task | str, prediction: str | None, reference: str, *,
          checker: SymbolicChecker | None = None) -> Verdict:
    """Compare an extracted answer with the reference, as ``task`` prescribes.

    Args:
        task: a ``Task`` or its value (``"math"``); ValueError if unknown.
        prediction: the model's final answer (e.g. from ``extract_for_task``); None is ``NOT_EQUIVALENT``.
        reference: the dataset's answer; for ``game24`` the four numbers.
        checker: the symbolic worker for ``math`` (default: one shared per process, started on first need).

    >>> check("math", "\\\\frac{1}{2}", "0.5")
    <Verdict.EQUIVALENT: 'equivalent'>
    """
    task = Task(task)
    if task is Task.GAME24:
        numbers = parse_numbers(reference)
        return _verdict(prediction is not None and check_24(prediction, numbers))
    if prediction is None:
        if task in (Task.NUMERIC, Task.INTEGER):
            _reference_number(reference, integer=task is Task.INTEGER)  # still reject a bad reference
        return Verdict.NOT_EQUIVALENT
    if task is Task.NUMERIC:
        return _verdict(parse_number(prediction) == _reference_number(reference, integer=False))
    if task is Task.INTEGER:
        value = _reference_number(reference, integer=True)
        predicted = parse_number(prediction)
        return _verdict(predicted is not None and predicted.denominator == 1 and predicted == value)
    if task is Task.MULTIPLE_CHOICE:
        letter = extract_choice(reference) or extract_choice(f"\\boxed{{{reference.strip()}}}")
        if letter is None:
            raise ValueError(f"reference {brief(reference)} is not an option letter A-J")
        return _verdict(extract_choice(f"\\boxed{{{prediction.strip()}}}") == letter
                        or extract_choice(prediction) == letter)
    return math_verdict(prediction, reference, checker=checker)


def grade(task: Task | str, response: str, reference: str, *, checker: SymbolicChecker | None = None) -> Verdict:
    """``check`` on the final answer extracted from a whole model response (``NOT_EQUIVALENT`` if there is none)."""
    task = Task(task)
    return check(task, extract_for_task(response, task), reference, checker=checker)


def math_verdict(prediction: str, reference: str, *, checker: SymbolicChecker | None = None) -> Verdict:
    """MATH-style comparison (see the module docstring); symmetric in its two answers."""
    a, b = strip_math_delimiters(prediction), strip_math_delimiters(reference)
    if not a or not b:
        return _verdict(a == b)
    if max(len(a), len(b)) > MAX_SYMBOLIC_CHARS:  # even canonical_latex is O(length x nesting): compare as written
        return _verdict(a == b)
    if canonical_latex(a) == canonical_latex(b):
        return Verdict.EQUIVALENT
    x, y = parse_number(a, units=False), parse_number(b, units=False)
    if x is not None and y is not None:
        return _verdict(x == y)
    if max(brace_depth(a), brace_depth(b)) > MAX_SYMBOLIC_DEPTH:
        return Verdict.NOT_EQUIVALENT
    size_a, size_b = magnitude(a), magnitude(b)
    if (size_a is not None and size_a.huge) or (size_b is not None and size_b.huge):
        if size_a is not None and size_b is not None and surely_different(size_a, size_b):
            return Verdict.NOT_EQUIVALENT
        return Verdict.TIMEOUT  # sympy would have to build the number: no limit is long enough
    return Verdict((checker or default_checker()).verdict(b, a))


def _reference_number(reference: str, *, integer: bool) -> Fraction:
    value = parse_number(reference)
    if value is None or (integer and value.denominator != 1):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"reference {brief(reference)} is not {kind}")
    return value


def _verdict(equivalent: bool) -> Verdict:
    return Verdict.EQUIVALENT if equivalent else Verdict.NOT_EQUIVALENT
