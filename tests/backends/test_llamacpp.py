"""The embedded llama.cpp backend on the real smallest model: batching, prefix reuse, waves, scoring.

Counts are asserted on the backend's own counters (tokens handed to llama_decode) and on llama.cpp's perf
counters, never on estimates."""

from __future__ import annotations

import math

import pytest

from thinkscale.backends.base import BackendError
from thinkscale.backends.llamacpp import LlamaCppBackend, common_prefix_len
from thinkscale.types import ConfidenceStop, GenRequest, Message, ScoreRequest

pytestmark = pytest.mark.model

Q = (Message("user", "Name three colours of the rainbow."),)


def delta(backend, before):
    return {k: backend.counters[k] - before[k] for k in before}


def native_total(backend) -> int:
    c = backend.native_counters()
    return c["n_p_eval"] + c["n_eval"]


def test_installed_build_decodes_a_token(llama_backend):
    """The portable build must run on this CPU (a native build crashes in the AMX kernels on first decode)."""
    (c,) = llama_backend.generate([GenRequest(prompt="Hello", temperature=0.0, max_tokens=1)])
    assert c.samples[0].completion_tokens == 1


def test_n_samples_share_one_prefill_and_decode_together(llama_backend):
    llama_backend.clear_cache()
    before = dict(llama_backend.counters)
    (c,) = llama_backend.generate([GenRequest(messages=Q, n=4, temperature=0.9, max_tokens=8, seed=3)])
    d = delta(llama_backend, before)
    prompt = c.usage.prompt_tokens
    assert c.usage.cached_prompt_tokens == 0
    assert d["prompt_tokens_decoded"] == prompt  # computed once, not 4 times
    # one decode per step for all 4 sequences: about max_tokens calls, not 4 x max_tokens
    assert d["decode_calls"] <= 1 + 8
    # every generated token but the last of each sample is decoded; nothing else
    assert d["sample_tokens_decoded"] == sum(s.completion_tokens - 1 for s in c.samples)
    assert c.usage.flops == pytest.approx(2 * llama_backend.n_params * (prompt + d["sample_tokens_decoded"]))


def test_different_prompts_decode_in_the_same_steps(llama_backend):
    before = dict(llama_backend.counters)
    reqs = [GenRequest(messages=(Message("user", f"Tell me a fact about the number {i}."),), temperature=0.0,
                       max_tokens=6) for i in range(3)]
    out = llama_backend.generate(reqs)
    d = delta(llama_backend, before)
    assert all(c.samples[0].completion_tokens == 6 for c in out)
    # 3 prefills + 5 shared decode steps (the 6th token of each is sampled, never decoded)
    assert d["decode_calls"] == 3 + 5


def test_prefix_reuse_computes_only_new_tokens(llama_backend):
    llama_backend.clear_cache()
    base = "You are a careful assistant. " * 8 + "Question: what is 2 + 2?"
    llama_backend.generate([GenRequest(prompt=base, temperature=0.0, max_tokens=2)])
    before, native_before = dict(llama_backend.counters), native_total(llama_backend)
    extended = base + " Think about it step by step and answer."
    (c,) = llama_backend.generate([GenRequest(prompt=extended, temperature=0.0, max_tokens=2)])
    d = delta(llama_backend, before)
    n_base, n_ext = len(llama_backend.tokenize(base)), len(llama_backend.tokenize(extended))
    new_tokens = n_ext - c.usage.cached_prompt_tokens
    assert c.usage.cached_prompt_tokens >= n_base - 2  # the junction token may re-tokenise differently
    assert d["prompt_tokens_decoded"] == new_tokens < n_ext - n_base + 3
    assert native_total(llama_backend) - native_before == d["tokens_decoded"]


def test_continuing_a_sample_reuses_its_kv(llama_backend):
    """A search step: the next prompt is the previous prompt plus a generated step, continued as the assistant."""
    llama_backend.clear_cache()
    (c,) = llama_backend.generate([GenRequest(messages=Q, temperature=0.0, max_tokens=12)])
    step = c.samples[0].text
    msgs = Q + (Message("assistant", step),)
    before = dict(llama_backend.counters)
    (c2,) = llama_backend.generate([GenRequest(messages=msgs, continue_final=True, temperature=0.0, max_tokens=4)])
    d = delta(llama_backend, before)
    total = c2.usage.prompt_tokens
    assert total - c2.usage.cached_prompt_tokens <= 3
    assert d["prompt_tokens_decoded"] == total - c2.usage.cached_prompt_tokens


