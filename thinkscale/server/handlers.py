"""What wraps every route: the exception handlers (every failure is an OpenAI error object) and the middleware that
counts requests and their latency."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from thinkscale.server.errors import ApiError, error_body, from_validation_errors
from thinkscale.server.metrics import Metrics

log = logging.getLogger(__name__)


class Observe:
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


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = from_validation_errors([{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()])
    return JSONResponse(err.body(), status_code=400)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    msg = {404: f"Unknown path {request.url.path!r}: see /docs", 405: f"Method {request.method} is not allowed "
           f"on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(error_body(msg, type_="invalid_request_error", code=str(exc.status_code)),
                        status_code=exc.status_code, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(f"internal server error ({type(exc).__name__}); see the server log",
                                   type_="server_error", code="internal_error"), status_code=500)


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(Exception)(unexpected_error)

