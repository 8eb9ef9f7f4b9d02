"""Final answers: extraction from model text, normalisation, and equivalence per task. Pure functions, no model calls.

    from thinkscale.answers import Task, Verdict, check, grade
    check(Task.MATH, "\\frac{1}{2}", "0.5")           # Verdict.EQUIVALENT
    grade(Task.NUMERIC, "... so 18.\\n#### 18", "18")  # extract, then check
"""

from thinkscale.answers.equivalence import check, grade, math_verdict
from thinkscale.answers.extract import (
    extract_answer,
    extract_choice,
    extract_expression,
    extract_for_task,
    normalize_answer,
)
from thinkscale.answers.game24 import check_24, solve_24
from thinkscale.answers.normalize import canonical_latex, parse_number
from thinkscale.answers.task import Task, Verdict
from thinkscale.answers.worker import SymbolicChecker

__all__ = ["SymbolicChecker", "Task", "Verdict", "canonical_latex", "check", "check_24", "extract_answer",
           "extract_choice", "extract_expression", "extract_for_task", "grade", "math_verdict", "normalize_answer",
           "parse_number", "solve_24"]
