"""OpenAICompatBackend: request shape, n handling, usage accounting, retries.

Fast tests run against a stub HTTP server that answers scripted JSON; tests marked ``model`` run against
llama-cpp-python's real server (one per module) on 127.0.0.1, with a fault-injecting proxy in front of it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.llama_server import free_port, llama_server
from tests.helpers.stub_http import StubServer
from thinkscale.backends.base import BackendError
from thinkscale.backends.openai_compat import OpenAICompatBackend
from thinkscale.types import ConfidenceStop, GenRequest, Message, Usage

# ---- a stub server for the fast tests ------------------------------------------------------------------------



def chat_reply(*texts: str, finish: str = "stop", usage: dict[str, Any] | None = None,
               logprobs: list[list[float]] | None = None) -> tuple[int, Any]:
    choices = []
    for i, t in enumerate(texts):
        c: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
        if logprobs is not None:
            c["logprobs"] = {"content": [{"token": "x", "logprob": v, "top_logprobs": []} for v in logprobs[i]]}
        choices.append(c)
    body: dict[str, Any] = {"object": "chat.completion", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return 200, body


def usage_of(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return u


CHAT = (Message("user", "Say hi."),)


def backend(url: str, **kw: Any) -> OpenAICompatBackend:
    kw.setdefault("backoff_s", 0.0)
    kw.setdefault("max_backoff_s", 0.0)
    return OpenAICompatBackend(url, "stub-model", **kw)


# ---- fast tests ----------------------------------------------------------------------------------------------


def test_sends_every_sampling_parameter_explicitly(stub: Callable[..., StubServer]) -> None:
    """Server defaults differ (llama-cpp-python: top_k 40, min_p 0.05, repeat_penalty 1.1), so nothing is left out."""
    s = stub(chat_reply("hi", usage=usage_of(5, 1)))
    req = GenRequest(messages=CHAT, temperature=0.3, top_p=0.9, top_k=7, min_p=0.02, max_tokens=9, stop=("\n",),
                     seed=11)
    with backend(s.url) as b:
        b.generate([req])
    body = s.bodies[0]
    assert s.paths == ["/v1/chat/completions"]
    assert body["messages"] == [{"role": "user", "content": "Say hi."}]
    expected = {"model": "stub-model", "n": 1, "temperature": 0.3, "top_p": 0.9, "top_k": 7, "min_p": 0.02,
                "max_tokens": 9, "stop": ["\n"], "seed": req.sample_seed(0), "repeat_penalty": 1.0,
                "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "stream": False}
    assert {k: body[k] for k in expected} == expected
    assert "logprobs" not in body


def test_api_key_is_sent_as_bearer(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a", usage=usage_of(1, 1)), chat_reply("a", usage=usage_of(1, 1)))
    with backend(s.url, api_key="sk-test") as b:
        b.generate([GenRequest(messages=CHAT)])
    with backend(s.url) as b:
        b.generate([GenRequest(messages=CHAT)])
    assert s.auth == ["Bearer sk-test", None]


def test_raw_prompt_goes_to_completions_with_logprobs(stub: Callable[..., StubServer]) -> None:
    s = stub((200, {"choices": [{"index": 0, "text": " 4", "finish_reason": "length",
                                 "logprobs": {"token_logprobs": [-0.5, -0.25]}}], "usage": usage_of(3, 2)}))
    with backend(s.url) as b:
        [c] = b.generate([GenRequest(prompt="2+2=", max_tokens=2, logprobs=True)])
    assert s.paths == ["/v1/completions"] and s.bodies[0]["prompt"] == "2+2=" and s.bodies[0]["logprobs"] == 0
    assert c.samples[0].text == " 4" and c.samples[0].finish_reason == "length"
    assert c.samples[0].logprobs == (-0.5, -0.25) and c.samples[0].completion_tokens == 2


def test_more_choices_than_asked_is_an_error(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a", "b", usage=usage_of(5, 2)))
    with backend(s.url) as b, pytest.raises(BackendError, match="2 choices for n=1"):
        b.generate([GenRequest(messages=CHAT)])


def test_unknown_finish_reason_is_an_error(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a", finish="tool_calls", usage=usage_of(5, 1)))
    with backend(s.url) as b, pytest.raises(BackendError, match="finish_reason 'tool_calls'"):
        b.generate([GenRequest(messages=CHAT)])


def test_eos_and_stop_sequence_map_to_stop(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a", finish="eos", usage=usage_of(5, 1)), chat_reply("b", finish="stop_sequence"))
    with backend(s.url, supports_n=False) as b:
        [c] = b.generate([GenRequest(messages=CHAT, n=2, seed=0)])
    assert [x.finish_reason for x in c.samples] == ["stop", "stop"]


def test_missing_usage_is_unknown_not_zero(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a"))
    with backend(s.url, n_params=1000) as b:
        [c] = b.generate([GenRequest(messages=CHAT)])
    u = c.usage
    assert (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.flops) == (None, None, None, None)
    assert u.calls == 1 and u.seconds is not None and u.seconds > 0
    assert c.samples[0].completion_tokens is None


def test_cached_tokens_give_flops(stub: Callable[..., StubServer]) -> None:
    """flops = 2 * n_params * (prompt - cached + completion) = 2 * 1000 * (10 - 4 + 3) = 18000."""
    s = stub(chat_reply("a", usage=usage_of(10, 3, cached=4)))
    with backend(s.url, n_params=1000) as b:
        [c] = b.generate([GenRequest(messages=CHAT)])
    assert (c.usage.prompt_tokens, c.usage.cached_prompt_tokens, c.usage.completion_tokens) == (10, 4, 3)
    assert c.usage.flops == 18000.0


def test_ignored_n_is_filled_with_per_sample_calls(stub: Callable[..., StubServer]) -> None:
    """The server answers n=3 with one choice; samples 1 and 2 are asked for one by one with their own seeds.
    Usage sums the 3 calls: prompt 3 x 5 = 15, completion 2 + 3 + 4 = 9."""
    req = GenRequest(messages=CHAT, n=3, seed=5)
    seed1 = req.sample_seed(1)

    def per_sample(body: dict[str, Any]) -> tuple[int, Any]:
        return chat_reply(f"s-{body['seed']}", usage=usage_of(5, 3 if body["seed"] == seed1 else 4))

    s = stub(chat_reply("s0", usage=usage_of(5, 2)), per_sample, per_sample)
    with backend(s.url) as b:
        assert b.supports_n is None
        [c] = b.generate([req])
        assert b.supports_n is False
    assert [x["n"] for x in s.bodies] == [3, 1, 1]
    assert s.bodies[0]["seed"] == req.sample_seed(0)
    assert sorted(x["seed"] for x in s.bodies[1:]) == sorted([req.sample_seed(1), req.sample_seed(2)])
    assert [x.text for x in c.samples] == ["s0", f"s-{req.sample_seed(1)}", f"s-{req.sample_seed(2)}"]
    assert [x.completion_tokens for x in c.samples] == [2, 3, 4]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.calls) == (15, 9, 3)


def test_honoured_n_keeps_the_call_total(stub: Callable[..., StubServer]) -> None:
    """One call, three choices: the server reports only the total (7), so per-sample counts come from logprobs
    when asked for, else stay unknown, while the Completion carries the true total."""
    s = stub(chat_reply("a", "b", "c", usage=usage_of(5, 7)),
             chat_reply("a", "b", "c", usage=usage_of(5, 7), logprobs=[[-1.0], [-1.0, -2.0], [-1.0] * 4]))
    with backend(s.url) as b:
        [c] = b.generate([GenRequest(messages=CHAT, n=3, seed=1)])
        assert b.supports_n is True
        [d] = b.generate([GenRequest(messages=CHAT, n=3, seed=1, logprobs=True)])
    assert [x.completion_tokens for x in c.samples] == [None, None, None]
    assert (c.usage.completion_tokens, c.usage.calls) == (7, 1)
    assert [x.completion_tokens for x in d.samples] == [1, 2, 4]
    assert d.samples[1].logprobs == (-1.0, -2.0)
    assert s.bodies[1]["logprobs"] is True and s.bodies[1]["top_logprobs"] == 0


def test_supports_n_false_sends_one_call_per_sample(stub: Callable[..., StubServer]) -> None:
    s = stub(*[lambda body: chat_reply(str(body["seed"]), usage=usage_of(4, 1))] * 2)
    req = GenRequest(messages=CHAT, n=2, seed=3)
    with backend(s.url, supports_n=False) as b:
        [c] = b.generate([req])
    assert [x["n"] for x in s.bodies] == [1, 1]
    assert [x.text for x in c.samples] == [str(req.sample_seed(0)), str(req.sample_seed(1))]


def test_missing_logprobs_is_an_error(stub: Callable[..., StubServer]) -> None:
    s = stub(chat_reply("a", usage=usage_of(5, 1)))
    with backend(s.url) as b, pytest.raises(BackendError, match="did not return logprobs"):
        b.generate([GenRequest(messages=CHAT, logprobs=True)])


def test_client_error_is_not_retried(stub: Callable[..., StubServer]) -> None:
    s = stub((422, {"detail": [{"msg": "top_p too large"}]}))
    with backend(s.url, max_retries=3) as b, pytest.raises(BackendError, match="HTTP 422.*top_p too large"):
        b.generate([GenRequest(messages=CHAT)])
    assert len(s.bodies) == 1


def test_429_is_retried_and_not_charged(stub: Callable[..., StubServer]) -> None:
    s = stub((429, {"error": {"message": "slow down"}}), (503, {"error": "busy"}),
             chat_reply("a", usage=usage_of(5, 1)))
    with backend(s.url, max_retries=2) as b:
        [c] = b.generate([GenRequest(messages=CHAT)])
    assert len(s.bodies) == 3
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.calls) == (5, 1, 1)


def test_retries_exhausted_names_url_and_last_error() -> None:
    """Every request gets an injected 500; the proxy never contacts its (nonexistent) upstream."""
    with FaultProxy("http://127.0.0.1:9/v1", default="500") as proxy:
        with backend(proxy.base_url, max_retries=2) as b, \
                pytest.raises(BackendError, match=r"failed after 3 attempts.*HTTP 500.*injected fault 500") as ei:
            b.generate([GenRequest(messages=CHAT)])
        assert proxy.counts["500"] == 3
    assert f"{proxy.base_url}/chat/completions" in str(ei.value)


def test_connection_refused_says_is_the_server_running() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    with backend(url, max_retries=2, backoff_s=0.01, max_backoff_s=0.02) as b, \
            pytest.raises(BackendError, match=r"cannot reach .*is the server running"):
        b.generate([GenRequest(messages=CHAT)])
    assert time.perf_counter() - t0 < 5


def test_continue_final_is_refused() -> None:
    req = GenRequest(messages=(Message("user", "q"), Message("assistant", "partial")), continue_final=True)
    with backend("http://127.0.0.1:9/v1") as b, pytest.raises(NotImplementedError, match="continue_final"):
        b.generate([req])


def test_completions_only_endpoint_refuses_chat() -> None:
    with backend("http://127.0.0.1:9/v1", endpoint="completions") as b, \
            pytest.raises(NotImplementedError, match="chat"):
        b.generate([GenRequest(messages=CHAT)])


@pytest.mark.parametrize("kw, match", [
    ({"base_url": "localhost:8000"}, "base_url"),
    ({"model": ""}, "model"),
    ({"endpoint": "responses"}, "endpoint"),
    ({"supports_n": 1}, "supports_n"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"max_retries": -1}, "max_retries"),
    ({"backoff_s": -1.0}, "backoff_s"),
    ({"max_backoff_s": 0.1}, "max_backoff_s"),
    ({"n_params": 0}, "n_params"),
    ({"extra_body": {"n": 2}}, "extra_body"),
])
def test_constructor_validates(kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", "model": "m", **kw}
    with pytest.raises(ValueError, match=match):
        OpenAICompatBackend(args.pop("base_url"), args.pop("model"), **args)


def test_info_fingerprint() -> None:
    with OpenAICompatBackend("http://h:1/v1/", "m", n_params=135_000_000) as b:
        info = b.info()
    assert (info.name, info.n_params, info.fingerprint) == ("m", 135_000_000, "openai:http://h:1/v1:m")


# ---- against llama-cpp-python's real server -------------------------------------------------------------------

PROMPT = (Message("user", "Write one short sentence about the sea."),)


@pytest.fixture(scope="module")
def server_url(smollm2_path: str) -> Iterator[str]:
    """llama-cpp-python's server on the smallest model (pulled and verified on first use, like every real-model
    test's; THINKSCALE_TEST_MODEL overrides it). It used to look only at a fixed path, so these tests were skipped
    wherever that file was missing, CI included."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    with llama_server(smollm2_path, n_ctx=2048) as url:
        yield url


