"""``GET /health``: liveness, open without the API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from thinkscale.server.state import State

router = APIRouter()


@router.get("/health")
async def health(state: State) -> JSONResponse:
    ok = not state.engine.closed
    return JSONResponse({"status": "ok" if ok else "shutting_down", "model": state.engine.model_name,
                         "running": state.admission.running, "queued": state.admission.queued},
                        status_code=200 if ok else 503)
