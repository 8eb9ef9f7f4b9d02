"""``thinkscale check``: the verdict on stdout and as exit status 0 / 1 / 2; bad input exits 3 with one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from thinkscale.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["check", *args], env={"COLUMNS": "200"})


@pytest.mark.parametrize(("args", "stdout", "code"), [
    (["--task", "math", "\\frac{1}{2}", "0.5"], "equivalent", 0),
    (["--task", "math", "\\frac{\\pi}{2}", "\\pi/2"], "equivalent", 0),
    (["--task", "math", "1/3", "0.333"], "not equivalent", 1),
    (["--task", "numeric", "$1,000", "1000"], "equivalent", 0),
    (["--task", "integer", "025", "25"], "equivalent", 0),
    (["--task", "game24", "(10-4)*(1+3)", "1 3 4 10"], "equivalent", 0),
    (["--task", "game24", "(10-4)**(1+3)", "1 3 4 10"], "not equivalent", 1),
    (["--task", "numeric", "--extract", "so she pays $18.\n#### 18", "18"], "equivalent", 0),
    (["--task", "math", "--timeout", "0.3", "10^{10^{10}}", "1"], "timeout", 2),
])
def test_verdicts_and_exit_codes(args, stdout, code):
    result = invoke(*args)
    assert (result.stdout.strip(), result.exit_code) == (stdout, code), result.stderr


@pytest.mark.parametrize("args", [
    ["--task", "bogus", "1", "1"],
    ["1", "1"],
    ["--task", "math", "1"],
    ["--task", "math"],
    ["--task", "game24", "(10-4)*(1+3)", "1 3 4"],
    ["--task", "numeric", "5", "abc"],
    ["--task", "math", "--timeout", "0", "1", "1"],
])
def test_bad_input_is_one_line_and_exit_3(args):
    result = invoke(*args)
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_typer_usage_errors_keep_exit_2_with_nothing_on_stdout():
    result = invoke("--tsk", "math", "1", "1")
    assert result.exit_code == 2 and result.stdout == ""
