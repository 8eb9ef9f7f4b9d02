"""Core value types: usage arithmetic with unknowns, the ledger, budgets, and request validation."""

from __future__ import annotations

import json
import math
import time

import pytest

from thinkscale.types import Budget, ConfidenceStop, GenRequest, Ledger, Message, Problem, Role, Usage

USER = (Message("user", "What is 2 + 2?"),)


# --- Usage -----------------------------------------------------------------------------------------------------


def test_usage_add_sums_known_counts_and_keeps_unknown_unknown():
    """10 + 5 prompt tokens = 15; an unknown completion count plus 3 stays unknown (None), never 3;
    calls always add (1 + 2 = 3)."""
    a = Usage(prompt_tokens=10, cached_prompt_tokens=4, completion_tokens=None, calls=1, seconds=0.5, flops=None)
    b = Usage(prompt_tokens=5, cached_prompt_tokens=0, completion_tokens=3, calls=2, seconds=0.25, flops=100.0)
    assert a + b == Usage(prompt_tokens=15, cached_prompt_tokens=4, completion_tokens=None, calls=3, seconds=0.75,
                          flops=None)
    assert b + a == a + b


def test_usage_total_of_nothing_is_zero_and_zero_is_the_identity():
    u = Usage(prompt_tokens=7, cached_prompt_tokens=2, completion_tokens=9, calls=1, seconds=1.5, flops=8.0)
    assert Usage.total([]) == Usage(0, 0, 0, 0, 0.0, 0.0)
    assert Usage.total([u]) == u
    assert Usage.zero() + u == u


def test_usage_total_sums_every_field():
    """prompt 7+3+0 = 10, cached 2+1+0 = 3, completion 9+1+5 = 15, calls 3, seconds 1.5+0.5+1.0 = 3.0."""
    us = [Usage(7, 2, 9, 1, 1.5, 8.0), Usage(3, 1, 1, 1, 0.5, 2.0), Usage(0, 0, 5, 1, 1.0, 5.0)]
    assert Usage.total(us) == Usage(10, 3, 15, 3, 3.0, 15.0)


def test_usage_total_with_one_unknown_is_unknown_for_that_field_only():
    total = Usage.total([Usage(7, 2, 9, 1, 1.5, 8.0), Usage(3, None, 1, 1, None, 2.0)])
    assert total.cached_prompt_tokens is None
    assert total.seconds is None
    assert (total.prompt_tokens, total.completion_tokens, total.calls, total.flops) == (10, 10, 2, 10.0)


def test_computed_prompt_tokens_is_prompt_minus_cached_or_unknown():
    """100 prompt tokens of which 60 came from the cache: 40 were computed."""
    assert Usage(prompt_tokens=100, cached_prompt_tokens=60).computed_prompt_tokens == 40
    assert Usage(prompt_tokens=100, cached_prompt_tokens=None).computed_prompt_tokens is None
    assert Usage(prompt_tokens=None, cached_prompt_tokens=0).computed_prompt_tokens is None


# --- Ledger ----------------------------------------------------------------------------------------------------


def _ledger() -> Ledger:
    ledger = Ledger()
    ledger.charge(Role.GENERATOR, Usage(10, 0, 20, 1, 1.0, 60.0))
    ledger.charge(Role.VERIFIER, Usage(30, 10, 1, 1, 0.5, 42.0))
    ledger.charge(Role.GENERATOR, Usage(10, 9, 5, 1, 0.25, 12.0))
    return ledger


def test_ledger_totals_by_role_and_overall():
    """Generator: prompt 10+10, cached 0+9, completion 20+5, 2 calls. Verifier: one charge as given.
    Overall: prompt 50, cached 19, completion 26, 3 calls, flops 60+42+12 = 114."""
    ledger = _ledger()
    assert ledger.total(Role.GENERATOR) == Usage(20, 9, 25, 2, 1.25, 72.0)
    assert ledger.total(Role.VERIFIER) == Usage(30, 10, 1, 1, 0.5, 42.0)
    assert ledger.total(Role.TOOL) == Usage.zero()
    assert ledger.total() == Usage(50, 19, 26, 3, 1.75, 114.0)


def test_ledger_by_role_lists_only_roles_that_were_charged():
    by_role = _ledger().by_role()
    assert set(by_role) == {Role.GENERATOR, Role.VERIFIER}
    assert by_role[Role.GENERATOR].completion_tokens == 25


def test_ledger_accepts_role_names_and_rejects_unknown_roles():
    ledger = Ledger()
    ledger.charge("verifier", Usage(completion_tokens=2, calls=1))  # type: ignore[arg-type]
    assert ledger.total(Role.VERIFIER).completion_tokens == 2
    with pytest.raises(ValueError):
        ledger.charge("critic", Usage(calls=1))  # type: ignore[arg-type]


