"""``POST /v1/chat/completions``."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from thinkscale.server.auth import check_key
from thinkscale.server.errors import ApiError
from thinkscale.server.intake import body_schema, check_n, check_text, new_seed, plan, read_body
from thinkscale.server.job import Job
from thinkscale.server.respond import respond
from thinkscale.server.schemas import ChatCompletionRequest
from thinkscale.server.state import State

router = APIRouter()


@router.post("/v1/chat/completions", dependencies=[Depends(check_key)],
             openapi_extra=body_schema(ChatCompletionRequest))
async def chat_completions(request: Request, state: State) -> Response:
    """Chat completion: the content is the final answer; usage counts the hidden reasoning too."""
    lim = state.limits
    body = await read_body(request, ChatCompletionRequest, lim)
    if len(body.messages) > lim.max_messages:
        raise ApiError(413, f"{len(body.messages)} messages; the limit is {lim.max_messages}", param="messages",
                       code="request_too_large")
    texts = [(f"messages[{i}].content", m.text()) for i, m in enumerate(body.messages)]
    check_text(texts, lim)
    n = body.n or 1
    check_n(n, "n", lim)
    p = plan(state, body)
    rid = f"chatcmpl-{secrets.token_hex(12)}"
    prob = state.engine.problem([(m.role, m.text()) for m in body.messages], id=rid, param="messages")
    job = Job("chat", rid, body.model, [(p, prob)] * n, new_seed(body.seed), body.stop_sequences(),
              body.reveal(), body.include_usage())
    return await respond(state, request, job, bool(body.stream))
