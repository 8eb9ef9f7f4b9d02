"""One behavioural suite for every backend: the scripted fake, llama.cpp (smollm2-135m), and the HTTP backend
against a real llama-cpp-python server on 127.0.0.1. A strategy tested on the fake can rely on exactly these."""

from __future__ import annotations

import math
import random

import pytest

from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.types import GenRequest, Message

WORDS = [f"w{i}" for i in range(60)]


def fake_model(req: GenRequest, j: int) -> str:
    """Greedy: a fixed text; sampled: a permutation seeded by the sample's seed (fresh randomness without one)."""
    if req.temperature == 0:
        return " ".join(WORDS)
    seed = req.sample_seed(j)
    rng = random.Random(seed) if seed is not None else random.Random()
    return " ".join(rng.sample(WORDS, len(WORDS)))


@pytest.fixture(scope="module", params=["scripted", "llamacpp", "http"])
def backend(request: pytest.FixtureRequest):
    if request.param == "scripted":
        yield ScriptedBackend([fake_model] * 10_000)
        return
    if request.param == "llamacpp":
        yield request.getfixturevalue("llama_backend")
        return
    from tests.helpers.llama_server import llama_server
    from thinkscale.backends.openai_compat import OpenAICompatBackend

    with llama_server(request.getfixturevalue("smollm2_path"), n_ctx=2048) as url:
        b = OpenAICompatBackend(url, "smollm2", max_concurrency=4)
        yield b
        b.close()


CHAT = (Message("user", "Write a short poem about the sea."),)


def test_one_completion_per_request_in_order_with_n_samples(backend):
    reqs = [GenRequest(messages=CHAT, n=2, temperature=0.8, max_tokens=3, seed=1),
            GenRequest(messages=CHAT, n=1, temperature=0.8, max_tokens=7, seed=2)]
    out = backend.generate(reqs)
    assert [len(c.samples) for c in out] == [2, 1]
    assert all(s.completion_tokens is not None and 1 <= s.completion_tokens <= 3 for s in out[0].samples)
    assert out[1].samples[0].completion_tokens <= 7


def test_usage_comes_from_backend_and_sums_over_samples(backend):
    (c,) = backend.generate([GenRequest(messages=CHAT, n=3, temperature=0.8, max_tokens=6, seed=3)])
    assert c.usage.calls >= 1
    assert c.usage.prompt_tokens is not None and c.usage.prompt_tokens > 0
    per_sample = [s.completion_tokens for s in c.samples]
    if None not in per_sample:
        assert c.usage.completion_tokens == sum(per_sample)


def test_max_tokens_ends_with_length(backend):
    (c,) = backend.generate([GenRequest(messages=CHAT, n=1, temperature=0.0, max_tokens=5)])
    s = c.samples[0]
    assert s.finish_reason == "length"
    assert s.completion_tokens == 5
    assert c.usage.completion_tokens == 5


def test_greedy_is_deterministic(backend):
    a = backend.generate([GenRequest(messages=CHAT, temperature=0.0, max_tokens=12)])[0].samples[0].text
    b = backend.generate([GenRequest(messages=CHAT, temperature=0.0, max_tokens=12)])[0].samples[0].text
    assert a == b and a


def test_stop_string_cuts_text_before_it(backend):
    full = backend.generate([GenRequest(messages=CHAT, temperature=0.0, max_tokens=16)])[0].samples[0].text
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = backend.generate([GenRequest(messages=CHAT, temperature=0.0, max_tokens=16, stop=(stop,))])[0]
    s = cut.samples[0]
    assert s.finish_reason == "stop"
    assert stop not in s.text
    assert s.text == full[: full.index(stop)]


def test_same_seed_same_samples(backend):
    """Same seed, same state, same samples. The prefix cache is emptied before each run: llama.cpp's floats
    depend on how much KV a step attends over, so a run after other cached work may differ by a token."""
    req = GenRequest(messages=CHAT, n=2, temperature=0.9, max_tokens=8, seed=1234)
    runs = []
    for _ in range(2):
        if hasattr(backend, "clear_cache"):
            backend.clear_cache()
        runs.append([s.text for s in backend.generate([req])[0].samples])
    assert runs[0] == runs[1]


def test_logprobs_per_generated_token(backend):
    (c,) = backend.generate([GenRequest(messages=CHAT, n=2, temperature=0.8, max_tokens=6, seed=5, logprobs=True)])
    for s in c.samples:
        assert s.logprobs is not None
        assert len(s.logprobs) == s.completion_tokens
        assert all(math.isfinite(x) and x <= 0 for x in s.logprobs)


def test_info_identifies_the_model(backend):
    info = backend.info()
    assert info.fingerprint
    assert info.name