def test_ledger_to_dict_is_json_and_keeps_the_numbers():
    data = json.loads(json.dumps(_ledger().to_dict()))
    assert data["total"]["completion_tokens"] == 26
    assert data["total"]["calls"] == 3
    assert set(data["by_role"]) == {"generator", "verifier"}
    assert data["by_role"]["generator"]["cached_prompt_tokens"] == 9
    assert data["elapsed_seconds"] >= 0


def test_ledger_to_dict_keeps_unknown_as_null():
    ledger = Ledger()
    ledger.charge(Role.GENERATOR, Usage(prompt_tokens=None, completion_tokens=3, calls=1))
    assert json.loads(json.dumps(ledger.to_dict()))["total"]["prompt_tokens"] is None


# --- Budget ----------------------------------------------------------------------------------------------------


def _spent(completion_tokens: int | None, calls: int) -> Ledger:
    ledger = Ledger()
    for _ in range(calls):
        ledger.charge(Role.GENERATOR, Usage(0, 0, 0, 1, 0.0, 0.0))
    ledger.charge(Role.GENERATOR, Usage(0, 0, completion_tokens, 0, 0.0, 0.0))
    return ledger


def test_budget_remaining_completion_tokens():
    """100 allowed, 30 spent: 70 left; 130 spent: -30 (overspent shows as negative, not clamped)."""
    assert Budget(max_completion_tokens=100).remaining_completion_tokens(_spent(30, 1)) == 70
    assert Budget(max_completion_tokens=100).remaining_completion_tokens(_spent(130, 1)) == -30
    assert Budget().remaining_completion_tokens(_spent(30, 1)) is None


def test_budget_on_tokens_needs_a_backend_that_counts_them():
    with pytest.raises(ValueError, match="completion tokens"):
        Budget(max_completion_tokens=100).remaining_completion_tokens(_spent(None, 1))


def test_budget_exhausted_by_completion_tokens():
    assert Budget(max_completion_tokens=100).exhausted(_spent(99, 1)) is None
    reason = Budget(max_completion_tokens=100).exhausted(_spent(100, 1))
    assert reason is not None and "completion tokens" in reason and "100" in reason


def test_budget_exhausted_by_calls():
    assert Budget(max_calls=3).exhausted(_spent(5, 2)) is None
    reason = Budget(max_calls=3).exhausted(_spent(5, 3))
    assert reason is not None and reason.startswith("calls")


def test_budget_exhausted_by_seconds():
    """The ledger's clock started 5 s ago: a 1 s budget is spent, an hour is not."""
    ledger = Ledger(started=time.perf_counter() - 5.0)
    reason = Budget(max_seconds=1.0).exhausted(ledger)
    assert reason is not None and reason.startswith("seconds")
    assert Budget(max_seconds=3600.0).exhausted(ledger) is None


def test_unlimited_budget_is_never_exhausted():
    assert Budget().exhausted(_spent(10**9, 1000)) is None


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_calls", "max_seconds"])
@pytest.mark.parametrize("value", [0, -1])
def test_budget_rejects_non_positive_limits(field, value):
    with pytest.raises(ValueError, match=field):
        Budget(**{field: value})


# --- GenRequest ------------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    # (kwargs, words the message must contain)
    (dict(messages=USER, n=0), "n must"),
    (dict(messages=USER, n=-2), "n must"),
    (dict(messages=USER, n=True), "n must"),
    (dict(messages=USER, temperature=-0.1), "temperature"),
    (dict(messages=USER, temperature=math.nan), "temperature"),
    (dict(messages=USER, temperature=math.inf), "temperature"),
    (dict(messages=USER, top_p=0.0), "top_p"),
    (dict(messages=USER, top_p=1.01), "top_p"),
    (dict(messages=USER, top_p=math.nan), "top_p"),
    (dict(messages=USER, top_k=-1), "top_k"),
    (dict(messages=USER, min_p=-0.1), "min_p"),
    (dict(messages=USER, min_p=1.0), "min_p"),
    (dict(messages=USER, max_tokens=0), "max_tokens"),
    (dict(messages=USER, max_tokens=2.5), "max_tokens"),
    (dict(messages=USER, stop=("\n", "")), "stop"),
    (dict(messages=USER, seed=-1), "seed"),
    (dict(messages=USER, prompt="2 + 2 ="), "exactly one of messages= or prompt="),
    (dict(), "exactly one of messages= or prompt="),
    (dict(messages=()), "messages is empty"),
    (dict(messages=USER, continue_final=True), "continue_final"),
    (dict(prompt="2 + 2 =", continue_final=True), "continue_final"),
]


@pytest.mark.parametrize(("kwargs", "needle"), BAD_REQUESTS, ids=[n for _, n in BAD_REQUESTS])
def test_genrequest_rejects_bad_field_and_names_it(kwargs, needle):
    with pytest.raises(ValueError) as info:
        GenRequest(**kwargs)
    assert needle in str(info.value)