@pytest.fixture
def real(server_url: str) -> Iterator[OpenAICompatBackend]:
    with OpenAICompatBackend(server_url, "smollm2", n_params=135_000_000, timeout_s=60) as b:
        yield b


def warm_prefix_cache(b: OpenAICompatBackend) -> None:
    """Leave llama-cpp-python's KV cache holding PROMPT plus a generated token.

    Its server reuses the longest cached prefix and then re-evaluates only the last prompt token, and that
    single-token eval gives logits that differ from a batched eval of the whole prompt (first-token logprob -2.276
    vs -2.259 with this model), so a seeded sample is only reproducible from the same cache state. Each compared
    run is therefore started from this state; max_tokens=2 because after a 1-token answer the server samples
    straight from the previous logits instead.
    """
    b.generate([GenRequest(messages=PROMPT, max_tokens=2, temperature=0.0)])


def server_usage(raw: bytes) -> Usage:
    u = json.loads(raw)["usage"]
    return Usage(prompt_tokens=u["prompt_tokens"], completion_tokens=u["completion_tokens"], calls=1)


def tokens(u: Usage) -> tuple[int | None, int | None, int | None, int]:
    return u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.calls


@pytest.mark.model
def test_real_chat_and_completions_usage_is_what_the_server_said(server_url: str) -> None:
    with FaultProxy(server_url) as proxy, \
            OpenAICompatBackend(proxy.base_url, "smollm2", n_params=135_000_000) as b:
        chat, raw = b.generate([GenRequest(messages=PROMPT, temperature=0.0, max_tokens=12),
                                GenRequest(prompt="The capital of France is", temperature=0.0, max_tokens=8)])
        relayed = sorted((server_usage(r) for r in proxy.relayed), key=lambda u: u.prompt_tokens or 0)
    for c in (chat, raw):
        assert len(c.samples) == 1 and c.samples[0].text.strip()
        assert c.samples[0].finish_reason in ("stop", "length")
        assert c.samples[0].completion_tokens == c.usage.completion_tokens
        # llama-cpp-python reports no prompt_tokens_details: cached (and so FLOPs) are unknown, never guessed.
        assert c.usage.cached_prompt_tokens is None and c.usage.flops is None
    got = sorted((c.usage for c in (chat, raw)), key=lambda u: u.prompt_tokens or 0)
    assert [tokens(u)[::2] for u in got] == [(u.prompt_tokens, u.completion_tokens) for u in relayed]
    assert raw.usage.completion_tokens <= 8 and chat.usage.completion_tokens <= 12


