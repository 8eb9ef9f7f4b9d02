"""`thinkscale serve` refuses bad options with a clear message before it loads a model: limits, the port range, a
host it cannot bind, a port in use. The socket is bound before the load and the server serves on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from typer.testing import CliRunner

import thinkscale.backends
from thinkscale.cli import app


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []

    def guarded(model: str, **kw: object) -> object:
        loaded.append(model)
        raise AssertionError("bad options must be refused before the model loads")

    monkeypatch.setattr(thinkscale.backends, "load_backend", guarded)
    return loaded


def serve(*args: str):
    return CliRunner().invoke(app, ["serve", "--model", "smollm2-135m", *args], env={"COLUMNS": "200"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_max_active_sequences_below_one_is_a_usage_error():
    r = CliRunner().invoke(app, ["serve", "--max-active-sequences", "0"])
    assert r.exit_code == 2
    assert "max-active-sequences" in r.output


def test_max_active_sequences_beyond_llama_cpp_limit_names_the_option(smollm2_path):
    r = CliRunner().invoke(app, ["serve", "--model", smollm2_path, "--max-active-sequences", "300",
                                 "--port", str(free_port())])
    assert r.exit_code == 1
    assert "max_active_sequences must be in 1..n_seq_max-1" in r.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--port", "99999"], "--port"),
    (["--port", "0"], "--port"),
    (["--port", "-1"], "--port"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--max-queue", "-1"], "--max-queue"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--log-level", "loud"], "--log-level"),
    (["--n-ctx", "-5"], "--n-ctx"),
])
def test_out_of_range_options_are_usage_errors_before_the_model_loads(args, needle, no_model_load):
    r = serve(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert no_model_load == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--request-timeout", "inf"], "--request-timeout must be a finite number"),
    (["--request-timeout", "nan"], "--request-timeout must be a finite number"),
    (["--request-timeout", "-1"], "request_timeout_s must be > 0"),
    (["--host", "[red]"], "--host '[red]' is not an address"),
    (["--host", "256.1.1.1"], "--host '256.1.1.1' is not an address"),
    (["--served-model-name", "a:b"], "must be non-empty without ':'"),
    (["--served-model-name", ""], "must be non-empty without ':'"),
])
def test_bad_values_are_one_error_line_before_the_model_loads(args, needle, no_model_load):
    r = serve(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert no_model_load == []


def test_a_port_in_use_is_refused_before_the_model_loads(no_model_load):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = serve("--port", str(port))
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: port {port} is in use: stop what " \
                               "listens there or give another --port"
    assert no_model_load == []


SERVE_A_FAKE = textwrap.dedent("""
    import sys
    import thinkscale.backends
    from tests.server.harness import endless
    thinkscale.backends.load_backend = lambda model, **kw: endless()
    from thinkscale.cli import main
    sys.argv = ["thinkscale", "serve", "--model", "tiny", "--port", sys.argv[1], "--log-level", "warning"]
    main()
""")


def test_the_server_serves_on_the_socket_it_bound_first():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", SERVE_A_FAKE, str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.1)
        assert health.json()["model"] == "tiny"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                       json={"model": "tiny:greedy", "messages": [{"role": "user", "content": "6 times 7?"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "42"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130) and "Traceback" not in err, err  # 130: stopped by SIGINT, as uvicorn does