def test_samples_beyond_the_context_run_in_waves(smollm2_path):
    """n * max_tokens larger than n_ctx: later samples wait for earlier ones and fork from the cached prompt,
    re-decoding only its last token (their first logits) instead of recomputing the prompt.

    (Texts are not compared with an unconstrained run: llama.cpp's float results depend on the batch
    composition, so long samples drift apart; the seeds are the same.)"""
    b = LlamaCppBackend(smollm2_path, n_ctx=256, n_seq_max=8)
    try:
        (c,) = b.generate([GenRequest(messages=Q, n=6, temperature=0.9, max_tokens=60, seed=1)])
        assert len(c.samples) == 6
        assert b.counters["prompt_tokens_decoded"] == c.usage.prompt_tokens
        late = b.counters["sample_tokens_decoded"] - sum(s.completion_tokens - 1 for s in c.samples)
        # 256 cells hold the prompt and at most 3 reservations of 60: at least 3 samples start late
        assert late >= 3
        assert b.counters["decode_calls"] > 60  # waves run one after another
    finally:
        b.close()


def test_prompts_that_fit_the_context_only_one_at_a_time_take_turns(smollm2_path):
    """Each prompt + max_tokens fits the context alone, two do not. They must run one after another, the finished
    ones' KV evicted. A prompt's cells are freed only with the last sequence copied from it (its samples), so the
    admission count must follow that; it once counted them freed with the prompt's own sequence, admitted the next
    prompt into a full cache and failed with "llama_decode failed (code 1)". The prompts share their first token, so
    each new one also finds the last one's sequence as its (1-token) prefix: keeping it must not block admission."""
    b = LlamaCppBackend(smollm2_path, n_ctx=256, n_seq_max=8)
    try:
        words = " ".join(f"item{i} costs {i * 3} dollars;" for i in range(19))
        reqs = [GenRequest(prompt=f"Q{j}: {words} What is the total?", temperature=0.0, max_tokens=8)
                for j in range(3)]
        n_prompt = len(b.tokenize(reqs[0].prompt or ""))
        assert 2 * (n_prompt + 8) > b.n_ctx >= n_prompt + 8
        out = b.generate(reqs)
        assert [len(c.samples) for c in out] == [1, 1, 1]
        assert b.counters["evictions"] >= 2
        for s in b._seqs.values():  # the bookkeeping the admission count rests on
            assert s.exclusive == len(s.tokens) - s.base
            assert (s.parent is None) == (s.base == 0)
            assert s.parent is None or s in s.parent.children
        assert b._estimated_cells() <= b.n_ctx
    finally:
        b.close()


def test_a_chain_of_continued_steps_does_not_use_up_the_sequence_ids(smollm2_path):
    """Each step continues the last one's sample (a search or particle step): every sequence has a copy, so none
    is a leaf to evict. With 4 ids the third step once failed with "all 4 sequences are busy"; now the least
    recently used ancestor goes (its copies keep the cells), the chain goes on and the cache stays consistent."""
    b = LlamaCppBackend(smollm2_path, n_ctx=512, n_seq_max=4)
    try:
        text = "Count: one,"
        for step in range(5):
            (c,) = b.generate([GenRequest(prompt=text, temperature=0.0, max_tokens=6)])
            assert step == 0 or c.usage.cached_prompt_tokens  # continued from the last step's sequence
            text += c.samples[0].text
        assert b.counters["evictions"] >= 2
        for s in b._seqs.values():
            assert s.exclusive == len(s.tokens) - s.base
            assert (s.parent is None) == (s.base == 0)
            assert s.parent is None or s in s.parent.children
    finally:
        b.close()


def test_a_request_that_fails_to_start_fails_its_call_instead_of_hanging(smollm2_path):
    """A failure while a request's prompt is being started (here injected; in a sweep it was "all sequences are
    busy") reaches the caller: the request was already off the pending queue, so the engine's failure handling did
    not see its call and the caller waited forever. The backend then works again."""
    import threading

    b = LlamaCppBackend(smollm2_path, n_ctx=256, n_seq_max=4)
    got: list[BaseException] = []

    def call() -> None:
        try:
            b.generate([GenRequest(messages=Q, temperature=0.0, max_tokens=4)])
        except BaseException as e:  # noqa: BLE001 - handed to the test
            got.append(e)

    def fail(*args: object) -> int:
        raise BackendError("injected start failure")

    try:
        b._start_job = fail  # type: ignore[method-assign]
        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(timeout=60)
        assert not t.is_alive(), "the call hung"
        assert len(got) == 1 and "injected start failure" in str(got[0])
        del b._start_job
        (c,) = b.generate([GenRequest(messages=Q, temperature=0.0, max_tokens=4)])
        assert c.samples[0].completion_tokens
    finally:
        b.close()


def test_request_larger_than_context_is_refused(smollm2_path):
    b = LlamaCppBackend(smollm2_path, n_ctx=128, n_seq_max=4)
    try:
        with pytest.raises(ValueError, match="exceeds"):
            b.generate([GenRequest(messages=Q, max_tokens=b.n_ctx)])
    finally:
        b.close()


