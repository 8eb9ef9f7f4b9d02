"""The OpenAI-compatible API on the scripted fake, through the official ``openai`` client against a live server.

The fake counts one token per whitespace word and renders a chat as ``<role> content`` lines, so every usage number
below is counted by hand; each test also checks it against the Results' ledgers the engine reports."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.harness import MODEL, endless, serve
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.server import ServerLimits
from thinkscale.strategies import base as strategies
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.types import GenRequest, Message, Result, Usage

Q = [{"role": "user", "content": "What is 6 times 7?"}]  # the fake's prompt "<user> What is 6 times 7?": 6 words
VOTES = ["a b c \\boxed{42}",  # 4 words
         "x \\boxed{42}",  # 2
         "y y y y y \\boxed{41}",  # 6
         "\\boxed{42}"]  # 1  -> 13 completion tokens, answer 42 by 3 votes to 1


def usage_of(results: list[Result]) -> Usage:
    return Usage.total(r.ledger.total() for r in results)


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_content_is_the_voted_answer_and_the_reasoning_stays_hidden():
    with serve(ScriptedBackend(VOTES)) as s:
        r = s.client.chat.completions.create(model=MODEL, messages=Q)
        (req,) = s.backend.requests
    msg = r.choices[0].message
    assert msg.content == "42"
    assert getattr(msg, "reasoning_content", None) is None and getattr(msg, "reasoning", None) is None
    # the default effort (medium) is sc-4: one batched call of 4 samples
    assert (req.n, req.temperature, req.max_tokens) == (4, 0.7, 512)
    ext = r.choices[0].thinkscale  # type: ignore[attr-defined]
    assert ext["votes"] == {"42": 3, "41": 1} and ext["n_candidates"] == 4
    assert all("text" not in c for c in ext["candidates"])  # no chain of thought leaks without asking
    assert r.choices[0].finish_reason == "stop"
    assert r.thinkscale["strategy_id"] == "sc-4" and r.thinkscale["reasoning_effort"] == "medium"  # type: ignore[attr-defined]


def test_usage_counts_hidden_tokens_and_equals_the_ledger():
    """13 generated words in all; the visible "42" is 1 of them, so 12 are reasoning. 6 prompt words, none cached."""
    with serve(ScriptedBackend(VOTES)) as s:
        r = s.client.chat.completions.create(model=MODEL, messages=Q)
        ledger = usage_of(s.ledger_results(r.id))
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (6, 13, 19)
    assert u.completion_tokens_details.reasoning_tokens == 12
    assert u.prompt_tokens_details.cached_tokens == 0
    assert (u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.cached_tokens) == \
        (ledger.prompt_tokens, ledger.completion_tokens, ledger.cached_prompt_tokens)
    ext = u.thinkscale  # type: ignore[attr-defined]
    assert ext["calls"] == ledger.calls == 1
    assert ext["content_tokens"] == 1 and ext["verifier_tokens"] == 0 and ext["tool_tokens"] == 0
    assert ext["by_role"]["generator"]["completion_tokens"] == 13
    assert ext["wall_seconds"] >= 0 and ext["flops"] == ledger.flops


def test_reasoning_is_revealed_on_request_under_both_names():
    for extra in ({"include_reasoning": True}, {"thinkscale": {"reveal_reasoning": True}}):
        with serve(ScriptedBackend(VOTES)) as s:
            r = s.client.chat.completions.create(model=MODEL, messages=Q, extra_body=extra)
        msg = r.choices[0].message
        assert msg.content == "42"
        assert msg.reasoning_content == "a b c \\boxed{42}" == msg.reasoning  # type: ignore[attr-defined]
        texts = [c["text"] for c in r.choices[0].thinkscale["candidates"]]  # type: ignore[attr-defined]
        assert texts == VOTES
        assert r.usage.completion_tokens_details.reasoning_tokens == 12  # revealing changes no count


def test_streaming_sends_the_answer_then_usage_equal_to_the_ledger():
    with serve(ScriptedBackend(VOTES)) as s:
        chunks = list(s.client.chat.completions.create(model=MODEL, messages=Q, stream=True,
                                                       stream_options={"include_usage": True}))
        ledger = usage_of(s.ledger_results(chunks[0].id))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "42"
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    *body, last = chunks
    assert all(c.usage is None for c in body)  # only the final chunk carries usage, as OpenAI does
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 13)
    assert last.usage.completion_tokens_details.reasoning_tokens == 12
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.prompt_tokens_details.cached_tokens) \
        == (ledger.prompt_tokens, ledger.completion_tokens, ledger.cached_prompt_tokens)


def test_streaming_reveals_reasoning_before_the_answer_and_omits_usage_unless_asked():
    with serve(ScriptedBackend(VOTES)) as s:
        chunks = list(s.client.chat.completions.create(model=MODEL, messages=Q, stream=True,
                                                       extra_body={"include_reasoning": True}))
    deltas = [c.choices[0].delta for c in chunks]
    kinds = [("reasoning" if getattr(d, "reasoning_content", None) else "content" if d.content else None)
             for d in deltas]
    assert [k for k in kinds if k] == ["reasoning", "content"]
    assert deltas[kinds.index("reasoning")].reasoning_content == VOTES[0]  # type: ignore[attr-defined]
    assert all(c.usage is None for c in chunks)


def test_n_choices_each_run_the_strategy_and_usage_sums_their_ledgers():
    """3 greedy runs of the same prompt: 6 prompt words each; the fake's prefix cache serves 5 of the 6 words
    to the 2nd and 3rd (the last prompt token is always recomputed). 7 completion words each."""
    with serve(endless("42", words=6)) as s:
        r = s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q, n=3)
        results = s.ledger_results(r.id)
        calls = s.backend.calls
    assert [c.index for c in r.choices] == [0, 1, 2] and calls == 3 and len(results) == 3
    assert all(c.message.content == "42" for c in r.choices)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.prompt_tokens_details.cached_tokens) == \
        (18, 21, 10)
    assert r.usage.completion_tokens_details.reasoning_tokens == 3 * 6
    assert usage_of(results).completion_tokens == 21


@pytest.mark.parametrize(("effort", "n", "temperature", "budget"), [
    ("low", 1, 0.0, 512), ("medium", 4, 0.7, 2048), ("high", 16, 0.7, 8192),
    ("minimal", 1, 0.0, 512), ("xhigh", 16, 0.7, 8192)])
def test_reasoning_effort_maps_to_documented_strategy_and_budget(effort, n, temperature, budget):
    with serve(endless()) as s:
        r = s.client.chat.completions.create(model=MODEL, messages=Q, reasoning_effort=effort)
        (req,) = s.backend.requests
    assert (req.n, req.temperature) == (n, temperature)
    meta = r.thinkscale  # type: ignore[attr-defined]
    assert meta["budget"]["max_completion_tokens"] == budget
    assert meta["reasoning_effort"] == {"minimal": "low", "xhigh": "high"}.get(effort, effort)


@pytest.mark.parametrize(("how", "n"), [
    ({"model": f"{MODEL}:sc-8"}, 8),
    ({"model": f"{MODEL}:self-consistency-3"}, 3),
    ({"model": f"{MODEL}:self-consistency"}, 8),  # the strategy's own default
    ({"model": f"{MODEL}:greedy", "reasoning_effort": "high"}, 1),  # the suffix wins over the effort
    ({"model": MODEL, "extra_body": {"thinkscale": {"strategy": "sc-2"}}}, 2),
    ({"model": f"{MODEL}:sc-2", "extra_body": {"thinkscale": {"strategy": "sc-2"}}}, 2),
])
def test_strategy_from_model_suffix_or_extension(how, n):
    with serve(endless()) as s:
        s.client.chat.completions.create(messages=Q, **how)
        (req,) = s.backend.requests
    assert req.n == n


@pytest.mark.parametrize(("how", "param"), [
    ({"model": f"{MODEL}:tree-of-thoughts"}, "model"),
    ({"model": MODEL, "extra_body": {"thinkscale": {"strategy": "tree-of-thoughts", "budget": 4000}}},
     "thinkscale.strategy"),
    ({"model": f"{MODEL}:sc-0"}, "model"),
    ({"model": f"{MODEL}:sc-65"}, "model"),
    ({"model": f"{MODEL}:greedy-4"}, "model"),
    ({"model": f"{MODEL}:"}, "model"),
    ({"model": f"{MODEL}:sc-4", "extra_body": {"thinkscale": {"strategy": "greedy"}}}, "thinkscale.strategy"),
])
def test_unavailable_strategy_is_a_400_naming_the_field_and_listing_what_exists(how, param):
    with serve(endless()) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client.chat.completions.create(messages=Q, **how)
        assert s.backend.calls == 0
    err = e.value.body
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if err["code"] == "unknown_strategy" and "sample count" not in err["message"]:
        assert "greedy" in err["message"] and "self-consistency" in err["message"] and "sc-N" in err["message"]


@pytest.mark.usefixtures("unshipped_default_policy")
def test_auto_without_a_policy_is_a_400_naming_the_model_and_the_fix():
    with serve(endless()) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client.chat.completions.create(model=f"{MODEL}:auto", messages=Q)
        assert s.backend.calls == 0
    err = e.value.body
    assert err["param"] == "model" and err["type"] == "invalid_request_error"
    assert "no default policy is shipped" in err["message"] and "fit-policy" in err["message"]


def test_auto_runs_on_the_packaged_policy():
    with serve(ScriptedBackend(VOTES * 8)) as s:
        r = s.client.chat.completions.create(model=f"{MODEL}:auto", messages=Q)
        assert s.backend.calls >= 1
    assert r.choices[0].message.content in {"42", "41"}
    assert r.thinkscale["strategy_id"] == "auto"  # type: ignore[attr-defined]


def test_unknown_model_is_a_404():
    with serve(endless()) as s:
        with pytest.raises(openai.NotFoundError) as e:
            s.client.chat.completions.create(model="gpt-4o", messages=Q)
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"


def test_models_lists_ids_effort_mapping_and_strategies():
    with serve(endless()) as s:
        ids = [m.id for m in s.client.models.list()]
        raw = httpx.get(f"{s.url}/v1/models").json()
        one = s.client.models.retrieve(f"{MODEL}:sc-13")
        with pytest.raises(openai.NotFoundError):
            s.client.models.retrieve("nope")
    assert ids[0] == MODEL and {f"{MODEL}:greedy", f"{MODEL}:sc-4", f"{MODEL}:self-consistency"} <= set(ids)
    effort = raw["thinkscale"]["reasoning_effort"]
    assert effort["low"]["strategy_id"] == "greedy" and effort["medium"]["strategy_id"] == "sc-4"
    assert effort["high"]["strategy_id"] == "sc-16"
    names = {st["name"] for st in raw["thinkscale"]["strategies"]}
    assert names == set(strategies.REGISTRY)
    assert one.id == f"{MODEL}:sc-13"


@dataclass(frozen=True)
class _Toy:
    """A strategy registered only for this test: n_samples greedy-ish samples, first answer wins."""

    n_samples: int = 2
    max_tokens: int = 16

    def run(self, ctx: Run) -> Result:
        (c,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=self.n_samples, temperature=0.5,
                                        max_tokens=self.max_tokens)])
        return ctx.result(candidates_from(c), chosen_index=0)


def test_a_newly_registered_strategy_is_listed_and_servable():
    strategies.register("toy-search", "test only", "https://example.org")(_Toy)
    try:
        with serve(endless()) as s:
            ids = [m.id for m in s.client.models.list()]
            r = s.client.chat.completions.create(model=f"{MODEL}:toy-search-3", messages=Q, max_tokens=9)
            (req,) = s.backend.requests
    finally:
        strategies.REGISTRY.pop("toy-search")
    assert f"{MODEL}:toy-search" in ids and f"{MODEL}:toy-search-4" in ids
    assert (req.n, req.max_tokens) == (3, 9) and r.choices[0].message.content == "42"


def test_max_completion_tokens_is_a_budget_over_all_chains():
    """sc-4 with 512-token chains under a 1000-token budget: only one chain fits the worst case, so one is
    sampled and the finish reason says the budget cut the thinking short."""
    with serve(endless()) as s:
        r = s.client.chat.completions.create(model=f"{MODEL}:sc-4", messages=Q, max_completion_tokens=1000)
        (req,) = s.backend.requests
    assert req.n == 1 and req.max_tokens == 512
    assert r.choices[0].finish_reason == "length" and r.choices[0].thinkscale["stop_reason"] == "budget"  # type: ignore[attr-defined]
    assert r.choices[0].message.content == "42"


def test_max_completion_tokens_alone_also_caps_the_chain_length():
    with serve(endless()) as s:
        s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q, max_completion_tokens=100)
        (req,) = s.backend.requests
    assert req.max_tokens == 100


@pytest.mark.parametrize(("kw", "param"), [
    ({"max_tokens": 600, "max_completion_tokens": 500}, "max_tokens"),
    ({"max_tokens": 5000}, "max_tokens"),
    ({"max_completion_tokens": 5000}, "max_completion_tokens"),
    ({"extra_body": {"thinkscale": {"budget": 5000}}}, "thinkscale.budget"),
    ({"temperature": 0}, "temperature"),  # self-consistency needs sampling
    ({"extra_body": {"thinkscale": {"params": {"beam_width": 3}}}}, "thinkscale.params.beam_width"),
    ({"extra_body": {"thinkscale": {"params": {"n_samples": "many"}}}}, "thinkscale.params.n_samples"),
    ({"extra_body": {"thinkscale": {"params": {"n_samples": 65}}}}, "thinkscale.params.n_samples"),
    ({"extra_body": {"thinkscale": {"params": {"max_tokens": 5000}}}}, "thinkscale.params.max_tokens"),
])
def test_budget_and_knob_errors_name_the_field(kw, param):
    with serve(endless(), limits=ServerLimits(max_tokens_per_request=4096)) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client.chat.completions.create(model=f"{MODEL}:sc-4", messages=Q, **kw)
    assert e.value.body["param"] == param


@pytest.mark.parametrize(("model", "knob"), [("mcts", "n_simulations"), ("debate", "n_agents"),
                                            ("adaptive-sc", "max_samples"), ("self-refine", "max_rounds")])
def test_a_knob_that_multiplies_the_work_is_capped_like_sc_n(model, knob):
    """Not only the sample count: simulations, agents, rounds over max_count would run for hours (issue 31)."""
    with serve(endless()) as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.client.chat.completions.create(model=f"{MODEL}:{model}", messages=Q,
                                             extra_body={"thinkscale": {"params": {knob: 100_000}}})
        assert s.backend.calls == 0
    assert e.value.body["param"] == f"thinkscale.params.{knob}"
    assert "over this server's limit of 64" in e.value.body["message"]


def test_knobs_are_per_request_even_when_requests_overlap():
    """Two concurrent requests with different sampling settings: each backend call carries its own."""
    with serve(endless()) as s:
        def ask(t: float, p: float) -> None:
            s.client.chat.completions.create(model=f"{MODEL}:sc-2", messages=Q, temperature=t, top_p=p,
                                             extra_body={"thinkscale": {"params": {"max_tokens": 33}}})
        threads = [threading.Thread(target=ask, args=(t, p)) for t, p in ((0.3, 0.9), (1.1, 0.5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = sorted((r.temperature, r.top_p, r.max_tokens) for r in s.backend.requests)
    assert seen == [(0.3, 0.9, 33), (1.1, 0.5, 33)]


def test_same_seed_replays_the_same_sampling():
    with serve(endless()) as s:
        a = s.client.chat.completions.create(model=f"{MODEL}:sc-2", messages=Q, seed=7)
        s.client.chat.completions.create(model=f"{MODEL}:sc-2", messages=Q, seed=7)
        c = s.client.chat.completions.create(model=f"{MODEL}:sc-2", messages=Q)
        s.client.chat.completions.create(model=f"{MODEL}:sc-2", messages=Q, seed=c.thinkscale["seed"])  # type: ignore[attr-defined]
        seeds = [r.seed for r in s.backend.requests]
    assert a.thinkscale["seed"] == 7  # type: ignore[attr-defined]
    assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[0] != seeds[2]


def test_without_an_extractable_answer_the_content_is_the_whole_chain():
    """Nothing to extract: the content is the sample itself, so none of it is hidden reasoning."""
    with serve(ScriptedBackend(["Hello there, friend."])) as s:
        r = s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q)
    assert r.choices[0].message.content == "Hello there, friend."
    assert r.usage.completion_tokens == 3 and r.usage.completion_tokens_details.reasoning_tokens == 0


def test_stop_sequences_cut_the_visible_content():
    with serve(ScriptedBackend(["Hello there. END and more"])) as s:
        r = s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q, stop=["END"])
    assert r.choices[0].message.content == "Hello there. "
    # 5 words generated, 2 of them visible
    assert (r.usage.completion_tokens, r.usage.completion_tokens_details.reasoning_tokens) == (5, 3)


def test_system_prompt_is_added_only_when_the_client_sent_none():
    with serve(endless(), system_prompt="Box the answer.") as s:
        s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=Q)
        s.client.chat.completions.create(model=f"{MODEL}:greedy",
                                         messages=[{"role": "developer", "content": "Be terse."}, *Q])
        first, second = s.backend.requests
    assert first.messages == (Message("system", "Box the answer."), Message("user", "What is 6 times 7?"))
    assert second.messages == (Message("system", "Be terse."), Message("user", "What is 6 times 7?"))


def test_content_parts_and_earlier_turns_are_accepted():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello", "reasoning_content": "(not sent back)"},
            {"role": "user", "content": "What is 6 times 7?"}]
    with serve(endless()) as s:
        s.client.chat.completions.create(model=f"{MODEL}:greedy", messages=msgs)
        (req,) = s.backend.requests
    assert req.messages == (Message("user", "Hi\nthere"), Message("assistant", "Hello"),
                            Message("user", "What is 6 times 7?"))


def test_completions_treat_the_prompt_as_the_user_message():
    with serve(endless("42", words=2)) as s:
        r = s.client.completions.create(model=f"{MODEL}:greedy", prompt="What is 6 times 7?", echo=True)
        (req,) = s.backend.requests
    assert req.messages == (Message("user", "What is 6 times 7?"),)
    assert r.choices[0].text == "What is 6 times 7?42"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (6, 3)
    assert r.usage.completion_tokens_details.reasoning_tokens == 2  # type: ignore[union-attr]


def test_completions_with_several_prompts_give_prompts_times_n_choices():
    with serve(endless()) as s:
        r = s.client.completions.create(model=f"{MODEL}:greedy", prompt=["What is 1?", "What is 2?"], n=2)
        asked = sorted(req.messages[-1].content for req in s.backend.requests)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert asked == ["What is 1?", "What is 1?", "What is 2?", "What is 2?"]


def test_completions_stream_with_usage_and_revealed_reasoning():
    with serve(ScriptedBackend(VOTES)) as s:
        chunks = list(s.client.completions.create(model=MODEL, prompt="What is 6 times 7?", stream=True,
                                                  stream_options={"include_usage": True},
                                                  extra_body={"include_reasoning": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "42"
    reasoning = [getattr(c.choices[0], "reasoning_content", None) for c in chunks if c.choices]
    assert VOTES[0] in reasoning
    assert chunks[-1].usage.completion_tokens == 13


def test_metrics_count_requests_and_tokens_by_role():
    with serve(ScriptedBackend(VOTES)) as s:
        s.client.chat.completions.create(model=MODEL, messages=Q)
        with pytest.raises(openai.BadRequestError):
            s.client.chat.completions.create(model=MODEL, messages=Q, n=0)
        assert metric(s.url, "thinkscale_requests_total", endpoint="/v1/chat/completions", status="200") == 1
        assert metric(s.url, "thinkscale_requests_total", endpoint="/v1/chat/completions", status="400") == 1
        assert metric(s.url, "thinkscale_tokens_total", role="generator", kind="completion") == 13
        assert metric(s.url, "thinkscale_tokens_total", role="generator", kind="prompt") == 6
        assert metric(s.url, "thinkscale_completion_tokens_by_visibility_total", visibility="reasoning") == 12
        assert metric(s.url, "thinkscale_completion_tokens_by_visibility_total", visibility="content") == 1
        assert metric(s.url, "thinkscale_queue_depth") == 0
        assert metric(s.url, "thinkscale_request_latency_seconds_count", endpoint="/v1/chat/completions") == 2
        health = httpx.get(f"{s.url}/health").json()
    assert health["status"] == "ok" and health["running"] == 0
