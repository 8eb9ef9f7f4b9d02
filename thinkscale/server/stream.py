"""A streamed response (``"stream": true``): server-sent events, one choice's answer as soon as it is decided.

The status line goes out before any work starts, so a failure after it is reported in-band as an error event, never
as a cut stream. While the request waits for a slot or thinks, an SSE comment every few seconds keeps proxies from
timing out the idle connection."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from thinkscale.backends.base import Cancelled
from thinkscale.server.admission import Ticket
from thinkscale.server.dispatch import account, count_cancelled, failure, submit
from thinkscale.server.engine import Outcome, choice_extension, usage_payload
from thinkscale.server.errors import ApiError
from thinkscale.server.job import Job
from thinkscale.server.state import ServerState
from thinkscale.types import Result

KEEPALIVE_SECONDS = 5.0  # an SSE comment while thinking: keeps proxies from timing out an idle stream


def chunk(job: Job, index: int, delta: dict[str, Any] | None, finish: str | None,
          extra: dict[str, Any] | None = None) -> str:
    """One choice's delta as an SSE event: a chat ``delta``, or the ``text`` of a legacy completion."""
    if job.kind == "chat":
        choice: dict[str, Any] = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": index, "text": (delta or {}).get("content", ""), "logprobs": None,
                  "finish_reason": finish}
        if delta and "reasoning_content" in delta:
            choice["reasoning_content"] = delta["reasoning_content"]
    if extra:
        choice.update(extra)
    body: dict[str, Any] = {"id": job.id, "object": job.chunk_object_name, "created": job.created,
                            "model": job.model, "choices": [choice]}
    if job.include_usage:
        body["usage"] = None
    return f"data: {json.dumps(body)}\n\n"


def sse_error(err: ApiError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"


def usage_chunk(job: Job, outcomes: list[Outcome], ticket: Ticket) -> str:
    """The last event when the client asked for ``stream_options.include_usage``: no choices, the usage."""
    wall = time.perf_counter() - (ticket.started_at or job.arrived)
    body: dict[str, Any] = {"id": job.id, "object": job.chunk_object_name, "created": job.created,
                            "model": job.model, "choices": [],
                            "usage": usage_payload(outcomes, wall_seconds=wall, queue_seconds=ticket.queue_seconds),
                            "thinkscale": job.meta()}
    return f"data: {json.dumps(body)}\n\n"


async def sse(state: ServerState, job: Job, ticket: Ticket) -> AsyncIterator[str]:
    """The event stream of ``job``: the opening deltas, the wait for a slot, each choice's answer, the usage."""
    deadline = job.arrived + state.limits.request_timeout_s
    try:
        for i in range(len(job.choices)):
            if job.kind == "chat":
                yield chunk(job, i, {"role": "assistant", "content": ""}, None)
            elif job.echo:
                yield chunk(job, i, {"content": job.echo[i]}, None)
        acquiring = asyncio.ensure_future(state.admission.acquire(ticket))
        try:
            while not acquiring.done():
                await asyncio.wait({acquiring}, timeout=KEEPALIVE_SECONDS)
                if not acquiring.done():
                    if time.perf_counter() >= deadline:
                        job.stop_work("timeout")
                        count_cancelled(state, job)
                        job.responded = True
                        yield sse_error(failure(state, job, Cancelled("timeout")))
                        return
                    yield ": queued\n\n"
        finally:
            if not acquiring.done():
                acquiring.cancel()
        futures = submit(state, job, ticket)
        index = {f: i for i, f in enumerate(futures)}
        pending: set[asyncio.Future[Result]] = set(futures)
        outcomes: list[Outcome] = []
        while pending:
            done, pending = await asyncio.wait(pending, timeout=KEEPALIVE_SECONDS,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if time.perf_counter() >= deadline:
                    job.stop_work("timeout")
                    job.responded = True
                    yield sse_error(failure(state, job, Cancelled("timeout")))
                    return
                yield ": thinking\n\n"
                continue
            for f in sorted(done, key=index.__getitem__):
                exc = f.exception()
                if exc is not None:
                    err = failure(state, job, exc)
                    job.stop_work(job.cancel_reason or "sibling failed")
                    job.responded = True
                    yield sse_error(err)
                    return
                # the answer of each choice goes out as soon as that choice is decided
                o = state.engine.outcome(f.result(), stop=job.stop)
                outcomes.append(o)
                i = index[f]
                if job.reveal and o.reasoning:
                    yield chunk(job, i, {"reasoning_content": o.reasoning, "reasoning": o.reasoning}
                                if job.kind == "chat" else {"reasoning_content": o.reasoning}, None)
                yield chunk(job, i, {"content": o.content}, None)
                yield chunk(job, i, {}, o.finish_reason, {"thinkscale": choice_extension(o, reveal=job.reveal)})
        account(state, outcomes)
        if job.include_usage:
            yield usage_chunk(job, outcomes, ticket)
        job.responded = True
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        job.stop_work("disconnect")
        raise
    except Exception as e:  # noqa: BLE001 - the status line is sent; report in-band, never a cut stream
        job.responded = True
        yield sse_error(failure(state, job, e))
