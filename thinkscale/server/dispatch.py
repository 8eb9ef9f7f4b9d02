"""Running a job: every choice in a worker thread of the app's pool, its slot held until the last thread ends;
waiting for it while watching the client and the deadline; and what a failure looks like to the client."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

from fastapi import Request

from thinkscale.backends.base import BackendError, Cancelled
from thinkscale.server.admission import Ticket
from thinkscale.server.engine import Outcome
from thinkscale.server.errors import ApiError
from thinkscale.server.job import ClientGone, Job
from thinkscale.server.state import ServerState
from thinkscale.types import Result

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a waiting non-streaming handler checks for a disconnect


def submit(state: ServerState, job: Job, ticket: Ticket) -> list[asyncio.Future[Result]]:
    """Start every choice in the pool. The ticket's slot is released when the last one ends (not when the
    handler returns: a cancelled request holds its slot until its threads have really stopped)."""
    state.metrics.queue_wait.observe(ticket.queue_seconds)
    loop = asyncio.get_running_loop()
    left = [len(job.choices)]
    lock = threading.Lock()

    def one_done(_: Future[Result]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            state.admission.release_threadsafe(ticket, loop)
            with suppress(RuntimeError):  # the loop is closed at shutdown
                loop.call_soon_threadsafe(finished, state, job)

    futures: list[Future[Result]] = []
    try:
        for i, (p, prob) in enumerate(job.choices):
            futures.append(state.executor.submit(state.engine.run, p, prob, seed=job.seed, index=i,
                                                 cancel=job.cancel, spent=job.spent, response_id=job.id))
    except RuntimeError:  # the pool is shut down
        job.stop_work("shutdown")
        for f in futures:
            f.cancel()
        if not futures:
            raise ApiError(503, "the server is shutting down", code="unavailable") from None
    job.submitted = True
    state.jobs.add(job)
    if len(futures) < len(job.choices):  # some never started: count them as done
        for _ in range(len(job.choices) - len(futures)):
            one_done(Future())
    for f in futures:
        f.add_done_callback(one_done)
    wrapped = [asyncio.wrap_future(f) for f in futures]
    for w in wrapped:  # a client that left never reads its choices' errors: mark them read
        w.add_done_callback(lambda w: w.cancelled() or w.exception())
    return wrapped


def failure(state: ServerState, job: Job, exc: BaseException) -> ApiError:
    """The client's view of a failed choice. Bad input never becomes a 5xx; backend trouble is 502/503."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled) or job.cancel.is_set():
        if job.cancel_reason == "timeout":
            return ApiError(504, f"the request ran past the server's limit of {state.limits.request_timeout_s:g} s "
                                 "and was cancelled", code="timeout")
        if job.cancel_reason == "shutdown":
            return ApiError(503, "the server is shutting down", code="unavailable")
        return ApiError(499, "the request was cancelled", code="cancelled")
    if isinstance(exc, NotImplementedError):
        return ApiError(400, f"the strategy needs something this backend cannot do: {exc}", code="unsupported")
    if isinstance(exc, ValueError):
        code = "context_length_exceeded" if "context" in str(exc) else "invalid_value"
        return ApiError(400, str(exc), param="messages" if code == "context_length_exceeded" else None,
                        code=code)
    if isinstance(exc, BackendError):
        log.warning("backend error in %s: %s", job.id, exc)
        return ApiError(502, f"the model backend failed: {exc}", code="backend_error")
    log.error("unexpected error in %s", job.id, exc_info=exc)
    return ApiError(500, f"internal server error ({type(exc).__name__}); see the server log",
                    code="internal_error")


def account(state: ServerState, outcomes: list[Outcome]) -> None:
    """Count a finished job's tokens in the metrics."""
    for o in outcomes:
        state.metrics.observe_ledger(o.result.ledger)
        state.metrics.observe_visibility(reasoning=o.reasoning_tokens, content=o.content_tokens)


def count_cancelled(state: ServerState, job: Job) -> None:
    state.metrics.observe_cancelled(job.cancel_reason or "disconnect", job.spent.usage)


def finished(state: ServerState, job: Job) -> None:
    """The job's last thread ended: count what a cancelled job generated before it stopped."""
    state.jobs.discard(job)
    if job.cancel.is_set():
        count_cancelled(state, job)


async def wait(state: ServerState, request: Request, job: Job, aw: Awaitable[Any]) -> Any:
    """Await ``aw`` (the wait for a slot, or the job's threads) while watching the client and the deadline.
    When either is gone the job's cancel event stops its threads; a wait for a slot is simply abandoned."""
    task = asyncio.ensure_future(aw)
    deadline = job.arrived + state.limits.request_timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, min(POLL_SECONDS,
                                                                      deadline - time.perf_counter())))
            if done:
                return task.result()
            if await request.is_disconnected():
                job.stop_work("disconnect")
                raise ClientGone()
            if time.perf_counter() >= deadline:
                job.stop_work("timeout")
                raise failure(state, job, Cancelled("timeout"))
    finally:
        if not task.done():
            task.cancel()
            with suppress(BaseException):
                await task


async def gather(state: ServerState, job: Job, futures: list[asyncio.Future[Result]]) -> list[Result]:
    """All choices' Results; on the first failure the siblings are cancelled and that failure raised."""
    done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
    for f in futures:
        exc = f.exception() if f in done else None
        if exc is not None:
            err = failure(state, job, exc)  # before stopping the siblings, which would make it look cancelled
            job.stop_work(job.cancel_reason or "sibling failed")
            raise err
    return [f.result() for f in futures]
