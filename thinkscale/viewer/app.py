"""The viewer's routes: the page, its static files, a JSON API over a run folder or a trace file, and the live solve.

``create_viewer_router(source, backend=...)`` returns a FastAPI ``APIRouter`` that works at any prefix (the page uses
relative URLs): ``thinkscale view`` serves it at ``/`` (``create_viewer_app``), ``thinkscale serve`` may include it
at ``/ui``. Routes, relative to the prefix:

- ``GET /``: the page (hand-written HTML, JS and CSS in ``static/``; nothing is fetched from elsewhere).
- ``GET /static/{name}``: ``viewer.js`` and ``viewer.css``.
- ``GET /api/source``: what is loaded (a run, a trace, nothing), whether solving is on, the strategies.
- ``GET /api/run``: the run's problem table (one row per unit) and what it holds.
- ``GET /api/job/{job_id}``: one job's view (``model.build_view``).
- ``GET /api/trace``: the trace file's view.
- ``POST /api/solve``: JSON ``{"problem", "strategy", "budget_tokens", "budget_calls", "seed", "reference",
  "task"}`` -> ``text/event-stream`` (``live.stream_solve``). JSON only, so a page on another site cannot post to it
  without a CORS preflight, which this router never answers.

Bad input (a job that is not in the run, a malformed solve request, a trace asked of a run) is a JSON error
``{"error": "..."}`` with a 4xx status, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from thinkscale.backends.base import Backend
from thinkscale.prompts import MATH_SYSTEM
from thinkscale.strategies import base as strategies
from thinkscale.viewer.live import (
    BUSY,
    Slots,
    SolveLimits,
    SolveRequest,
    StrategyBuilder,
    build_page_strategy,
    stream_solve,
)
from thinkscale.viewer.model import jsonable
from thinkscale.viewer.sources import RunSource, Source, TraceSource, ViewerError

STATIC = {"viewer.js": "text/javascript; charset=utf-8", "viewer.css": "text/css; charset=utf-8"}
# The page runs only its own script and style; model text is never HTML (textContent), and this is the second lock.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _asset(name: str) -> bytes:
    return (resources.files("thinkscale.viewer") / "static" / name).read_bytes()


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def ok(data: Any) -> JSONResponse:
    return JSONResponse(jsonable(data), headers=HEADERS)


def create_viewer_router(source: Source | None = None, *, backend: Backend | None = None,
                         build_strategy: StrategyBuilder = build_page_strategy,
                         system_prompt: str | None = MATH_SYSTEM, limits: SolveLimits | None = None,
                         max_concurrent_solves: int = 1) -> APIRouter:
    """The viewer's routes over ``source`` (a run folder or trace file from ``sources.load_source``; None: only
    the solve form). ``backend``: the model the page solves with (None: solving is off). ``build_strategy``: spec
    -> strategy for the page's specs (default: refuses the knobs that name server files; a server passes its own
    catalogue's builder). ``system_prompt``: the system message of every page problem. ``limits``: the budget and
    problem size a page may ask for. ``max_concurrent_solves``: runs at once (more get an error, not a queue)."""
    lim = limits or SolveLimits()
    slots = Slots(max_concurrent_solves)
    page = _asset("index.html")
    assets = {name: _asset(name) for name in STATIC}
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            return error(f"no static file {name!r}", 404)
        return Response(assets[name], media_type=STATIC[name], headers=HEADERS)

    @router.get("/api/source", include_in_schema=False)
    def describe() -> JSONResponse:
        strategies.load_all()
        return ok({"source": None if source is None else source.describe(), "solve": backend is not None,
                   "strategies": [{"name": n, "summary": strategies.REGISTRY[n].summary}
                                  for n in sorted(strategies.REGISTRY)],
                   "limits": {"max_completion_tokens": lim.max_completion_tokens, "max_seconds": lim.max_seconds}})

    @router.get("/api/run", include_in_schema=False)
    def run_summary() -> JSONResponse:
        if not isinstance(source, RunSource):
            return error(_not_loaded("a run folder"), 404)
        return _guard(source.summary)

    @router.get("/api/job/{job_id}", include_in_schema=False)
    def job(job_id: str) -> JSONResponse:
        if not isinstance(source, RunSource):
            return error(_not_loaded("a run folder"), 404)
        if not job_id.isdigit() or len(job_id) > 18:
            return error(f"job id {job_id[:40]!r} is not a number", 400)
        return _guard(lambda: source.job(int(job_id)))

    @router.get("/api/trace", include_in_schema=False)
    def trace() -> JSONResponse:
        if not isinstance(source, TraceSource):
            return error(_not_loaded("a trace file"), 404)
        return _guard(source.view)

    @router.post("/api/solve", include_in_schema=False)
    async def solve(request: Request) -> Response:
        if backend is None:
            return error("solving from the page is off: start the viewer with a model (`thinkscale view --model "
                         "NAME`), or use the /ui page of `thinkscale serve`", 409)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return error("send the solve request as JSON (Content-Type: application/json)", 415)
        try:
            req = SolveRequest.parse(json.loads(await request.body() or b"null"), lim)
            strategy = build_strategy(req.strategy)
        except ViewerError as e:
            return error(str(e), e.status)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error("the solve request is not valid JSON")
        except ValueError as e:
            return error(f"strategy: {e}")
        if not slots.any_free():  # the answer for the common case; stream_solve takes the slot itself
            return error(BUSY, 429)
        return StreamingResponse(stream_solve(req, strategy, backend, system_prompt, slots, request.is_disconnected),
                                 media_type="text/event-stream",
                                 headers={**HEADERS, "X-Accel-Buffering": "no"})

    @router.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def unknown(rest: str) -> JSONResponse:
        return error(f"no viewer API route /api/{rest[:80]}", 404)

    return router


def _guard(fn: Any) -> JSONResponse:
    try:
        return ok(fn())
    except ViewerError as e:
        return error(str(e), e.status)


def _not_loaded(what: str) -> str:
    return (f"this viewer was not started with {what} (`thinkscale view RUN_DIR` shows a run, "
            "`thinkscale view TRACE.json` a trace)")


def create_viewer_app(source: Source | None = None, *, backend: Backend | None = None,
                      allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS, **router_options: Any) -> FastAPI:
    """A FastAPI app serving the viewer at ``/`` (what ``thinkscale view`` runs). ``allowed_hosts``: the Host
    headers it answers (default loopback names only, so a web page cannot reach it through DNS rebinding; None:
    any, for a viewer bound to another interface)."""
    app = FastAPI(title="thinkscale viewer", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.include_router(create_viewer_router(source, backend=backend, **router_options))
    return app
