"""Game of 24: check an arithmetic expression against the four given numbers, and a brute-force solver.

A response is correct iff its expression uses only ``+ - * /`` and parentheses, uses each given number exactly
once (as a multiset, no other numbers) and equals 24 in exact arithmetic, so ``8/(3-8/3)`` counts. The expression is
parsed with ``ast`` and evaluated by walking the tree with ``Fraction``; it is never ``eval``-ed. Unary minus is
not an operation of the game, so ``-(1-5)*6`` is rejected.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

from thinkscale.answers.task import brief

TARGET = 24
MAX_EXPRESSION_CHARS = 200

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
# Spellings models use for the four operations, mapped to Python's.
_SPELLINGS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", ""), ("×", "*"),
              ("·", "*"), ("÷", "/"), ("−", "-"), ("–", "-"))
_EQUALS_TARGET = re.compile(r"\s*=\s*24(?:\.0*)?\s*\.?\s*$")


class Invalid(ValueError):
    """Why an expression is not a valid Game of 24 answer (one line)."""


def parse_numbers(reference: str | Sequence[int]) -> tuple[int, ...]:
    """``"1 3 4 10"`` / ``"1, 3, 4, 10"`` / ``[1, 3, 4, 10]`` -> ``(1, 3, 4, 10)``; ValueError unless 4 integers."""
    if isinstance(reference, str):
        parts = reference.replace(",", " ").split()
        if not all(p.isascii() and p.isdigit() for p in parts) or any(len(p) > 6 for p in parts):
            raise ValueError(f"Game of 24 needs four non-negative integers, got {brief(reference)}")
        numbers = tuple(int(p) for p in parts)
    else:
        numbers = tuple(int(n) for n in reference)
    if len(numbers) != 4:
        shown = brief(reference) if isinstance(reference, str) else repr(reference)[:100]
        raise ValueError(f"Game of 24 needs exactly four numbers, got {len(numbers)}: {shown}")
    return numbers


def clean_expression(expression: str) -> str:
    """Strip a trailing ``= 24`` and map ``\\times``, ``×``, ``÷`` ... to Python operators; nothing else changes."""
    s = expression.strip().strip("$").strip()
    for old, new in _SPELLINGS:
        s = s.replace(old, new)
    s = _EQUALS_TARGET.sub("", s)
    return s.replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")").strip()


def evaluate_24(expression: str, numbers: Sequence[int]) -> Fraction:
    """The exact value of a well-formed expression that uses exactly ``numbers``; raises ``Invalid`` otherwise."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise Invalid(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    source = clean_expression(expression)
    if not source:
        raise Invalid("empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise Invalid(f"not an arithmetic expression: {e.__class__.__name__}") from None
    used: list[int] = []
    value = _walk(tree.body, source, used)
    if Counter(used) != Counter(numbers):
        raise Invalid(f"uses {sorted(used)}, must use each of {sorted(numbers)} exactly once")
    return value


def _walk(node: ast.AST, source: str, used: list[int]) -> Fraction:
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _walk(node.left, source, used)
        right = _walk(node.right, source, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise Invalid("division by zero")
        return left / right
    if isinstance(node, ast.Constant) and type(node.value) is int:
        # Reject literals Python reads as integers but a person would not write: 1_0, 0x10, 0b1.
        text = ast.get_source_segment(source, node) or ""
        if not (text.isascii() and text.isdigit()):
            raise Invalid(f"not a plain number: {text!r}")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        raise Invalid(f"operator {node.op.__class__.__name__} is not allowed (only + - * /)")
    raise Invalid(f"{node.__class__.__name__} is not allowed (only numbers, + - * / and parentheses)")


def check_24(expression: str, numbers: Sequence[int], target: int = TARGET) -> bool:
    """True iff ``expression`` is a valid Game of 24 answer for ``numbers``. Never raises on any expression text."""
    try:
        return evaluate_24(expression, numbers) == target
    except Invalid:
        return False


def solve_24(numbers: Sequence[int], target: int = TARGET) -> str | None:
    """Some expression over ``numbers`` that makes ``target``, or None. Brute force over pairs, remembering the
    multisets of values already found to be dead ends (about 1 ms for four numbers)."""
    return _solve([(Fraction(n), str(n)) for n in numbers], Fraction(target), set())


def _solve(items: list[tuple[Fraction, str]], target: Fraction, dead: set[tuple[Fraction, ...]]
           ) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == target else None
    key = tuple(sorted(v for v, _ in items))
    if key in dead:
        return None
    for i, j in itertools.combinations(range(len(items)), 2):
        (a, ea), (b, eb) = items[i], items[j]
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
        options = [(a + b, f"({ea}+{eb})"), (a * b, f"({ea}*{eb})"), (a - b, f"({ea}-{eb})"),
                   (b - a, f"({eb}-{ea})")]
        if b != 0:
            options.append((a / b, f"({ea}/{eb})"))
        if a != 0:
            options.append((b / a, f"({eb}/{ea})"))
        for value, expr in options:
            found = _solve([*rest, (value, expr)], target, dead)
            if found is not None:
                return found
    dead.add(key)
    return None
