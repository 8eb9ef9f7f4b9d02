"""Solving from the page: one strategy run on the viewer's backend, its trace streamed as server-sent events.

The run is an ordinary ``Run`` (``thinkscale.strategies.run``) made here rather than by ``execute``, so that its
events list can be a ``_Recorder``: every event the run context (or the strategy) records is handed to the stream
the moment it is appended, from the worker thread that runs the strategy. The stream is::

    event: start   data: {"strategy", "spec", "budget", "problem"}
    event: trace   data: {"i", "kind", "summary", "event"}        (one per event, as recorded)
    event: result  data: the run's view (``model.build_view``): candidates, vote, tree, cost table, ...
    event: error   data: {"error": "..."}                          (instead of result, when the run failed)

A client that goes away cancels the run: the backend is wrapped so that its next call raises ``Cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from thinkscale.answers.equivalence import check
from thinkscale.answers.task import Task, Verdict
from thinkscale.backends.base import Backend, BackendProxy, Cancelled
from thinkscale.strategies import base as strategies
from thinkscale.strategies.run import Run, strategy_name
from thinkscale.types import Budget, Event, Ledger, Problem, Result
from thinkscale.viewer.model import CandidateRow, RunRecord, build_view, jsonable, timeline_item
from thinkscale.viewer.sources import ViewerError

log = logging.getLogger(__name__)

StrategyBuilder = Callable[[str], Any]


def build_page_strategy(spec: str) -> Any:
    """The strategy a page's spec names. Knobs that name files or resources on this machine (a PRM file, a policy,
    the sandbox's limits) cannot be set from a page; the operator sets them where the viewer is started."""
    name, values = strategies.parse_spec(spec)
    strategies.knobs(name)  # ValueError naming the strategies when the name is unknown
    refused = sorted(set(values) & (strategies.operator_knobs(name) | strategies.FILE_KNOBS))
    if refused:
        raise ValueError(f"knob(s) {', '.join(refused)} of {name!r} name files or resources on the server and cannot "
                         "be set from the page")
    return strategies.build_strategy(spec)


@dataclass(frozen=True)
class SolveLimits:
    """What a page may ask for: a completion-token budget up to ``max_completion_tokens`` (the default when the
    form leaves it empty), ``max_seconds`` of wall time per run, ``max_problem_chars`` of problem text."""

    max_completion_tokens: int = 16384
    max_seconds: float = 600.0
    max_problem_chars: int = 20000


@dataclass(frozen=True)
class SolveRequest:
    problem: str
    strategy: str
    budget: Budget
    seed: int
    reference: str | None
    task: Task

    @staticmethod
    def parse(body: Any, limits: SolveLimits) -> SolveRequest:
        """The form's JSON body, checked; ViewerError (400) naming the field otherwise."""
        if not isinstance(body, dict):
            raise ViewerError("the solve request must be a JSON object")
        unknown = set(body) - {"problem", "strategy", "budget_tokens", "budget_calls", "seed", "reference", "task"}
        if unknown:
            raise ViewerError(f"unknown field(s) {', '.join(sorted(unknown))}")
        problem = body.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            raise ViewerError("problem: write the problem to solve")
        if len(problem) > limits.max_problem_chars:
            raise ViewerError(f"problem: {len(problem)} characters, more than the {limits.max_problem_chars} allowed")
        spec = body.get("strategy") or "greedy"
        if not isinstance(spec, str):
            raise ViewerError("strategy: a spec such as self-consistency:n_samples=8")
        tokens = _int_field(body, "budget_tokens", limits.max_completion_tokens)
        if tokens > limits.max_completion_tokens:
            raise ViewerError(f"budget_tokens: {tokens} is more than the {limits.max_completion_tokens} this viewer "
                              "allows")
        calls = _int_field(body, "budget_calls", None)
        seed = _int_field(body, "seed", 0, low=0)
        reference = body.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise ViewerError("reference: the right answer as text, or nothing")
        try:
            task = Task(body.get("task") or "numeric")
        except ValueError:
            raise ViewerError(f"task: one of {', '.join(t.value for t in Task)}") from None
        return SolveRequest(problem, spec, Budget(max_completion_tokens=tokens, max_calls=calls,
                                                  max_seconds=limits.max_seconds),
                            seed, (reference or "").strip() or None, task)


def _int_field(body: dict[str, Any], name: str, default: Any, *, low: int = 1) -> Any:
    v = body.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v.strip())
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ViewerError(f"{name}: a whole number >= {low}, got {v!r}")
    return v