@pytest.mark.model
def test_real_n3_with_server_that_ignores_n(server_url: str) -> None:
    """llama-cpp-python's server drops n and returns one choice: the backend fills in 2 more calls, and usage
    charges all three prompts."""
    req = GenRequest(messages=PROMPT, n=3, temperature=1.0, max_tokens=8, seed=7)
    with OpenAICompatBackend(server_url, "smollm2") as b:
        [c] = b.generate([req])
        assert b.supports_n is False
    assert len(c.samples) == 3 and c.usage.calls == 3
    assert c.usage.completion_tokens == sum(s.completion_tokens or 0 for s in c.samples)
    with OpenAICompatBackend(server_url, "smollm2", supports_n=False) as b:
        [single] = b.generate([GenRequest(messages=PROMPT, max_tokens=1, temperature=0.0)])
    assert c.usage.prompt_tokens == 3 * (single.usage.prompt_tokens or 0)
    assert len({s.text for s in c.samples}) >= 2  # per-sample seeds differ


@pytest.mark.model
def test_real_seed_makes_samples_reproducible(real: OpenAICompatBackend) -> None:
    req = GenRequest(messages=PROMPT, n=2, temperature=0.8, max_tokens=12, seed=123)
    warm_prefix_cache(real)
    [a] = real.generate([req])
    [b] = real.generate([req])
    assert [s.text for s in a.samples] == [s.text for s in b.samples]
    assert tokens(a.usage) == tokens(b.usage)


