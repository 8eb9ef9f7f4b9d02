"""An HTTP stub on 127.0.0.1 for the fast tests of HTTP clients (the OpenAI-compatible backend, the PRM client).

Each POST takes the next scripted reply: ``(status, payload)``, or a function of the request's JSON body that
returns one. A ``str`` payload is sent as it is (to test malformed answers); a :class:`Stream` is sent as
server-sent events, one ``data:`` line per event with ``delay`` seconds between them, and how many were written
before the client hung up is recorded in ``streamed``; anything else is sent as JSON. The stub
records every request's JSON body, path, headers and ``Authorization`` header, so a test can assert what its client
sent. A POST after the script is spent fails that request (an IndexError in the handler): overspending shows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Stream:
    """A streamed reply: ``events`` (JSON objects, or raw strings sent as they are), then ``data: [DONE]`` when
    ``done``."""

    events: list[Any]
    delay: float = 0.0
    done: bool = True

Reply = tuple[int, Any] | Callable[[dict[str, Any]], tuple[int, Any]]


class StubServer:
    """Serves ``replies`` in order at ``url`` (``http://127.0.0.1:PORT`` + ``path``) until ``close()``."""

    def __init__(self, replies: Iterable[Reply] = (), *, path: str = "") -> None:
        self.replies: list[Reply] = list(replies)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.auth: list[str | None] = []
        self.streamed: list[tuple[int, bool]] = []  # per streamed reply: events written, whether the client hung up
        lock = threading.Lock()  # the client may send requests concurrently
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real server

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    stub.bodies.append(body)
                    stub.paths.append(self.path)
                    stub.headers.append(dict(self.headers))
                    stub.auth.append(self.headers.get("Authorization"))
                    reply = stub.replies.pop(0)
                status, payload = reply(body) if callable(reply) else reply
                if isinstance(payload, Stream):
                    self._stream(status, payload)
                    return
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, status: int, s: Stream) -> None:
                self.close_connection = True  # the end of the body is the end of the connection
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                lines = [e if isinstance(e, str) else f"data: {json.dumps(e)}" for e in s.events]
                lines += ["data: [DONE]"] if s.done else []
                sent = 0
                try:
                    for line in lines:
                        self.wfile.write(f"{line}\n\n".encode())
                        self.wfile.flush()
                        sent += 1
                        time.sleep(s.delay)
                except (BrokenPipeError, ConnectionResetError):
                    with lock:
                        stub.streamed.append((sent, True))
                    return
                with lock:
                    stub.streamed.append((sent, False))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def reply(self, payload: Any, status: int = 200) -> None:
        """Script one more reply."""
        self.replies.append((status, payload))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
