"""``GET /metrics``: the app's Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from thinkscale.server.auth import check_key
from thinkscale.server.metrics import CONTENT_TYPE
from thinkscale.server.state import State

router = APIRouter()


@router.get("/metrics", dependencies=[Depends(check_key)])
async def metrics_route(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