@pytest.mark.model
def test_real_stop_string_is_honoured(real: OpenAICompatBackend) -> None:
    [free] = real.generate([GenRequest(prompt="1, 2, 3, 4, 5,", temperature=0.0, max_tokens=12)])
    text = free.samples[0].text
    assert " 7" in text, f"expected the model to count on, got {text!r}"
    [stopped] = real.generate([GenRequest(prompt="1, 2, 3, 4, 5,", temperature=0.0, max_tokens=12, stop=(" 7",))])
    assert stopped.samples[0].text == text[: text.index(" 7")]
    assert stopped.samples[0].finish_reason == "stop"


@pytest.mark.model
def test_real_logprobs_chat_and_completions(real: OpenAICompatBackend) -> None:
    chat, raw = real.generate([GenRequest(messages=PROMPT, temperature=0.0, max_tokens=8, logprobs=True),
                               GenRequest(prompt="Once upon a", temperature=0.0, max_tokens=8, logprobs=True)])
    for c in (chat, raw):
        lps = c.samples[0].logprobs
        assert lps is not None and len(lps) == c.usage.completion_tokens
        assert all(v <= 0.0 for v in lps)


@pytest.mark.model
def test_real_faults_are_retried_and_charged_once(server_url: str) -> None:
    """Every fault in the plan hits the first request; the retried run must yield the same samples and EXACTLY the
    usage of a fault-free run with the same seeds (failed attempts, including one the server computed but the
    client never received, are not charged)."""
    reqs = [GenRequest(messages=PROMPT, n=2, temperature=0.8, max_tokens=8, seed=42),
            GenRequest(prompt="The sea is", temperature=0.8, max_tokens=8, seed=3)]
    with OpenAICompatBackend(server_url, "smollm2", supports_n=False, max_concurrency=1) as b:
        warm_prefix_cache(b)  # the faulty run's first sample follows attempts that computed the same prompt
        clean = b.generate(reqs)
    plan = ["500", "hang", "reset", "truncate", "cut", "reset_after_upstream", "429", "ok"]
    with FaultProxy(server_url, plan=plan, hang_s=30) as proxy, \
            OpenAICompatBackend(proxy.base_url, "smollm2", supports_n=False, max_concurrency=1, timeout_s=15.0,
                                max_retries=7, backoff_s=0.01, max_backoff_s=0.05) as b:
        # 15 s: the hang (30 s) must time out, a real answer must not (5 s timed one out with a sweep on the cores)
        faulty = b.generate(reqs)
        assert proxy.counts == {"500": 1, "hang": 1, "reset": 1, "truncate": 1, "cut": 1,
                                "reset_after_upstream": 1, "429": 1, "ok": 3}
        assert proxy.upstream_requests == 3 + 3  # truncate, cut, reset_after_upstream were computed too
    for c, f in zip(clean, faulty, strict=True):
        assert [s.text for s in c.samples] == [s.text for s in f.samples]
        assert [s.completion_tokens for s in c.samples] == [s.completion_tokens for s in f.samples]
        assert tokens(c.usage) == tokens(f.usage)
    assert [f.usage.calls for f in faulty] == [2, 1]


