"""OpenAICompatBackend's confidence stop (DeepConf online) over a streamed answer: every sample streams in its own
call, the rule is checked on each token's logprob as it arrives, and the stream is closed where it fires."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.stub_http import Stream, StubServer
from thinkscale.backends.base import BackendError
from thinkscale.backends.openai_compat import OpenAICompatBackend
from thinkscale.types import ConfidenceStop, GenRequest, Message

CHAT = (Message("user", "Say hi."),)
RULE = ConfidenceStop(window=2, min_mean_logprob=-1.0)
# five confident tokens, then a long unconfident tail: the window (-0.1 - 3) / 2 < -1 after token 6
LPS = [-0.1] * 5 + [-3.0] * 195
TOKENS = [f"t{i} " for i in range(len(LPS))]



def backend(url: str, **kw: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(url, "stub-model", backoff_s=0.0, max_backoff_s=0.0, **kw)


def token_event(tokens: list[str], lps: list[float], *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [{
        "index": 0, "delta": {"content": "".join(tokens)}, "finish_reason": None,
        "logprobs": {"content": [{"token": t, "logprob": v, "top_logprobs": []}
                                 for t, v in zip(tokens, lps, strict=True)]}}]}
    if usage is not None:
        ev["usage"] = usage
    return ev


def chat_events(tokens: list[str], lps: list[float], *, finish: str = "stop",
                usage: dict[str, Any] | None = None) -> list[Any]:
    evs: list[Any] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}]}]
    evs += [token_event([t], [v]) for t, v in zip(tokens, lps, strict=True)]
    evs.append({"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
    if usage is not None:
        evs.append({"choices": [], "usage": usage})
    return evs


def request(n: int = 1, **kw: Any) -> GenRequest:
    return GenRequest(messages=CHAT, n=n, max_tokens=500, seed=7, logprobs=True, confidence_stop=RULE, **kw)


def test_the_stream_is_closed_where_the_rule_fires(stub: Callable[..., StubServer]) -> None:
    assert RULE.stops(LPS) == 6
    s = stub(*[(200, Stream(chat_events(TOKENS, LPS), delay=0.01)) for _ in range(2)])
    with backend(s.url, n_params=1000) as b:
        assert b.capabilities.confidence_stop
        [c] = b.generate([request(n=2)])
    assert [x.finish_reason for x in c.samples] == ["low_confidence"] * 2
    for x in c.samples:
        assert x.text == "".join(TOKENS[:6]) and x.completion_tokens == 6 and x.logprobs == tuple(LPS[:6])
    # one streamed call per sample (concurrent: in any order), each with its own seed
    assert sorted((b_["n"], b_["stream"], b_["seed"]) for b_ in s.bodies) == sorted(
        [(1, True, request().sample_seed(0)), (1, True, request().sample_seed(1))])
    assert all(b_["stream_options"] == {"include_usage": True} and b_["logprobs"] for b_ in s.bodies)
    # the client hung up long before the 200 tokens (the stub notices on its next writes)
    deadline = time.monotonic() + 10
    while len(s.streamed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(s.streamed) == 2 and all(hung_up and sent < 100 for sent, hung_up in s.streamed), s.streamed
    # what the stream said: 6 tokens each; no prompt count came (the usage event was never reached), so no FLOPs
    assert (c.usage.completion_tokens, c.usage.prompt_tokens, c.usage.flops, c.usage.calls) == (12, None, None, 2)


def test_a_stream_the_rule_lets_finish_reports_the_servers_usage(stub: Callable[..., StubServer]) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 3}}
    s = stub((200, Stream(chat_events(TOKENS[:4], [-0.2] * 4, finish="length", usage=usage))))
    with backend(s.url, n_params=1000) as b:
        [c] = b.generate([request()])
    (x,) = c.samples
    assert (x.text, x.finish_reason, x.completion_tokens) == ("".join(TOKENS[:4]), "length", 4)
    assert (c.usage.prompt_tokens, c.usage.cached_prompt_tokens, c.usage.completion_tokens) == (9, 3, 4)
    assert c.usage.flops == 2.0 * 1000 * (9 - 3 + 4)
    assert s.streamed == [(len(chat_events(TOKENS[:4], [-0.2] * 4, usage=usage)) + 1, False)]  # read to [DONE]


def test_usage_in_every_event_gives_the_prompt_tokens_of_a_stopped_sample(stub: Callable[..., StubServer]) -> None:
    """vLLM with stream_options.continuous_usage_stats (passed through extra_body) sends usage with every event."""
    evs = [token_event([t], [v], usage={"prompt_tokens": 12, "completion_tokens": i + 1})
           for i, (t, v) in enumerate(zip(TOKENS, LPS, strict=True))]
    s = stub((200, Stream(evs, delay=0.01)))
    with backend(s.url, extra_body={"stream_options": {"continuous_usage_stats": True}}) as b:
        [c] = b.generate([request()])
    assert s.bodies[0]["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.samples[0].finish_reason) == (12, 6, "low_confidence")


def test_an_event_of_several_tokens_is_cut_at_the_token_where_the_rule_fires(stub: Callable[..., StubServer]) -> None:
    s = stub((200, Stream([token_event(TOKENS[:4], LPS[:4]), token_event(TOKENS[4:10], LPS[4:10])])))
    with backend(s.url) as b:
        [c] = b.generate([request()])
    (x,) = c.samples
    assert (x.text, x.completion_tokens, x.logprobs) == ("".join(TOKENS[:6]), 6, tuple(LPS[:6]))


def test_raw_prompt_streams_through_completions(stub: Callable[..., StubServer]) -> None:
    evs = [{"choices": [{"index": 0, "text": t, "finish_reason": None,
                         "logprobs": {"tokens": [t], "token_logprobs": [v]}}]}
           for t, v in zip(TOKENS, LPS, strict=True)]
    s = stub((200, Stream(evs, delay=0.01)))
    with backend(s.url) as b:
        [c] = b.generate([GenRequest(prompt="2+2=", max_tokens=500, seed=1, logprobs=True, confidence_stop=RULE)])
    assert s.paths == ["/v1/completions"] and s.bodies[0]["logprobs"] == 0
    assert (c.samples[0].text, c.samples[0].finish_reason) == ("".join(TOKENS[:6]), "low_confidence")


def test_a_stream_cut_off_midway_is_retried_and_charged_once(stub: Callable[..., StubServer]) -> None:
    cut = Stream(chat_events(TOKENS[:3], [-0.1] * 3)[:3], done=False)  # two tokens, then the connection ends
    whole = Stream(chat_events(TOKENS[:3], [-0.1] * 3))
    s = stub((200, cut), (200, whole))
    with backend(s.url) as b:
        [c] = b.generate([request()])
    assert len(s.bodies) == 2 and s.bodies[0] == s.bodies[1]  # the same sample (same seed) asked for again
    assert (c.samples[0].completion_tokens, c.usage.completion_tokens, c.usage.calls) == (3, 3, 1)


@pytest.mark.parametrize(("events", "match"), [
    ([{"error": {"message": "model crashed"}}], "sent an error in the stream: .*model crashed"),
    ([{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}],
     "streamed text without its token logprobs"),
    ([{"choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": [1, 2], "finish_reason": None}]}],
     "streamed logprobs in an unknown shape"),
])
def test_a_bad_stream_is_an_error_naming_what_is_wrong(stub: Callable[..., StubServer], events: list[Any],
                                                        match: str) -> None:
    s = stub((200, Stream(events)))
    with backend(s.url) as b, pytest.raises(BackendError, match=match):
        b.generate([request()])


def test_a_stream_refused_with_400_is_not_retried(stub: Callable[..., StubServer]) -> None:
    s = stub((400, {"error": {"message": "stream_options is not supported"}}))
    with backend(s.url) as b, pytest.raises(BackendError, match="HTTP 400: stream_options is not supported"):
        b.generate([request()])
    assert len(s.bodies) == 1