class Slots:
    """At most ``n`` solves at once; a solve that finds none free is refused, not queued."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"max_concurrent_solves must be >= 1, got {n}")
        self._free = n
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self._free += 1

    def any_free(self) -> bool:
        with self._lock:
            return self._free > 0


class _Recorder(list[Event]):
    """A run's events list that hands each event to ``sink`` as it is recorded (from the strategy's thread)."""

    def __init__(self, sink: Callable[[Event], None]) -> None:
        super().__init__()
        self._sink = sink

    def append(self, e: Event) -> None:
        super().append(e)
        self._sink(e)

    def extend(self, events: Any) -> None:
        for e in events:
            self.append(e)


class _Cancellable(BackendProxy):
    """The viewer's backend for one run: each call first checks whether the page went away."""

    def __init__(self, inner: Backend, cancel: threading.Event) -> None:
        super().__init__(inner)
        self._cancel = cancel

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the page that asked for this solve went away")

    def generate(self, requests: Any) -> Any:
        self._check()
        return super().generate(requests)

    def score(self, requests: Any) -> Any:
        self._check()
        return super().score(requests)

    def hidden_states(self, requests: Any) -> Any:
        self._check()
        return self.inner.hidden_states(requests)  # type: ignore[attr-defined]


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; ``data`` as one line of JSON (non-finite floats as strings)."""
    return f"event: {event}\ndata: {json.dumps(jsonable(data), separators=(',', ':'))}\n\n".encode()


async def stream_solve(req: SolveRequest, strategy: Any, backend: Backend, system: str | None,
                       slots: Slots, gone: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
    """Run ``strategy`` on the problem in a worker thread and yield its events as they are recorded, then the
    result (or the error). A slot of ``slots`` is taken here (an error event when none is free) and given back when
    the worker has finished, so a page that goes away frees it once its run has stopped. ``gone``: whether the
    client has disconnected (asked while no event comes; a server does not always notice a closed stream when it
    writes)."""
    if not slots.take():
        yield sse("error", {"error": BUSY})
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
        except RuntimeError:  # the server stopped (its loop is closed) while the run went on: nobody listens
            cancel.set()

    ctx = Run(problem=Problem.from_text(req.problem, system=system),  # the reference grades, it is not shown
              backend=_Cancellable(backend, cancel), budget=req.budget, rng=random.Random(req.seed), ledger=Ledger(),
              strategy=strategy_name(strategy), events=_Recorder(lambda e: put("event", e)))

    def work() -> None:
        try:
            put("result", _result_view(strategy.run(ctx), req))
        except Exception as e:  # every failure becomes the stream's error event; the page says what went wrong
            if not isinstance(e, Cancelled):
                log.warning("solve from the page failed: %s: %s", type(e).__name__, e, exc_info=True)
            put("error", f"{type(e).__name__}: {e}")
        finally:
            ctx.close()
            slots.give()
            put("end", None)

    threading.Thread(target=work, name="thinkscale-viewer-solve", daemon=True).start()
    try:
        yield sse("start", {"strategy": ctx.strategy, "spec": req.strategy, "problem": req.problem,
                            "budget": {"max_completion_tokens": req.budget.max_completion_tokens,
                                       "max_calls": req.budget.max_calls, "max_seconds": req.budget.max_seconds}})
        n, quiet = 0, 0.0
        while True:
            try:
                kind, item = await asyncio.wait_for(queue.get(), POLL_SECONDS)
            except TimeoutError:
                if await gone():
                    return
                quiet += POLL_SECONDS
                if quiet >= KEEPALIVE_SECONDS:  # a comment line, so proxies keep a long quiet run's stream open
                    quiet = 0.0
                    yield b": still running\n\n"
                continue
            quiet = 0.0
            if kind == "event":
                yield sse("trace", timeline_item(n, item))
                n += 1
            elif kind in ("result", "error"):
                yield sse(kind, item if kind == "result" else {"error": item})
            else:
                return
    finally:
        cancel.set()  # the page went away (or the stream ended): the run stops at its next backend call


POLL_SECONDS = 0.25  # how often a quiet stream checks that its page is still there
KEEPALIVE_SECONDS = 15.0
BUSY = "another solve is running on this viewer; wait for it to finish"


def _result_view(result: Result, req: SolveRequest) -> dict[str, Any]:
    """The finished run's view, its candidates graded when the page gave a reference."""

    def grade(answer: str | None) -> bool | None:
        if req.reference is None:
            return None
        try:
            return check(req.task, answer, req.reference) is Verdict.EQUIVALENT
        except ValueError:
            return None

    cands = tuple(CandidateRow(i, c.answer, c.text, c.completion_tokens, c.finish_reason, c.scores,
                               i == result.chosen_index, grade(c.answer)) for i, c in enumerate(result.candidates))
    rec = RunRecord(strategy=result.strategy, events=result.trace, spec=req.strategy, answer=result.answer,
                    stop_reason=result.stop_reason, candidates=cands, ledger=result.ledger.to_dict(),
                    problem={"id": "from the page", "text": req.problem, "reference": req.reference},
                    correct=None if req.reference is None else grade(result.answer),
                    knobs=_knobs(req.strategy), extra={"seed": req.seed})
    return build_view(rec)


def _knobs(spec: str) -> dict[str, Any]:
    try:
        return dict(strategies.parse_spec(spec)[1])
    except ValueError:
        return {}
