"""One HTTP request's work, as the server tracks it from admission to the last byte of the response."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from thinkscale.server.engine import Plan, Spent
from thinkscale.types import Problem


class ClientGone(Exception):
    """The client disconnected while its non-streaming request waited: nobody reads the response."""


@dataclass(eq=False)
class Job:
    """One HTTP request's work: one (plan, problem) per choice, and the state shared by its worker threads."""

    kind: Literal["chat", "text"]
    id: str
    model: str
    choices: list[tuple[Plan, Problem]]
    seed: int
    stop: tuple[str, ...]
    reveal: bool
    include_usage: bool
    echo: list[str] | None = None  # /v1/completions echo: the prompt of each choice
    created: int = field(default_factory=lambda: int(time.time()))
    arrived: float = field(default_factory=time.perf_counter)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    spent: Spent = field(default_factory=Spent)
    submitted: bool = False
    responded: bool = False  # the whole response (or an error object) went out

    @property
    def object_name(self) -> str:
        """The OpenAI ``object`` of the whole response."""
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object_name(self) -> str:
        """The OpenAI ``object`` of one streamed chunk."""
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def stop_work(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel.set()

    def meta(self) -> dict[str, Any]:
        """The response-level ``thinkscale`` object: how the request was planned."""
        return {**self.choices[0][0].describe(), "seed": self.seed, "n_choices": len(self.choices)}