@pytest.mark.model
def test_real_400_is_not_retried(server_url: str) -> None:
    """A prompt longer than n_ctx (2048) makes llama-cpp-python answer 400: retrying cannot help."""
    with FaultProxy(server_url) as proxy, \
            OpenAICompatBackend(proxy.base_url, "smollm2", max_retries=3, backoff_s=0.0, max_backoff_s=0.0) as b:
        with pytest.raises(BackendError, match="HTTP 400.*context"):
            b.generate([GenRequest(prompt="sea " * 3000, max_tokens=4)])
        assert proxy.requests == 1



@pytest.mark.model
def test_real_confidence_stop_closes_the_stream_at_the_token_the_rule_gives(real: OpenAICompatBackend) -> None:
    """A seeded sample drawn whole, then again with a ConfidenceStop whose line is just above its lowest 4-token
    window: the streamed sample ends exactly where ConfidenceStop.stops says on the whole draw's logprobs, with the
    same tokens up to there."""
    req = GenRequest(messages=PROMPT, temperature=0.8, max_tokens=24, seed=5, logprobs=True)
    warm_prefix_cache(real)
    [whole] = real.generate([req])
    lps = whole.samples[0].logprobs
    assert lps is not None and len(lps) >= 8
    rule = ConfidenceStop(4, min(sum(lps[i - 4:i]) / 4 for i in range(4, len(lps) + 1)) + 1e-6)
    at = rule.stops(lps)
    assert at is not None
    warm_prefix_cache(real)
    [cut] = real.generate([dataclasses.replace(req, confidence_stop=rule)])
    (s,) = cut.samples
    assert (s.finish_reason, s.completion_tokens, cut.usage.completion_tokens) == ("low_confidence", at, at)
    assert s.logprobs == pytest.approx(lps[:at], abs=1e-4) and whole.samples[0].text.startswith(s.text)
    assert s.text.strip() and (at == len(lps) or len(s.text) < len(whole.samples[0].text))