def test_genrequest_accepts_the_edges_of_each_range():
    """top_p = 1, top_k = 0 and min_p = 0 switch filters off; temperature 0 is greedy: all valid."""
    GenRequest(messages=USER, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_tokens=1, n=1, seed=0)
    GenRequest(messages=(*USER, Message("assistant", "Step 1:")), continue_final=True)


def test_genrequest_turns_lists_into_tuples_so_it_stays_hashable():
    req = GenRequest(messages=list(USER), stop=["\n"])  # type: ignore[arg-type]
    assert req.messages == USER and req.stop == ("\n",)
    hash(req)


def test_sample_seed_is_distinct_per_sample_and_stable():
    """seed 7, sample 0: (7 * 1_000_003 + 0 * 7_919 + 1) mod (2**31 - 1) = 7_000_022; sample 1 adds 7_919.
    Pinned numbers mean the seeds survive a new process (no ``hash()`` randomisation)."""
    req = GenRequest(messages=USER, n=64, seed=7)
    seeds = [req.sample_seed(j) for j in range(req.n)]
    assert seeds[:2] == [7_000_022, 7_007_941]
    assert len(set(seeds)) == 64
    assert [GenRequest(messages=USER, n=64, seed=7).sample_seed(j) for j in range(64)] == seeds
    assert GenRequest(messages=USER, seed=8).sample_seed(0) != seeds[0]


def test_sample_seed_is_none_without_a_seed():
    assert GenRequest(messages=USER, n=2).sample_seed(1) is None


# --- Problem ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_problem_from_text_rejects_empty_text(text):
    with pytest.raises(ValueError, match="empty"):
        Problem.from_text(text)


def test_problem_from_text_puts_the_system_prompt_first():
    p = Problem.from_text("What is 2 + 2?", system="Be brief.")
    assert p.messages == (Message("system", "Be brief."), Message("user", "What is 2 + 2?"))
    assert Problem.from_text("What is 2 + 2?").messages == USER


def test_first_sample_continues_the_seeded_draw():
    """Samples 4..7 of seed 7 are what an n=8 request draws as its last four: sample_seed counts from
    first_sample, so every backend honours it by seeding sample j with sample_seed(j)."""
    whole = GenRequest(messages=USER, n=8, seed=7)
    rest = GenRequest(messages=USER, n=4, seed=7, first_sample=4)
    assert [rest.sample_seed(j) for j in range(4)] == [whole.sample_seed(j) for j in range(4, 8)]
    assert rest.sample_seed(0) == (7 * 1_000_003 + 4 * 7_919 + 1) % (2**31 - 1)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_first_sample_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="first_sample must be an integer >= 0"):
        GenRequest(messages=USER, seed=1, first_sample=bad)


def test_first_sample_needs_a_seed():
    with pytest.raises(ValueError, match="first_sample continues a seeded draw"):
        GenRequest(messages=USER, first_sample=2)


def test_confidence_stop_stops_after_the_first_window_below_the_line():
    # windows of 2: means -0.1, -0.55, -1.0 (tokens 2..3 and 3..4 below -0.5): stop after token 3
    rule = ConfidenceStop(window=2, min_mean_logprob=-0.5)
    assert rule.stops((-0.1, -0.1, -1.0, -1.0, -0.1)) == 3
    assert rule.stops((-0.1, -0.1, -0.1)) is None
    assert rule.stops((-5.0,)) is None  # fewer tokens than the window: no window to judge yet
    assert ConfidenceStop(window=1, min_mean_logprob=-2.0).stops((-1.0, -2.5, -0.1)) == 2
    assert rule.stops((-0.5, -0.5)) is None  # at the line is not below it


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"window": 0, "min_mean_logprob": -1.0}, "window"),
    ({"window": True, "min_mean_logprob": -1.0}, "window"),
    ({"window": 4, "min_mean_logprob": 0.5}, "min_mean_logprob"),
    ({"window": 4, "min_mean_logprob": float("nan")}, "min_mean_logprob"),
    ({"window": 4, "min_mean_logprob": float("-inf")}, "min_mean_logprob"),
])
def test_confidence_stop_refuses_bad_values_and_names_them(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ConfidenceStop(**kwargs)


def test_a_confidence_stop_needs_logprobs_on_the_request():
    rule = ConfidenceStop(window=2, min_mean_logprob=-1.0)
    with pytest.raises(ValueError, match="logprobs=True"):
        GenRequest(prompt="x", confidence_stop=rule)
    assert GenRequest(prompt="x", logprobs=True, confidence_stop=rule).confidence_stop == rule
    with pytest.raises(TypeError, match="ConfidenceStop"):
        GenRequest(prompt="x", logprobs=True, confidence_stop=(2, -1.0))  # type: ignore[arg-type]
