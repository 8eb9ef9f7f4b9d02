"""Start llama-cpp-python's OpenAI-compatible server on a free 127.0.0.1 port for the duration of a test.

The yielded base_url includes ``/v1`` (the OpenAI SDK convention, and what OpenAICompatBackend expects).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, n_chars: int = 4000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-n_chars:]
    except OSError as e:
        return f"<no log: {e}>"


@contextlib.contextmanager
def llama_server(model_path: str, *, n_ctx: int = 2048, startup_timeout_s: float = 120.0,
                 extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` for ``model_path``; yields ``http://127.0.0.1:PORT/v1``.

    The server's stdout/stderr go to a temporary log whose tail is put in the error if it fails to start.
    The process is always terminated (then killed) on exit.
    """
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file not found: {model_path}")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), *extra_args]
    fd, log_path = tempfile.mkstemp(prefix="llama_server_", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} during startup "
                                       f"({' '.join(cmd)}); log tail:\n{_tail(log_path)}")
                try:
                    if client.get(f"{base_url}/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer GET {base_url}/models within "
                                       f"{startup_timeout_s:.0f}s; log tail:\n{_tail(log_path)}")
                time.sleep(0.2)
        yield base_url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(log_path)
