"""The OpenAI-compatible HTTP app: ``create_app(engine)`` builds it; nothing lives at module level.

A request's life: auth -> read the body (size-capped) -> validate (strict pydantic; every failure is a 4xx OpenAI
error object naming the field) -> plan (strategy + Budget) -> admission (a slot, a queue place, or 429) -> the
strategy runs in a worker thread, its backend calls joining the backend's running batch -> the answer as content,
the thinking hidden unless asked for, usage summed from the ledgers. A client that goes away cancels its work: a
non-streaming handler polls for the disconnect, a streaming response is cancelled by the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from thinkscale.backends.base import BackendError, Cancelled
from thinkscale.server.admission import Admission, Ticket
from thinkscale.server.engine import (
    Outcome,
    Plan,
    ServeEngine,
    ServerLimits,
    Spent,
    choice_extension,
    usage_payload,
)
from thinkscale.server.errors import ApiError, error_body, from_validation_errors
from thinkscale.server.metrics import CONTENT_TYPE, Metrics
from thinkscale.server.schemas import ChatCompletionRequest, CompletionRequest
from thinkscale.types import Problem, Result

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5.0  # an SSE comment while thinking: keeps proxies from timing out an idle stream
POLL_SECONDS = 0.1  # how often a waiting non-streaming handler checks for a disconnect


class _ClientGone(Exception):
    pass


@dataclass(eq=False)
class _Job:
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

    def stop_work(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel.set()


class _CancelOnCloseStreamingResponse(StreamingResponse):
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


class _Observe:
    """Pure ASGI middleware (BaseHTTPMiddleware would break disconnect detection): request count and latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        t0 = time.perf_counter()

        async def observed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)  # type: ignore[arg-type]
        finally:
            ep = self.metrics.endpoint(scope.get("path", ""))
            self.metrics.requests.labels(ep, str(status[0])).inc()
            self.metrics.latency.labels(ep).observe(time.perf_counter() - t0)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def create_app(engine: ServeEngine, *, api_key: str | None = None, limits: ServerLimits | None = None) -> Any:
    """The FastAPI app serving ``engine``. ``api_key``: when set, every /v1 route and /metrics need
    ``Authorization: Bearer <api_key>`` (401 otherwise); /health stays open for liveness probes."""
    lim = limits or ServerLimits()
    admission = Admission(lim.max_concurrency, lim.max_queue)
    metrics = Metrics(queued=lambda: admission.queued, running=lambda: admission.running)
    # every choice of every running request has its own thread: strategies block in backend.generate
    executor = ThreadPoolExecutor(max_workers=lim.max_concurrency * lim.max_n, thread_name_prefix="thinkscale-serve")
    live: set[_Job] = set()
    bearer = HTTPBearer(auto_error=False, description="The server's --api-key (only when one is set)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for job in list(live):
            job.stop_work("shutdown")
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="thinkscale", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API with test-time compute scaling: the model thinks privately "
                              "(a strategy samples, votes, verifies), the answer is the content, and usage counts "
                              "every generated token.")
    app.state.engine = engine
    app.state.limits = lim
    app.state.metrics = metrics
    app.state.admission = admission
    app.state.jobs = live  # requests whose threads are running (for /health and tests)
    app.add_middleware(_Observe, metrics=metrics)

    # ------------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = from_validation_errors([{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()])
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"Unknown path {request.url.path!r}: see /docs", 405: f"Method {request.method} is not allowed "
               f"on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return JSONResponse(error_body(msg, type_="invalid_request_error", code=str(exc.status_code)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"internal server error ({type(exc).__name__}); see the server log",
                                       type_="server_error", code="internal_error"), status_code=500)

    # ------------------------------------------------------------------ helpers

    # (a default, not Annotated[]: string annotations are resolved in module globals, where ``bearer`` is not)
    def check_key(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if api_key is None:
            return
        given = creds.credentials.encode() if creds is not None else b""
        if not hmac.compare_digest(given, api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request, model: type[BaseModel]) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > lim.max_body_bytes:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {lim.max_body_bytes}",
                           code="request_too_large")
        buf = bytearray()
        try:
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > lim.max_body_bytes:
                    raise ApiError(413, f"request body is over the limit of {lim.max_body_bytes} bytes",
                                   code="request_too_large")
        except ClientDisconnect:
            raise ApiError(499, "the client closed the connection while sending the request",
                           code="cancelled") from None

        def no_constants(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")

        try:
            data = json.loads(bytes(buf), parse_constant=no_constants)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, f"Malformed JSON body: {str(e)[:200]}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"The request body must be a JSON object, got {type(data).__name__}",
                           code="invalid_value")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise from_validation_errors(e.errors()) from None

    def check_n(n: int, param: str) -> None:
        if n > lim.max_n:
            raise ApiError(400, f"{param}: {n} choices requested; this server gives at most {lim.max_n} per "
                                "request", param=param, code="invalid_value")

    def plan(body: ChatCompletionRequest | CompletionRequest) -> Plan:
        return engine.plan(model=body.model, limits=lim, reasoning_effort=body.reasoning_effort,
                           options=body.thinkscale, max_tokens=body.max_tokens,
                           max_completion_tokens=getattr(body, "max_completion_tokens", None),
                           temperature=body.temperature, top_p=body.top_p)

    def check_text(texts: list[tuple[str, str]]) -> None:
        total = 0
        for param, text in texts:
            if len(text) > lim.max_message_chars:
                raise ApiError(413, f"{param} is {len(text)} characters; the limit is {lim.max_message_chars}",
                               param=param, code="request_too_large")
            total += len(text)
        if total > lim.max_prompt_chars:
            raise ApiError(413, f"the prompt is {total} characters in all; the limit is {lim.max_prompt_chars}",
                           param=texts[0][0].split("[")[0] if texts else None, code="request_too_large")

    def new_seed(seed: int | None) -> int:
        return seed if seed is not None else secrets.randbits(31)

    def submit(job: _Job, ticket: Ticket) -> list[asyncio.Future[Result]]:
        """Start every choice in the pool. The ticket's slot is released when the last one ends (not when the
        handler returns: a cancelled request holds its slot until its threads have really stopped)."""
        metrics.queue_wait.observe(ticket.queue_seconds)
        loop = asyncio.get_running_loop()
        left = [len(job.choices)]
        lock = threading.Lock()

        def one_done(_: Future[Result]) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                admission.release_threadsafe(ticket, loop)
                with suppress(RuntimeError):  # the loop is closed at shutdown
                    loop.call_soon_threadsafe(finished, job)

        futures: list[Future[Result]] = []
        try:
            for i, (p, prob) in enumerate(job.choices):
                futures.append(executor.submit(engine.run, p, prob, seed=job.seed, index=i, cancel=job.cancel,
                                               spent=job.spent, response_id=job.id))
        except RuntimeError:  # the pool is shut down
            job.stop_work("shutdown")
            for f in futures:
                f.cancel()
            if not futures:
                raise ApiError(503, "the server is shutting down", code="unavailable") from None
        job.submitted = True
        live.add(job)
        if len(futures) < len(job.choices):  # some never started: count them as done
            for _ in range(len(job.choices) - len(futures)):
                one_done(Future())
        for f in futures:
            f.add_done_callback(one_done)
        wrapped = [asyncio.wrap_future(f) for f in futures]
        for w in wrapped:  # a client that left never reads its choices' errors: mark them read
            w.add_done_callback(lambda w: w.cancelled() or w.exception())
        return wrapped

    def failure(job: _Job, exc: BaseException) -> ApiError:
        """The client's view of a failed choice. Bad input never becomes a 5xx; backend trouble is 502/503."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, Cancelled) or job.cancel.is_set():
            if job.cancel_reason == "timeout":
                return ApiError(504, f"the request ran past the server's limit of {lim.request_timeout_s:g} s "
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

    def account(job: _Job, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            metrics.observe_ledger(o.result.ledger)
            metrics.observe_visibility(reasoning=o.reasoning_tokens, content=o.content_tokens)

    def count_cancelled(job: _Job) -> None:
        metrics.observe_cancelled(job.cancel_reason or "disconnect", job.spent.usage)

    def finished(job: _Job) -> None:
        """The job's last thread ended: count what a cancelled job generated before it stopped."""
        live.discard(job)
        if job.cancel.is_set():
            count_cancelled(job)

    async def wait(request: Request, job: _Job, aw: Awaitable[Any]) -> Any:
        """Await ``aw`` (the wait for a slot, or the job's threads) while watching the client and the deadline.
        When either is gone the job's cancel event stops its threads; a wait for a slot is simply abandoned."""
        task = asyncio.ensure_future(aw)
        deadline = job.arrived + lim.request_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, min(POLL_SECONDS,
                                                                          deadline - time.perf_counter())))
                if done:
                    return task.result()
                if await request.is_disconnected():
                    job.stop_work("disconnect")
                    raise _ClientGone()
                if time.perf_counter() >= deadline:
                    job.stop_work("timeout")
                    raise failure(job, Cancelled("timeout"))
        finally:
            if not task.done():
                task.cancel()
                with suppress(BaseException):
                    await task

    async def gather(job: _Job, futures: list[asyncio.Future[Result]]) -> list[Result]:
        """All choices' Results; on the first failure the siblings are cancelled and that failure raised."""
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
        for f in futures:
            exc = f.exception() if f in done else None
            if exc is not None:
                err = failure(job, exc)  # before stopping the siblings, which would make it look cancelled
                job.stop_work(job.cancel_reason or "sibling failed")
                raise err
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ responses

    def message(o: Outcome, reveal: bool) -> dict[str, Any]:
        m: dict[str, Any] = {"role": "assistant", "content": o.content, "refusal": None}
        if reveal:
            m["reasoning_content"] = o.reasoning  # DeepSeek's name
            m["reasoning"] = o.reasoning  # OpenRouter's / vLLM's name
        return m

    def render(job: _Job, results: list[Result], ticket: Ticket) -> dict[str, Any]:
        outcomes = [engine.outcome(r, stop=job.stop) for r in results]
        account(job, outcomes)
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
        return {"id": job.id, "object": "chat.completion" if job.kind == "chat" else "text_completion",
                "created": job.created, "model": job.model, "system_fingerprint": fingerprint(),
                "choices": choices,
                "usage": usage_payload(outcomes, wall_seconds=wall, queue_seconds=ticket.queue_seconds),
                "thinkscale": thinkscale_meta(job)}

    def fingerprint() -> str | None:
        try:
            return str(engine.backend.info().fingerprint)
        except Exception:  # noqa: BLE001 - optional: a backend that cannot describe itself has none
            return None

    def thinkscale_meta(job: _Job) -> dict[str, Any]:
        return {**job.choices[0][0].describe(), "seed": job.seed, "n_choices": len(job.choices)}

    async def respond(request: Request, job: _Job, stream: bool) -> Response:
        ticket = admission.admit()
        if ticket is None:
            metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, f"the server is busy: {admission.running} requests running and {admission.queued} "
                                "queued; retry later", code="queue_full",
                           headers={"Retry-After": str(admission.retry_after_seconds())})
        if stream:
            def on_close() -> None:
                if not job.responded:  # the stream was cut before its end: the client went away
                    job.stop_work("disconnect")
                    if not job.submitted:
                        count_cancelled(job)
                if not job.submitted:
                    ticket.release()
            return _CancelOnCloseStreamingResponse(sse(job, ticket), on_close, media_type="text/event-stream",
                                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await wait(request, job, admission.acquire(ticket))
            futures = submit(job, ticket)
            results = await wait(request, job, gather(job, futures))
            return JSONResponse(render(job, results, ticket))
        except _ClientGone:
            if not job.submitted:
                count_cancelled(job)
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        except ApiError as e:
            if job.cancel.is_set() and not job.submitted:
                count_cancelled(job)
            raise e from None
        finally:
            if not job.submitted:
                ticket.release()

    # ------------------------------------------------------------------ streaming

    def chunk(job: _Job, index: int, delta: dict[str, Any] | None, finish: str | None,
              extra: dict[str, Any] | None = None) -> str:
        if job.kind == "chat":
            choice: dict[str, Any] = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": index, "text": (delta or {}).get("content", ""), "logprobs": None,
                      "finish_reason": finish}
            if delta and "reasoning_content" in delta:
                choice["reasoning_content"] = delta["reasoning_content"]
            obj = "text_completion"
        if extra:
            choice.update(extra)
        body: dict[str, Any] = {"id": job.id, "object": obj, "created": job.created, "model": job.model,
                                "choices": [choice]}
        if job.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    def sse_error(err: ApiError) -> str:
        return f"data: {json.dumps(err.body())}\n\n"

    async def sse(job: _Job, ticket: Ticket) -> AsyncIterator[str]:
        deadline = job.arrived + lim.request_timeout_s
        try:
            for i in range(len(job.choices)):
                if job.kind == "chat":
                    yield chunk(job, i, {"role": "assistant", "content": ""}, None)
                elif job.echo:
                    yield chunk(job, i, {"content": job.echo[i]}, None)
            acquiring = asyncio.ensure_future(admission.acquire(ticket))
            try:
                while not acquiring.done():
                    await asyncio.wait({acquiring}, timeout=KEEPALIVE_SECONDS)
                    if not acquiring.done():
                        if time.perf_counter() >= deadline:
                            job.stop_work("timeout")
                            count_cancelled(job)
                            job.responded = True
                            yield sse_error(failure(job, Cancelled("timeout")))
                            return
                        yield ": queued\n\n"
            finally:
                if not acquiring.done():
                    acquiring.cancel()
            futures = submit(job, ticket)
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
                        yield sse_error(failure(job, Cancelled("timeout")))
                        return
                    yield ": thinking\n\n"
                    continue
                for f in sorted(done, key=index.__getitem__):
                    exc = f.exception()
                    if exc is not None:
                        err = failure(job, exc)
                        job.stop_work(job.cancel_reason or "sibling failed")
                        job.responded = True
                        yield sse_error(err)
                        return
                    # the answer of each choice goes out as soon as that choice is decided
                    o = engine.outcome(f.result(), stop=job.stop)
                    outcomes.append(o)
                    i = index[f]
                    if job.reveal and o.reasoning:
                        yield chunk(job, i, {"reasoning_content": o.reasoning, "reasoning": o.reasoning}
                                    if job.kind == "chat" else {"reasoning_content": o.reasoning}, None)
                    yield chunk(job, i, {"content": o.content}, None)
                    yield chunk(job, i, {}, o.finish_reason, {"thinkscale": choice_extension(o, reveal=job.reveal)})
            account(job, outcomes)
            if job.include_usage:
                wall = time.perf_counter() - (ticket.started_at or job.arrived)
                obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"
                body: dict[str, Any] = {"id": job.id, "object": obj,
                                        "created": job.created, "model": job.model, "choices": [],
                                        "usage": usage_payload(outcomes, wall_seconds=wall,
                                                               queue_seconds=ticket.queue_seconds),
                                        "thinkscale": thinkscale_meta(job)}
                yield f"data: {json.dumps(body)}\n\n"
            job.responded = True
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            job.stop_work("disconnect")
            raise
        except Exception as e:  # noqa: BLE001 - the status line is sent; report in-band, never a cut stream
            job.responded = True
            yield sse_error(failure(job, e))

    # ------------------------------------------------------------------ routes

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)],
              openapi_extra=_body_schema(ChatCompletionRequest),
              responses={400: {"description": "invalid request"}, 401: {"description": "bad API key"},
                         404: {"description": "unknown model"}, 413: {"description": "too large"},
                         429: {"description": "queue full"}})
    async def chat_completions(request: Request) -> Response:
        """Chat completion: the content is the final answer; usage counts the hidden reasoning too."""
        body: ChatCompletionRequest = await read_body(request, ChatCompletionRequest)
        if len(body.messages) > lim.max_messages:
            raise ApiError(413, f"{len(body.messages)} messages; the limit is {lim.max_messages}", param="messages",
                           code="request_too_large")
        texts = [(f"messages[{i}].content", m.text()) for i, m in enumerate(body.messages)]
        check_text(texts)
        n = body.n or 1
        check_n(n, "n")
        p = plan(body)
        rid = f"chatcmpl-{secrets.token_hex(12)}"
        prob = engine.problem([(m.role, m.text()) for m in body.messages], id=rid, param="messages")
        job = _Job("chat", rid, body.model, [(p, prob)] * n, new_seed(body.seed), body.stop_sequences(),
                   body.reveal(), body.include_usage())
        return await respond(request, job, bool(body.stream))

    @app.post("/v1/completions", dependencies=[Depends(check_key)], openapi_extra=_body_schema(CompletionRequest),
              responses={400: {"description": "invalid request"}, 401: {"description": "bad API key"},
                         404: {"description": "unknown model"}, 413: {"description": "too large"},
                         429: {"description": "queue full"}})
    async def completions(request: Request) -> Response:
        """Legacy completion: each prompt is sent as the user message of a chat (the model's template applies)."""
        body: CompletionRequest = await read_body(request, CompletionRequest)
        prompts = body.prompts()
        single = isinstance(body.prompt, str)
        check_text([("prompt" if single else f"prompt[{i}]", t) for i, t in enumerate(prompts)])
        n = body.n or 1
        check_n(len(prompts) * n, "n" if single else "prompt")
        p = plan(body)
        rid = f"cmpl-{secrets.token_hex(12)}"
        choices, echo = [], []
        for i, text in enumerate(prompts):
            prob = engine.problem([("user", text)], id=f"{rid}-{i}", param="prompt" if single else f"prompt[{i}]")
            choices += [(p, prob)] * n
            echo += [text] * n
        job = _Job("text", rid, body.model, choices, new_seed(body.seed), body.stop_sequences(), body.reveal(),
                   body.include_usage(), echo=echo if body.echo else None)
        return await respond(request, job, bool(body.stream))

    def model_object(mid: str, meta: dict[str, Any]) -> dict[str, Any]:
        return {"id": mid, "object": "model", "created": 0, "owned_by": "thinkscale", "thinkscale": meta}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def list_models() -> dict[str, Any]:
        """Every model id: the bare model (default effort), and one per strategy (``NAME:sc-N`` takes any N)."""
        return {"object": "list", "data": [model_object(m, meta) for m, meta in engine.model_ids()],
                "thinkscale": {"model": engine.model_name, "default_reasoning_effort": engine.default_effort,
                               "reasoning_effort": engine.effort_table(lim),
                               "strategy_ids": engine.catalogue.grammar(),
                               "strategies": engine.catalogue.describe(),
                               "limits": {k: getattr(lim, k) for k in lim.__dataclass_fields__}}}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(check_key)])
    async def get_model(model_id: str) -> dict[str, Any]:
        for mid, meta in engine.model_ids():
            if mid == model_id:
                return model_object(mid, meta)
        p = engine.plan(model=model_id, limits=lim)  # any valid id, e.g. NAME:sc-13, resolves; else 400/404
        return model_object(model_id, {"strategy": p.choice.name, "strategy_id": p.choice.id})

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = not engine.closed
        return JSONResponse({"status": "ok" if ok else "shutting_down", "model": engine.model_name,
                             "running": admission.running, "queued": admission.queued},
                            status_code=200 if ok else 503)

    @app.get("/metrics", dependencies=[Depends(check_key)])
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ChatCompletionRequest, CompletionRequest):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
