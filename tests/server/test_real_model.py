"""The server on the real smallest model (smollm2-135m, embedded llama.cpp), through the official openai client.

Counts are checked three ways: the response's usage, the strategy's ledger, and the backend's own counters of what
it handed to llama_decode. Kept short (a few dozen tokens per request): the machine has 2 cores."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server.harness import serve, wait_until
from thinkscale.types import Usage

pytestmark = pytest.mark.model

NAME = "smollm2-135m"
SYSTEM = "Solve the problem. Think step by step, then write the final answer as \\boxed{ANSWER}."
Q = [{"role": "user", "content": "What is 2 + 3?"}]


def delta(backend, before: dict[str, int]) -> dict[str, int]:
    return {k: backend.counters[k] - before[k] for k in before}


def test_usage_equals_the_ledger_and_what_the_backend_computed(llama_backend):
    with serve(llama_backend, name=NAME, system_prompt=SYSTEM) as s:
        before = dict(llama_backend.counters)
        r = s.client.chat.completions.create(model=f"{NAME}:sc-2", messages=Q, max_tokens=24, seed=1)
        d = delta(llama_backend, before)
        (result,) = s.ledger_results(r.id)
    total = result.ledger.total()
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.cached_tokens) == \
        (total.prompt_tokens, total.completion_tokens, total.cached_prompt_tokens)
    assert u.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    # the prompt tokens not served from the prefix cache are exactly the ones llama.cpp computed
    assert d["prompt_tokens_decoded"] == u.prompt_tokens - u.prompt_tokens_details.cached_tokens
    assert 2 <= u.completion_tokens <= 2 * 24
    content = r.choices[0].message.content
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    reasoning = u.completion_tokens_details.reasoning_tokens
    visible = u.thinkscale["content_tokens"]  # type: ignore[attr-defined]
    assert reasoning + visible == u.completion_tokens and reasoning >= 0
    if result.answer is not None:
        assert content == result.answer and visible == len(llama_backend.tokenize(content)) - \
            len(llama_backend.tokenize(""))


def test_reasoning_hidden_then_revealed_is_the_same_chain(llama_backend):
    """Greedy is deterministic: the same request with the reasoning revealed shows the chain the answer came from,
    and every count is unchanged."""
    with serve(llama_backend, name=NAME, system_prompt=SYSTEM) as s:
        hidden = s.client.chat.completions.create(model=f"{NAME}:greedy", messages=Q, max_tokens=24)
        shown = s.client.chat.completions.create(model=f"{NAME}:greedy", messages=Q, max_tokens=24,
                                                 extra_body={"include_reasoning": True})
    assert getattr(hidden.choices[0].message, "reasoning_content", None) is None
    chain = shown.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert chain and shown.choices[0].message.content == hidden.choices[0].message.content
    assert shown.choices[0].message.content in chain
    assert shown.usage.completion_tokens == hidden.usage.completion_tokens
    assert shown.usage.completion_tokens_details.reasoning_tokens == \
        hidden.usage.completion_tokens_details.reasoning_tokens


def test_streaming_with_include_usage(llama_backend):
    with serve(llama_backend, name=NAME, system_prompt=SYSTEM) as s:
        chunks = list(s.client.chat.completions.create(model=f"{NAME}:sc-2", messages=Q, max_tokens=16, seed=3,
                                                       stream=True, stream_options={"include_usage": True}))
        (result,) = s.ledger_results(chunks[0].id)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = result.answer if result.answer is not None else (result.chosen or result.candidates[0]).text
    assert content == expected
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == result.ledger.total().completion_tokens
    assert last.usage.prompt_tokens == result.ledger.total().prompt_tokens


def test_eight_concurrent_requests_decode_together(llama_backend):
    """8 different prompts at once. One after another they would need at least one llama_decode per generated
    token (a prefill that samples the first token, then one decode per further token); batched, the 8 requests
    share each step, so the decode calls are far fewer."""
    prompts = [f"Name a fruit that starts with the letter {c}." for c in "ABCDEFGH"]
    with serve(llama_backend, name=NAME) as s:
        llama_backend.clear_cache()
        before = dict(llama_backend.counters)
        out: list = [None] * 8
        go = threading.Barrier(8)

        def ask(i: int) -> None:
            go.wait()
            out[i] = s.client.chat.completions.create(model=f"{NAME}:greedy", max_tokens=12,
                                                      messages=[{"role": "user", "content": prompts[i]}])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        d = delta(llama_backend, before)
    generated = sum(o.usage.completion_tokens for o in out)
    sequential_decodes = generated  # one per token (prefill included), for requests decoded one at a time
    assert generated >= 8 * 4
    assert d["decode_calls"] <= sequential_decodes // 2, (d, generated)


def test_a_client_that_disconnects_stops_its_decoding(llama_backend):
    with serve(llama_backend, name=NAME) as s:
        before = dict(llama_backend.counters)
        body = {"model": f"{NAME}:greedy", "max_tokens": 1500, "stream": True,
                "messages": [{"role": "user", "content": "Write a very long story about a dragon, in detail."}]}
        with httpx.stream("POST", f"{s.url}/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()  # keep it: a dropped line iterator closes the connection at once
            assert next(lines).startswith("data: ")
            wait_until(lambda: delta(llama_backend, before)["sample_tokens_decoded"] >= 4, timeout=60,
                       what="decoding to start")
        wait_until(lambda: s.app.state.admission.running == 0, timeout=30, what="the work to stop")
        stopped = dict(llama_backend.counters)
        time.sleep(1.0)
        assert llama_backend.counters == stopped  # nothing more is decoded for the gone client
        assert delta(llama_backend, before)["sample_tokens_decoded"] < 1000
        assert s.results == []
        metrics = httpx.get(f"{s.url}/metrics").text
    assert 'thinkscale_requests_cancelled_total{reason="disconnect"} 1.0' in metrics


def test_usage_sums_over_concurrent_choices(llama_backend):
    with serve(llama_backend, name=NAME, system_prompt=SYSTEM) as s:
        r = s.client.chat.completions.create(model=f"{NAME}:greedy", messages=Q, max_tokens=8, n=3)
        results = s.ledger_results(r.id)
    total = Usage.total(x.ledger.total() for x in results)
    assert len(results) == 3 and len(r.choices) == 3
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.prompt_tokens_details.cached_tokens) == \
        (total.prompt_tokens, total.completion_tokens, total.cached_prompt_tokens)