def test_score_gives_continuation_logprobs_and_reuses_the_prompt(llama_backend):
    llama_backend.clear_cache()
    yes, no = llama_backend.score([ScoreRequest(messages=Q, continuation="Yes"),
                                   ScoreRequest(messages=Q, continuation="No")])
    assert len(yes.logprobs) == len(yes.tokens) >= 1
    assert all(math.isfinite(x) and x <= 0 for x in yes.logprobs + no.logprobs)
    assert no.usage.cached_prompt_tokens == no.usage.prompt_tokens - len(no.tokens) - 1
    # the same logprob as sampling would report for that first token
    (g,) = llama_backend.generate([GenRequest(messages=Q, temperature=0.0, max_tokens=1, logprobs=True)])
    first = g.samples[0].text
    (s,) = llama_backend.score([ScoreRequest(messages=Q, continuation=first)])
    assert s.logprobs[0] == pytest.approx(g.samples[0].logprobs[0], abs=1e-3)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        LlamaCppBackend(tmp_path / "nope.gguf")


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([5], [6]) == 0


def _count_to(i: int) -> GenRequest:
    return GenRequest(messages=(Message("user", f"List the numbers from {i} to {i + 200}, separated by commas."),),
                      temperature=0.0, max_tokens=64)


def _queue_behind(backend: LlamaCppBackend, threads: list) -> None:
    """Start ``threads`` (each calls generate) while the test holds the backend's lock, and return once every one
    of them is in line for it: the lock is first come first served, so they get it, in turn, before the engine's next
    step (the engine, woken by the first, queues behind the rest)."""
    import time

    for t in threads:
        t.start()
        end = time.monotonic() + 60
        while t.ident not in backend._lock.queued():
            assert time.monotonic() < end and t.is_alive(), "caller never reached the backend's lock"
            time.sleep(0.001)


def test_concurrent_callers_decode_in_the_same_batch(llama_backend):
    """4 callers each ask for one 64-token greedy sample at once. One after another, every sampled token would cost
    its own llama_decode (a prefill + 63 steps per caller, 4 x 64 calls); sharing the running batch, their tokens
    ride in the same steps: 4 prefills and one step per token of the longest sample. The callers are all in line for
    the lock before any of them submits, so the bound does not depend on how fast threads start on a loaded machine."""
    import threading

    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, llama_backend.generate([_count_to(i)])[0]))
               for i in range(4)]
    with llama_backend._lock:
        before = dict(llama_backend.counters)
        llama_backend.peak_active = 0
        _queue_behind(llama_backend, threads)
    for t in threads:
        t.join(120)
    d = delta(llama_backend, before)
    assert len(results) == 4
    lengths = [c.usage.completion_tokens for c in results.values()]
    assert min(lengths) >= 48, lengths  # long enough that taking turns and sharing differ by far
    assert llama_backend.peak_active == 4
    assert d["decode_calls"] <= 4 + max(lengths) - 1, (d, lengths)


def test_a_caller_joins_the_running_batch_at_the_next_step(llama_backend):
    """Caller B asks while A's sample is decoding: B's tokens ride in A's steps from the step after it got the lock
    (the engine asks for the lock again after every step and queues behind B), not once A's batch has drained."""
    import threading
    import time

    results: dict[str, object] = {}
    a = threading.Thread(target=lambda: results.__setitem__("a", llama_backend.generate([_count_to(7)])[0]))
    b = threading.Thread(target=lambda: results.__setitem__("b", llama_backend.generate([_count_to(77)])[0]))
    before = dict(llama_backend.counters)
    llama_backend.peak_active = 0
    a.start()
    while llama_backend.counters["sample_tokens_decoded"] - before["sample_tokens_decoded"] < 8:
        assert a.is_alive(), "A finished before it decoded 8 tokens"
        time.sleep(0.001)
    with llama_backend._lock:  # between two of A's steps
        steps_alone = llama_backend.counters["decode_calls"] - before["decode_calls"]
        _queue_behind(llama_backend, [b])
    a.join(120)
    b.join(120)
    d = delta(llama_backend, before)
    la, lb = results["a"].usage.completion_tokens, results["b"].usage.completion_tokens
    assert la >= 48 and lb >= 48, (la, lb)
    assert llama_backend.peak_active == 2
    # A alone until B got the lock, plus at most one more step (the engine may have got in line while the test held
    # the lock, ahead of B); then B's prefill; then one step for each token left to A or to B, whichever is longer.
    # Taking turns would cost B's whole sample after A's: steps_alone + 1 + (la - steps_alone) + lb decode calls.
    assert d["decode_calls"] <= steps_alone + 2 + max(la - steps_alone, lb - 1), (d, steps_alone, la, lb)


