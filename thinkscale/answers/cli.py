"""``thinkscale check``: is PREDICTION equivalent to REFERENCE for a task? Prints the verdict, exits with it.

    thinkscale check --task math "\\frac{1}{2}" "0.5"              # equivalent, exit 0
    thinkscale check --task game24 "(10-4)*(1+3)" "1 3 4 10"      # the reference is the four numbers
    thinkscale check --task numeric --extract "$(cat response.txt)" 18

Exit status: 0 equivalent, 1 not equivalent, 2 timeout (stdout says which), 3 bad input: unknown task, missing
PREDICTION or REFERENCE, a reference the task cannot read (``abc`` for numeric, three numbers for game24), a
non-positive timeout; one ``error: ...`` line on stderr and nothing on stdout. Usage errors that Typer detects
before the command runs (an unknown option, an extra argument) keep Typer's own exit status 2, also with nothing
on stdout, which is how a script tells them from ``timeout``.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from thinkscale.answers.equivalence import check, grade
from thinkscale.answers.task import Task
from thinkscale.answers.worker import DEFAULT_TIMEOUT_S, SymbolicChecker

BAD_INPUT_EXIT = 3
_TASKS = ", ".join(t.value for t in Task)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(BAD_INPUT_EXIT)


def check_command(
    prediction: Annotated[str | None, typer.Argument(help="The predicted answer (with --extract: a whole model "
                                                     "response); for game24 the expression.", show_default=False)]
    = None,
    reference: Annotated[str | None, typer.Argument(help="The reference answer; for game24 the four numbers, "
                                                    "e.g. \"1 3 4 10\".", show_default=False)] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help=f"How to compare: {_TASKS}.",
                                             show_default=False)] = None,
    extract: Annotated[bool, typer.Option(help="Extract the final answer from PREDICTION first "
                                          "(\\boxed{}, '#### n', 'the answer is', last number).")] = False,
    timeout: Annotated[float, typer.Option(help="Wall-clock limit, seconds, for one symbolic verdict "
                                           "(math only; worker start-up not included).")] = DEFAULT_TIMEOUT_S,
) -> None:
    """Print `equivalent`, `not equivalent` or `timeout`; exit 0, 1 or 2 (3: bad input)."""
    if task is None:
        _fail(f"--task is required: one of {_TASKS}")
    try:
        kind = Task(task)
    except ValueError:
        _fail(f"unknown task {task!r}: choose one of {_TASKS}")
    if prediction is None:
        _fail("missing PREDICTION")
    if reference is None:
        what = "the four numbers, e.g. \"1 3 4 10\"" if kind is Task.GAME24 else "the reference answer"
        _fail(f"missing REFERENCE ({what})")
    if not timeout > 0:
        _fail(f"--timeout must be positive (got {timeout})")
    with SymbolicChecker(timeout) as checker:
        try:
            verdict = (grade if extract else check)(kind, prediction, reference, checker=checker)
        except ValueError as e:
            _fail(str(e))
    typer.echo(verdict.label)
    raise typer.Exit(verdict.exit_code)
