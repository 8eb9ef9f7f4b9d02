"""``GET /v1/models`` and ``GET /v1/models/{model_id}``: the model ids this server answers to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from thinkscale.server.auth import check_key
from thinkscale.server.state import State

router = APIRouter()


def model_object(mid: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"id": mid, "object": "model", "created": 0, "owned_by": "thinkscale", "thinkscale": meta}


@router.get("/v1/models", dependencies=[Depends(check_key)])
async def list_models(state: State) -> dict[str, Any]:
    """Every model id: the bare model (default effort), and one per strategy (``NAME:sc-N`` takes any N)."""
    engine, lim = state.engine, state.limits
    return {"object": "list", "data": [model_object(m, meta) for m, meta in engine.model_ids()],
            "thinkscale": {"model": engine.model_name, "default_reasoning_effort": engine.default_effort,
                           "reasoning_effort": engine.effort_table(lim),
                           "strategy_ids": engine.catalogue.grammar(),
                           "strategies": engine.catalogue.describe(),
                           "limits": {k: getattr(lim, k) for k in lim.__dataclass_fields__}}}


@router.get("/v1/models/{model_id:path}", dependencies=[Depends(check_key)])
async def get_model(model_id: str, state: State) -> dict[str, Any]:
    for mid, meta in state.engine.model_ids():
        if mid == model_id:
            return model_object(mid, meta)
    p = state.engine.plan(model=model_id, limits=state.limits)  # any valid id, e.g. NAME:sc-13, resolves; else 400/404
    return model_object(model_id, {"strategy": p.choice.name, "strategy_id": p.choice.id})
