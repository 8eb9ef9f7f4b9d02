"""``POST /v1/completions`` (the legacy text completion)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from thinkscale.server.auth import check_key
from thinkscale.server.engine import Plan
from thinkscale.server.intake import body_schema, check_n, check_text, new_seed, plan, read_body
from thinkscale.server.job import Job
from thinkscale.server.respond import respond
from thinkscale.server.schemas import CompletionRequest
from thinkscale.server.state import State
from thinkscale.types import Problem

router = APIRouter()


@router.post("/v1/completions", dependencies=[Depends(check_key)], openapi_extra=body_schema(CompletionRequest))
async def completions(request: Request, state: State) -> Response:
    """Legacy completion: each prompt is sent as the user message of a chat (the model's template applies)."""
    body = await read_body(request, CompletionRequest, state.limits)
    prompts = body.prompts()
    single = isinstance(body.prompt, str)
    check_text([("prompt" if single else f"prompt[{i}]", t) for i, t in enumerate(prompts)], state.limits)
    n = body.n or 1
    check_n(len(prompts) * n, "n" if single else "prompt", state.limits)
    p = plan(state, body)
    rid = f"cmpl-{secrets.token_hex(12)}"
    choices: list[tuple[Plan, Problem]] = []
    echo: list[str] = []
    for i, text in enumerate(prompts):
        prob = state.engine.problem([("user", text)], id=f"{rid}-{i}", param="prompt" if single else f"prompt[{i}]")
        choices += [(p, prob)] * n
        echo += [text] * n
    job = Job("text", rid, body.model, choices, new_seed(body.seed), body.stop_sequences(), body.reveal(),
              body.include_usage(), echo=echo if body.echo else None)
    return await respond(state, request, job, bool(body.stream))