def test_cancel_stops_the_call_and_frees_its_sequences(llama_backend):
    import threading
    import time

    from thinkscale.backends.base import Cancelled

    cancel = threading.Event()
    errors: list[BaseException] = []
    before = dict(llama_backend.counters)

    def worker() -> None:
        try:
            llama_backend.generate([GenRequest(messages=Q, n=2, temperature=0.9, max_tokens=400, seed=1)],
                                   cancel=cancel)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.5)
    cancel.set()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    d = delta(llama_backend, before)
    assert d["decode_calls"] < 300  # stopped long before 400 steps
    # what it cost before it stopped comes with the error: both samples' tokens so far (each may hold one sampled
    # token not yet decoded, and a sample's first decode may re-decode the prompt's last token), its prompt, FLOPs
    used = errors[0].usage
    assert used is not None and used.calls == 1 and 0 < used.completion_tokens < 2 * 400
    assert abs(used.completion_tokens - d["sample_tokens_decoded"]) <= 2 * 2, (used, d)
    assert 0 <= used.cached_prompt_tokens <= used.prompt_tokens and used.prompt_tokens > 0
    assert used.flops > 0 and used.seconds > 0
    assert all(s.pinned == 0 for s in llama_backend._seqs.values())
    (c,) = llama_backend.generate([GenRequest(messages=Q, temperature=0.0, max_tokens=3)])  # still serves
    assert c.samples[0].completion_tokens == 3


def test_max_active_sequences_caps_each_step_and_later_samples_wait(smollm2_path):
    b = LlamaCppBackend(smollm2_path, n_ctx=1024, n_seq_max=16, max_active_sequences=2)
    try:
        reqs = [GenRequest(messages=Q, n=3, temperature=0.9, max_tokens=6, seed=1),
                GenRequest(messages=(Message("user", "Count to five."),), n=2, temperature=0.9, max_tokens=6, seed=2)]
        out = b.generate(reqs)
        assert [len(c.samples) for c in out] == [3, 2]  # nothing dropped: the capped samples ran later
        assert all(s.completion_tokens >= 1 for c in out for s in c.samples)
        assert b.peak_active == 2
        # the same work uncapped decodes more samples per step
        b.max_active = 15
        b.clear_cache()
        b.peak_active = 0
        b.generate(reqs)
        assert b.peak_active > 2
    finally:
        b.close()


@pytest.mark.parametrize("cap", [0, 16, -1])
def test_max_active_sequences_out_of_range_is_refused(smollm2_path, cap):
    with pytest.raises(ValueError, match="max_active_sequences must be in 1..n_seq_max-1"):
        LlamaCppBackend(smollm2_path, n_ctx=256, n_seq_max=16, max_active_sequences=cap)


def test_confidence_stop_ends_a_sample_where_the_rule_says(llama_backend):
    """A seeded sample drawn whole, then again with a ConfidenceStop set just above the mean of one of its windows:
    the same draw ends at the token ``ConfidenceStop.stops`` computes from the whole sample's logprobs, with
    finish reason low_confidence, a prefix of the whole text, and only the tokens up to there generated."""
    base = GenRequest(messages=Q, n=2, temperature=1.0, max_tokens=40, seed=11, logprobs=True)
    llama_backend.clear_cache()  # both draws compute the prompt afresh: the same logits, the same tokens
    (whole,) = llama_backend.generate([base])
    lps = whole.samples[0].logprobs
    assert lps is not None and len(lps) >= 20
    w = 4
    means = [sum(lps[i:i + w]) / w for i in range(len(lps) - w + 1)]
    cut = min(means[8:]) + 1e-6  # first reachable after the 12th token at the latest; never a tie
    rule = ConfidenceStop(window=w, min_mean_logprob=cut)
    want = [rule.stops(s.logprobs) for s in whole.samples]
    assert want[0] is not None and want[0] < len(lps)
    llama_backend.clear_cache()
    before = dict(llama_backend.counters)
    (stopped,) = llama_backend.generate([GenRequest(messages=Q, n=2, temperature=1.0, max_tokens=40, seed=11,
                                                    logprobs=True, confidence_stop=rule)])
    for s, full, at in zip(stopped.samples, whole.samples, want, strict=True):
        if at is None:
            assert (s.text, s.finish_reason) == (full.text, full.finish_reason)
            continue
        assert s.finish_reason == "low_confidence" and s.completion_tokens == at
        assert s.logprobs == pytest.approx(full.logprobs[:at], abs=1e-4)
        assert full.text.startswith(s.text)
    assert stopped.usage.completion_tokens == sum(s.completion_tokens for s in stopped.samples)
    assert delta(llama_backend, before)["sample_tokens_decoded"] == sum(s.completion_tokens - 1
                                                                         for s in stopped.samples)
