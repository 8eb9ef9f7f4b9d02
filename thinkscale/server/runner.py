"""Run an app with uvicorn: in the foreground (the CLI) or in a background thread on a free port (tests, bench)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def serve_forever(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                  sock: socket.socket | None = None) -> None:
    """Serve ``app`` until interrupted, on ``sock`` (from ``bind``) when given, else on ``host``:``port``."""
    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
        return
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on 127.0.0.1 (a free port unless given) until the
    block ends. ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                     timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
