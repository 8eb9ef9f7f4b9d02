"""``thinkscale sandbox FILE.py``: one JSON object per run; bad arguments are refused with the option named."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from thinkscale.cli import app


def run(*args: str):
    return CliRunner().invoke(app, ["sandbox", *args])


def test_prints_one_json_object_with_the_run(tmp_path: Path) -> None:
    f = tmp_path / "snippet.py"
    f.write_text("import sys\nprint('héllo', 6 * 7)\nprint('warn', file=sys.stderr)\nsys.exit(3)\n")
    res = run(str(f), "--timeout", "5", "--memory", "512")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {k: out[k] for k in ("exit_code", "stdout", "stderr", "timed_out", "killed_reason")} == {
        "exit_code": 3, "stdout": "héllo 42\n", "stderr": "warn\n", "timed_out": False, "killed_reason": None}
    assert 0 < out["wall_seconds"] < 5


def test_timeout_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "loop.py"
    f.write_text("while True:\n    pass\n")
    # --cpu above --timeout: the wall clock is the only limit this loop can hit (with the default --cpu equal to
    # --timeout, SIGXCPU and the wall-clock kill race, and whichever comes first is the one reported)
    out = json.loads(run(str(f), "--timeout", "1", "--cpu", "30").stdout)
    assert out["timed_out"] is True and out["killed_reason"] == "timeout" and out["exit_code"] == -9


def test_memory_limit_is_applied(tmp_path: Path) -> None:
    f = tmp_path / "mem.py"
    f.write_text("x = bytearray(600 * 2**20)\n")
    out = json.loads(run(str(f), "--memory", "512").stdout)
    assert out["killed_reason"] == "memory" and out["exit_code"] == 1


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "ok.py"
    f.write_text("print(1)\n")
    res = run(str(f), "--memory", "10")
    assert res.exit_code == 2 and "--memory must be at least 256 MiB" in res.output
    res = run(str(f), "--timeout", "0")
    assert res.exit_code == 2 and "--timeout" in res.output
    res = run(str(tmp_path / "missing.py"))
    assert res.exit_code == 2 and "no such file" in res.output
    (tmp_path / "bin.py").write_bytes(b"\xff\xfe\x00")
    res = run(str(tmp_path / "bin.py"))
    assert res.exit_code == 2 and "not UTF-8" in res.output
