"""From a planned job to the HTTP response: admission (a slot, a queue place, or 429), then a streamed response,
or the whole completion once every choice is done. A client that goes away cancels its work: a non-streaming
handler polls for the disconnect, a streaming response is cancelled by the server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from thinkscale.server.admission import Ticket
from thinkscale.server.dispatch import account, count_cancelled, gather, submit, wait
from thinkscale.server.engine import Outcome, ServeEngine, choice_extension, usage_payload
from thinkscale.server.errors import ApiError
from thinkscale.server.job import ClientGone, Job
from thinkscale.server.state import ServerState
from thinkscale.server.stream import sse
from thinkscale.types import Result


class CancelOnCloseStreamingResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends: finished, failed, or cut by a disconnect
    (the server cancels the response task, possibly while the body generator is suspended at a yield, when
    its own ``finally`` would only run at garbage collection)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def respond(state: ServerState, request: Request, job: Job, stream: bool) -> Response:
    """Admit ``job`` and answer it: streamed, or as one JSON completion (499 when the client left meanwhile)."""
    admission = state.admission
    ticket = admission.admit()
    if ticket is None:
        state.metrics.rejected.labels("queue_full").inc()
        raise ApiError(429, f"the server is busy: {admission.running} requests running and {admission.queued} "
                            "queued; retry later", code="queue_full",
                       headers={"Retry-After": str(admission.retry_after_seconds())})
    if stream:
        return _stream(state, job, ticket)
    try:
        await wait(state, request, job, admission.acquire(ticket))
        futures = submit(state, job, ticket)
        results = await wait(state, request, job, gather(state, job, futures))
        return JSONResponse(render(state, job, results, ticket))
    except ClientGone:
        if not job.submitted:
            count_cancelled(state, job)
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    except ApiError as e:
        if job.cancel.is_set() and not job.submitted:
            count_cancelled(state, job)
        raise e from None
    finally:
        if not job.submitted:
            ticket.release()


def _stream(state: ServerState, job: Job, ticket: Ticket) -> Response:
    def on_close() -> None:
        if not job.responded:  # the stream was cut before its end: the client went away
            job.stop_work("disconnect")
            if not job.submitted:
                count_cancelled(state, job)
        if not job.submitted:
            ticket.release()

    return CancelOnCloseStreamingResponse(sse(state, job, ticket), on_close, media_type="text/event-stream",
                                          headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def message(o: Outcome, reveal: bool) -> dict[str, Any]:
    """A chat choice's ``message``: the answer as content, the reasoning only when revealed."""
    m: dict[str, Any] = {"role": "assistant", "content": o.content, "refusal": None}
    if reveal:
        m["reasoning_content"] = o.reasoning  # DeepSeek's name
        m["reasoning"] = o.reasoning  # OpenRouter's / vLLM's name
    return m


def render(state: ServerState, job: Job, results: list[Result], ticket: Ticket) -> dict[str, Any]:
    """The whole (non-streamed) completion object of a finished job."""
    outcomes = [state.engine.outcome(r, stop=job.stop) for r in results]
    account(state, outcomes)
    wall = time.perf_counter() - (ticket.started_at or job.arrived)
    choices = []
    for i, o in enumerate(outcomes):
        ext = choice_extension(o, reveal=job.reveal)
        if job.kind == "chat":
            choices.append({"index": i, "message": message(o, job.reveal), "logprobs": None,
                            "finish_reason": o.finish_reason, "thinkscale": ext})
        else:
            text = (job.echo[i] if job.echo else "") + o.content
            c: dict[str, Any] = {"index": i, "text": text, "logprobs": None, "finish_reason": o.finish_reason,
                                 "thinkscale": ext}
            if job.reveal:
                c["reasoning_content"] = o.reasoning
            choices.append(c)
    return {"id": job.id, "object": job.object_name, "created": job.created, "model": job.model,
            "system_fingerprint": fingerprint(state.engine), "choices": choices,
            "usage": usage_payload(outcomes, wall_seconds=wall, queue_seconds=ticket.queue_seconds),
            "thinkscale": job.meta()}


def fingerprint(engine: ServeEngine) -> str | None:
    try:
        return str(engine.backend.info().fingerprint)
    except Exception:  # noqa: BLE001 - optional: a backend that cannot describe itself has none
        return None
