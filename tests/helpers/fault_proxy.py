"""A reverse proxy on 127.0.0.1 that injects scripted faults in front of a real OpenAI-compatible server.

Each incoming request takes the next action of the plan (then ``default`` once the plan is spent):

- ``ok``: forward to upstream and relay the answer.
- ``500`` / ``400``: answer that status with an OpenAI-style JSON error, without contacting upstream.
- ``429``: answer 429 with ``Retry-After: 0``, without contacting upstream.
- ``hang``: send nothing for ``hang_s`` seconds (longer than the client's timeout), then close.
- ``reset``: close the connection without an answer, without contacting upstream.
- ``reset_after_upstream``: forward to upstream (the server DOES compute it), then close without an answer.
- ``truncate``: forward, then answer 200 with the first half of the JSON body (Content-Length says half: the
  client gets a complete but malformed body).
- ``cut``: forward, then declare the full Content-Length but send only half the body and close.

``counts`` tallies requests per action, ``upstream_requests`` how many reached the server, and ``relayed`` holds the
upstream JSON answers of the ``ok`` requests, so a test can compare a client's accounting with what the server said.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

_Request = socket.socket | tuple[bytes, socket.socket]

ACTIONS = frozenset({"ok", "500", "400", "429", "hang", "reset", "reset_after_upstream", "truncate", "cut"})


class FaultProxy:
    def __init__(self, upstream: str, plan: Iterable[str] = (), *, default: str = "ok", hang_s: float = 30.0) -> None:
        """``upstream``: the real server's base URL (e.g. ``http://127.0.0.1:8000/v1``); paths are forwarded as is,
        so ``base_url`` keeps the same path on the proxy's port."""
        self.plan = list(plan)
        for a in [*self.plan, default]:
            if a not in ACTIONS:
                raise ValueError(f"unknown fault action {a!r}; choose from {sorted(ACTIONS)}")
        parts = urlsplit(upstream)
        self._upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self._path_prefix = parts.path.rstrip("/")
        self.default = default
        self.hang_s = hang_s
        self.counts: Counter[str] = Counter()
        self.actions: list[str] = []  # in arrival order
        self.upstream_requests = 0
        self.relayed: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._client = httpx.Client(timeout=300.0)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FaultProxy is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path_prefix}"

    @property
    def requests(self) -> int:
        return len(self.actions)

    def start(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            with self._lock:
                conns = list(self._conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_action(self) -> str:
        with self._lock:
            action = self.plan.pop(0) if self.plan else self.default
            self.counts[action] += 1
            self.actions.append(action)
            return action

    def _forward(self, h: _Handler, body: bytes) -> httpx.Response:
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        with self._lock:
            self.upstream_requests += 1
        return self._client.request(h.command, self._upstream_origin + h.path, content=body, headers=headers)

    def handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        action = self._next_action()
        if action in ("500", "400", "429"):
            status = int(action)
            err = {"error": {"message": f"injected fault {status}", "type": "fault_proxy", "code": status}}
            _send(h, status, json.dumps(err).encode(), "application/json",
                  {"Retry-After": "0"} if status == 429 else {})
        elif action == "hang":
            self._stop.wait(self.hang_s)
            h.close_connection = True
        elif action == "reset":
            _reset(h)
        else:
            try:
                resp = self._forward(h, body)
            except httpx.HTTPError as e:
                _send(h, 502, json.dumps({"error": {"message": f"upstream failed: {e}"}}).encode(),
                      "application/json")
                return
            ctype = resp.headers.get("content-type", "application/json")
            if action == "ok":
                with self._lock:
                    self.relayed.append(resp.content)
                _send(h, resp.status_code, resp.content, ctype)
            elif action == "reset_after_upstream":
                _reset(h)
            elif action == "truncate":
                _send(h, 200, resp.content[: len(resp.content) // 2], ctype)
            elif action == "cut":
                h.send_response(200)
                h.send_header("Content-Type", ctype)
                h.send_header("Content-Length", str(len(resp.content)))
                h.end_headers()
                h.wfile.write(resp.content[: len(resp.content) // 2])
                h.wfile.flush()
                _reset(h)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(addr, handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        with self.proxy._lock:
            if isinstance(request, socket.socket):
                self.proxy._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        with self.proxy._lock:
            if isinstance(request, socket.socket):
                self.proxy._conns.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real server
    server: _Server

    def _dispatch(self) -> None:
        try:
            self.server.proxy.handle(self)
        except OSError:  # the client went away (after a hang, say)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: object) -> None:
        pass


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (extra or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the connection with an RST and no (further) answer."""
    h.close_connection = True
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
