"""A live server on 127.0.0.1 for the server tests: a ScriptedBackend (or any backend) behind the real app, uvicorn
in a background thread, and the official ``openai`` client pointed at it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from openai import OpenAI

from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.server import ServeEngine, ServerLimits, create_app
from thinkscale.server.runner import BackgroundServer
from thinkscale.types import GenRequest, Result

MODEL = "tiny"


@dataclass
class Served:
    url: str
    app: Any
    engine: ServeEngine
    backend: Any
    client: OpenAI
    results: list[tuple[str, int, Result]] = field(default_factory=list)

    def ledger_results(self, response_id: str) -> list[Result]:
        return [r for rid, _, r in sorted(self.results, key=lambda t: t[1]) if rid == response_id]


@contextmanager
def serve(backend: Any, *, name: str = MODEL, api_key: str | None = None, limits: ServerLimits | None = None,
          **engine_kw: Any) -> Iterator[Served]:
    results: list[tuple[str, int, Result]] = []
    lock = threading.Lock()

    def keep(rid: str, i: int, r: Result) -> None:
        with lock:
            results.append((rid, i, r))

    engine = ServeEngine(backend, name, on_result=keep, **engine_kw)
    app = create_app(engine, api_key=api_key, limits=limits)
    with BackgroundServer(app) as url:
        # a generous timeout: the real-model tests run on 2 cores that may be busy
        client = OpenAI(base_url=f"{url}/v1", api_key=api_key or "unused", max_retries=0, timeout=300)
        yield Served(url, app, engine, backend, client, results)


def boxed(answer: str, words: int = 6) -> Callable[[GenRequest, int], str]:
    """A script entry: ``words`` words of reasoning then ``\\boxed{answer}`` (words + 1 tokens for the fake)."""
    return lambda req, j: " ".join(["think"] * words) + f" \\boxed{{{answer}}}"


def endless(answer: str = "42", words: int = 6) -> ScriptedBackend:
    """A fake that will not run out within any test (ScriptExhausted would be a test bug, not a server one)."""
    return ScriptedBackend([boxed(answer, words)] * 200_000)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
