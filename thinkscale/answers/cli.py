"""``thinkscale check``: is PREDICTION equivalent to REFERENCE for a task? Prints the verdict, exits with it.

    thinkscale check --task math "\\frac{1}{2}" "0.5"              # equivalent, exit 0
    thinkscale check --task game24 "(10-4)*(1+3)" "1 3 4 10"      # the reference is the four numbers
    thinkscale check --task numeric --extract "$(cat response.txt)" 18
    thinkscale check --task numeric -3 3                          # not equivalent, exit 1

Exit status, one meaning each:

- 0 ``equivalent``, 1 ``not equivalent``, 3 ``timeout`` (no verdict within ``--timeout``, or an answer too large for
  any limit), each printed on stdout;
- 2 a usage error or bad input, as for every ``thinkscale`` command: an unknown task or option, a missing or extra
  argument, a reference the task cannot read (``abc`` for numeric, three numbers for game24), a ``--timeout`` that
  is not a number of seconds in (0, 3600]; nothing on stdout, an ``error: ...`` line on stderr (Typer's own usage
  errors print a short usage box there instead).

Arguments that start with ``-`` and then a digit, ``.``, ``\\``, ``(``, ``{`` or ``$`` (``-3``, ``-\\frac{1}{2}``)
are answers, not options (``CheckCommand``); anything else after ``--`` is an answer too (``-- -x``).

Latency: numeric, integer, game24 and multiple-choice verdicts, and math answers that are the same string, plain
numbers or integer expressions too large to build, are decided in this process; only other math answers start the
math-verify worker, without its warm-up (about a second, which a one-shot check has nothing to amortise over). If
that comparison runs out of time, the worker is warmed up and the answer gets its limit once more (sympy's first-use
set-up alone can take the limit on a busy machine), so a real timeout costs ``2 x --timeout`` plus the warm-up.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand

from thinkscale.answers.equivalence import check, grade
from thinkscale.answers.task import Task, Verdict, brief
from thinkscale.answers.worker import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, SymbolicChecker

BAD_INPUT_EXIT = 2  # the exit status of a usage error, which Typer also uses
_TASKS = ", ".join(t.value for t in Task)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(BAD_INPUT_EXIT)


def looks_like_an_answer(arg: str) -> bool:
    """``-3``, ``-0.5``, ``-.5``, ``-\\frac{1}{2}``, ``-(1)``: a leading minus that cannot start an option name."""
    return len(arg) > 1 and arg[0] == "-" and arg[1] in "0123456789.\\({$"


class CheckCommand(TyperCommand):
    """``check`` with negative numbers as arguments: before Click reads the options, every argument that
    ``looks_like_an_answer`` (and is not the value of an option, as in ``--timeout -1``) is moved after a ``--``, in
    order with the other arguments, so Click takes it as PREDICTION or REFERENCE instead of an unknown option."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # duck-typed: recent Typer versions bring their own copy of Click's classes
        takes_value = {name for p in self.params
                       if p.param_type_name == "option" and not getattr(p, "is_flag", False)
                       and not getattr(p, "count", False)
                       for name in (*p.opts, *p.secondary_opts)}
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positional += args[i + 1:]
                break
            if arg.startswith("-") and len(arg) > 1 and not looks_like_an_answer(arg):
                options.append(arg)
                if arg in takes_value and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            else:
                positional.append(arg)
            i += 1
        return super().parse_args(ctx, options + (["--", *positional] if positional else []))


def register(app: typer.Typer) -> None:
    """Add ``check`` to ``app`` with the argument handling above (``thinkscale.cli`` calls this)."""
    app.command("check", cls=CheckCommand)(check_command)


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
    timeout: Annotated[float, typer.Option(help="Wall-clock limit, seconds, for one symbolic verdict (math only; "
                                           f"worker start-up not included; at most {MAX_TIMEOUT_S:g}).")]
    = DEFAULT_TIMEOUT_S,
) -> None:
    """Print `equivalent`, `not equivalent` or `timeout`; exit 0, 1 or 3 (2: usage error or bad input). Put `--`
    before answers that start with `-` (`check --task numeric -- -3 3`)."""
    if task is None:
        _fail(f"--task is required: one of {_TASKS}")
    try:
        kind = Task(task)
    except ValueError:
        _fail(f"unknown task {brief(task)}: choose one of {_TASKS}")
    if prediction is None:
        _fail("missing PREDICTION")
    if reference is None:
        what = "the four numbers, e.g. \"1 3 4 10\"" if kind is Task.GAME24 else "the reference answer"
        _fail(f"missing REFERENCE ({what})")
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
        _fail(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {timeout!r}")
    compare: Any = grade if extract else check
    with SymbolicChecker(timeout, warmup=False) as checker:  # started only if a math verdict needs it
        try:
            verdict = compare(kind, prediction, reference, checker=checker)
            if verdict is Verdict.TIMEOUT and checker.worker_pid is not None:
                # The cold worker's comparison also paid sympy's first-use set-up, which on a busy machine can take
                # the whole limit: warm the worker up and give the answer its limit once more.
                checker.warm_up()
                verdict = compare(kind, prediction, reference, checker=checker)
        except ValueError as e:
            _fail(str(e))
    typer.echo(verdict.label)
    raise typer.Exit(verdict.exit_code)
