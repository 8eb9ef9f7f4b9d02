"""``thinkscale view``'s command function: bad input is one line and exit 2, a taken port exit 1, and the real
command serves a run on loopback (in a subprocess, as a user starts it)."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from thinkscale.viewer.cli import view_command

app = typer.Typer()
app.command()(view_command)


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


@pytest.mark.parametrize("make, said", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "is not a run folder"),
    (lambda p: _file(p / "run" / "results.sqlite", "not a database" * 50).parent, "not a usable thinkscale run store"),
    (lambda p: _file(p / "t.json", "{oops"), "is not a trace file: not valid JSON"),
])
def test_a_missing_or_corrupt_target_is_one_line_and_exit_2(tmp_path: Path, make, said: str) -> None:
    code, out = invoke(str(make(tmp_path)), "--port", "0")
    assert code == 2 and said in out
    assert out.startswith("error: ") and len(out.strip().splitlines()) == 1


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bad_options_are_errors(tmp_path: Path) -> None:
    assert invoke("--backend", "gpu:fast", "--port", "0")[0] == 2
    code, out = invoke("--backend", f"scripted:{tmp_path / 'none.json'}", "--port", "0")
    assert code == 2 and "cannot read it" in out
    code, out = invoke("--backend", "openai:http://127.0.0.1:9", "--port", "0")
    assert code == 2 and "needs --model" in out
    assert invoke("--port", "70000")[0] == 2
    assert invoke("--max-tokens", "0")[0] == 2
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        code, out = invoke("--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert code == 1 and "cannot listen on 127.0.0.1" in out


def test_binds_to_loopback_by_default() -> None:
    assert inspect.signature(view_command).parameters["host"].default == "127.0.0.1"


def test_importing_the_command_loads_no_web_stack() -> None:
    """``thinkscale.cli`` imports the command; ``thinkscale solve`` must still start without FastAPI."""
    code = ("import sys, thinkscale.viewer.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_serves_a_run_on_loopback(run_dir: Path, solve_table: Path) -> None:
    script = "import typer; from thinkscale.viewer.cli import view_command; typer.run(view_command)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir), "--port", "0",
                             "--backend", f"scripted:{solve_table}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        url = m.group(0)
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert page.status_code == 200 and "viewer.js" in page.text
        source = httpx.get(url + "api/source", timeout=5).json()
        assert source["source"]["kind"] == "run" and source["solve"] is True
        body = httpx.post(url + "api/solve", json={"problem": "What is 6 times 7?"}, timeout=20).text
        assert '"answer":"42"' in body.replace(" ", "")
        assert json.loads(body.rsplit("data: ", 1)[1])["answer"] == "42"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
