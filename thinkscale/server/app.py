"""The OpenAI-compatible HTTP app: ``create_app(engine)`` builds it; nothing lives at module level.

A request's life: auth (``auth``) -> read the body (size-capped) -> validate (strict pydantic; every failure is a
4xx OpenAI error object naming the field) -> plan (strategy + Budget; ``intake``) -> admission (a slot, a queue
place, or 429; ``respond``) -> the strategy runs in a worker thread, its backend calls joining the backend's running
batch (``dispatch``) -> the answer as content, the thinking hidden unless asked for, usage summed from the ledgers
(``respond``, or ``stream`` for server-sent events). A client that goes away cancels its work.

What the routes share (engine, limits, admission, metrics, worker pool, running jobs) is one ``ServerState`` per
app, kept on ``app.state.server`` and handed to each route by a dependency. The routes live in ``routes/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI

from thinkscale.server.engine import ServeEngine, ServerLimits
from thinkscale.server.handlers import Observe, install
from thinkscale.server.openapi import document
from thinkscale.server.routes import chat, completions, health, metrics, models
from thinkscale.server.state import ServerState


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    state: ServerState = app.state.server
    state.shutdown()


def _mount_viewer(app: Any, engine: ServeEngine, limits: ServerLimits, api_key: str | None) -> None:
    """The trace viewer at /ui (``thinkscale.viewer``), for live solves on the served model: only without an API
    key (a browser page sends none; with a key, run ``thinkscale view`` beside the server) and only on a backend
    that takes concurrent calls (the page's solves call it directly, beside the engine's)."""
    if api_key is not None or not engine.thread_safe:
        return
    from thinkscale.viewer.app import create_viewer_router
    from thinkscale.viewer.live import SolveLimits

    app.include_router(create_viewer_router(
        None, backend=engine.backend, system_prompt=engine.system_prompt,
        limits=SolveLimits(max_completion_tokens=limits.max_tokens_per_request,
                           max_seconds=limits.request_timeout_s)), prefix="/ui")


def create_app(engine: ServeEngine, *, api_key: str | None = None, limits: ServerLimits | None = None) -> Any:
    """The FastAPI app serving ``engine``. ``api_key``: when set, every /v1 route and /metrics need
    ``Authorization: Bearer <api_key>`` (401 otherwise); /health stays open for liveness probes."""
    state = ServerState.create(engine, api_key=api_key, limits=limits)
    app = FastAPI(title="thinkscale", version="0.1.0", lifespan=_lifespan,
                  description="OpenAI-compatible API with test-time compute scaling: the model thinks privately "
                              "(a strategy samples, votes, verifies), the answer is the content, and usage counts "
                              "every generated token.")
    app.state.server = state
    # the parts, by name, for operators and tests
    app.state.engine = engine
    app.state.limits = state.limits
    app.state.metrics = state.metrics
    app.state.admission = state.admission
    app.state.jobs = state.jobs  # requests whose threads are running (for /health and tests)
    app.add_middleware(Observe, metrics=state.metrics)
    install(app)
    for module in (chat, completions, models, health, metrics):
        app.include_router(module.router)
    _mount_viewer(app, engine, state.limits, api_key)
    # the document tells the truth about this server: auth only with a key, every status and media type
    app.openapi = partial(document, app, api_key=api_key, limits=state.limits)  # type: ignore[method-assign]
    return app
