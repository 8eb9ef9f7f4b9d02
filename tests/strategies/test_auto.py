"""The auto controller on the scripted fake: the first wave, difficulty bins, each action, the stopping rule against
hand-computed posteriors, the budget (ledger), the trace, and that its chains are self-consistency's chains."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.policy.helpers import write_policy
from tests.strategies.helpers import PROBLEM, algo_trace, endless, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.auto import Auto
from thinkscale.strategies.base import build_strategy, get_strategy
from thinkscale.strategies.run import execute
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.types import Budget

STOP = {"kind": "stop"}


def sample(m: int, threshold: float | None = None) -> dict:
    return {"kind": "sample", "max_samples": m, "threshold": threshold}


@pytest.fixture
def policy(tmp_path: Path):
    def make(easy: dict = STOP, hard: dict | None = None, **kw) -> str:
        return write_policy(tmp_path / f"p{len(list(tmp_path.iterdir()))}.json",
                            choices={"easy": easy, "hard": hard or sample(16, 0.95)}, **kw)

    return make


def events(result, name: str) -> list[dict]:
    return [e for e in algo_trace(result) if e["event"] == name]


@pytest.mark.usefixtures("unshipped_default_policy")
def test_without_a_packaged_default_auto_says_so() -> None:
    with pytest.raises(ValueError, match="no default policy is shipped.*fit-policy"):
        build_strategy("auto")  # no packaged default: a clear error, not an invented policy


def test_auto_is_registered_and_built_from_a_spec(policy) -> None:
    path = policy()
    s = build_strategy(f"auto:budget_tokens=2000,policy={path}")
    assert s == Auto(budget_tokens=2000, policy=path) and get_strategy("auto").factory is Auto
    with pytest.raises(ValueError, match="budget_tokens must be an integer >= 1"):
        build_strategy(f"auto:budget_tokens=0,policy={path}")
    with pytest.raises(ValueError, match="budget_tokens must be an integer >= 1"):
        Auto(budget_tokens=True, policy=path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nope.json: cannot read it"):
        build_strategy("auto:policy=nope.json")


def test_an_easy_problem_stops_after_the_first_wave(policy) -> None:
    """4 of 4 agree: agreement 1, score 0 < edge 0.375 -> bin easy -> stop: one call of 4 chains."""
    b = ScriptedBackend([words(3, "42")] * 4)
    result = execute(Auto(policy=policy()), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.calls == 1 and b.requests[0].n == 4 and result.answer == "42" and result.stop_reason == "done"
    (diff,) = events(result, "difficulty")
    assert diff["features"]["agreement"] == 1.0 and diff["score"] == 0.0 and diff["bin"] == "easy"
    assert diff["features"]["P"] == pytest.approx(0.96875)
    (action,) = events(result, "action")
    assert action["label"] == "stop" and action["fitted"]["why"] == "test: easy"
    assert action["fitted"]["budget_row"] == 1_000_000
    assert events(result, "stop")[0]["reason"] == "policy_stop"
    json.dumps(list(algo_trace(result)))


def test_an_easy_problem_also_stops_after_one_wave_under_a_sampling_action(policy) -> None:
    """The threshold is checked on the first wave too: P({42: 4}) = 0.96875 >= 0.95 -> settled, one call."""
    b = ScriptedBackend([words(3, "42")] * 4)
    result = execute(Auto(policy=policy(easy=sample(16, 0.95))), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.calls == 1 and events(result, "stop")[0]["reason"] == "settled"
    assert events(result, "check")[0]["P"] == pytest.approx(0.96875)


def test_the_stopping_rule_uses_hand_computed_posteriors(policy) -> None:
    """First wave 1, 1, 1, 2: agreement 3/4 -> score 0.25 < 0.375 -> easy, whose action samples with threshold
    0.9. P({1: 3, 2: 1}) = 1 - I_0.5(4, 2) = 1 - 6/32 = 0.8125 < 0.9 -> another wave of 4 (all 1):
    P({1: 7, 2: 1}) = 1 - I_0.5(8, 2) = 1 - (C(9,8) + C(9,9))/512 = 502/512 >= 0.9 -> settled at 8 chains.
    With threshold 0.8 the first wave already settles (0.8125 >= 0.8)."""
    script = [words(2, "1")] * 3 + [words(2, "2")] + [words(2, "1")] * 4
    b = ScriptedBackend(script)
    result = execute(Auto(policy=policy(easy=sample(16, 0.9))), PROBLEM, b, Budget(), rng=random.Random(0))
    checks = events(result, "check")
    assert [c["P"] for c in checks] == [pytest.approx(0.8125), pytest.approx(502 / 512)]
    assert [r.n for r in b.requests] == [4, 4] and [r.first_sample for r in b.requests] == [0, 4]
    assert len({r.seed for r in b.requests}) == 1  # one seeded draw, continued
    assert events(result, "stop")[0]["reason"] == "settled" and result.answer == "1"
    b2 = ScriptedBackend(script[:4])
    r2 = execute(Auto(policy=policy(easy=sample(16, 0.8))), PROBLEM, b2, Budget(), rng=random.Random(0))
    assert b2.calls == 1 and events(r2, "stop")[0]["reason"] == "settled"


def test_a_hard_problem_samples_to_max_samples_without_a_threshold(policy) -> None:
    """Agreement 1/4 (1, 2, 3, none) -> score 0.75 -> hard -> sample to 12 chains, no early stop."""
    script = [words(2, "1"), words(2, "2"), words(2, "3"), words(2)] + [words(2, "2")] * 8
    b = ScriptedBackend(script)
    result = execute(Auto(policy=policy(hard=sample(12))), PROBLEM, b, Budget(), rng=random.Random(0))
    assert [r.n for r in b.requests] == [4, 4, 4] and len(result.candidates) == 12 and result.answer == "2"
    diff = events(result, "difficulty")[0]
    assert diff["bin"] == "hard" and diff["features"]["answered"] == 0.75 and diff["score"] == 0.75
    assert events(result, "stop")[0]["reason"] == "max_samples"


def test_auto_draws_exactly_self_consistencys_chains(policy) -> None:
    """Same rng seed: auto's first wave is SC's first 4 chains and its continuation SC's next ones (the prefix
    property that lets an eval run's stored chains be replayed for auto)."""
    sc_backend, auto_backend = endless(), endless()
    sc = execute(SelfConsistency(n_samples=16, max_tokens=40), PROBLEM, sc_backend, Budget(), rng=random.Random(7))
    path = policy(easy=sample(16), hard=sample(16), max_tokens=40)
    auto = execute(Auto(policy=path), PROBLEM, auto_backend, Budget(), rng=random.Random(7))
    assert [c.text for c in auto.candidates] == [c.text for c in sc.candidates]
    (sc_req,) = sc_backend.requests
    for r in auto_backend.requests:
        assert (r.messages, r.temperature, r.top_p, r.max_tokens, r.seed) == (
            sc_req.messages, sc_req.temperature, sc_req.top_p, sc_req.max_tokens, sc_req.seed)


def test_a_strategy_action_runs_with_the_rng_the_run_received(policy) -> None:
    """The delegate draws what it would draw on its own: its request seed is the one auto's first wave used (both
    draw first from the same rng state), and its ledger is charged to auto's."""
    b = endless()
    path = policy(easy={"kind": "strategy", "spec": "self-consistency:n_samples=2"},
                  hard={"kind": "strategy", "spec": "self-consistency:n_samples=2"}, max_tokens=40)
    result = execute(Auto(policy=path), PROBLEM, b, Budget(), rng=random.Random(3))
    first, delegated = b.requests
    assert delegated.seed == first.seed and delegated.n == 2 and delegated.max_tokens == 40
    assert result.ledger.total().completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.ledger.total().calls == 2 and len(result.candidates) == 6
    assert events(result, "delegate")[0]["spec"] == "self-consistency:n_samples=2"


def test_a_delegate_without_an_answer_keeps_its_chains(policy) -> None:
    """The delegate's chains were paid for: when it gives no answer they still join the result and the vote (a
    hypothesis example found them dropped: ledger 98 generated tokens, candidates 58)."""
    b = ScriptedBackend([words(5, "7"), words(5, "8"), words(6), words(6)])  # a 1-1 split, then two answerless chains
    path = policy(easy={"kind": "strategy", "spec": "self-consistency:n_samples=2"},
                  hard={"kind": "strategy", "spec": "self-consistency:n_samples=2"}, max_tokens=40, wave_size=2)
    result = execute(Auto(policy=path), PROBLEM, b, Budget(), rng=random.Random(0))
    assert [r.n for r in b.requests] == [2, 2] and len(result.candidates) == 4
    assert result.ledger.total().completion_tokens == sum(c.completion_tokens for c in result.candidates) == 22
    assert events(result, "stop")[-1]["reason"] == "delegate_no_answer" and len(result.candidates) == 4
    assert result.answer in {"7", "8"}


def test_the_budget_row_is_the_largest_not_above_the_budget(policy) -> None:
    path = policy(caps=(100, 200, 400))
    for cap, row in ((None, 400), (50, 100), (100, 100), (399, 200), (400, 400)):
        r = execute(Auto(budget_tokens=cap, policy=path), PROBLEM, ScriptedBackend([words(1, "1")] * 4), Budget(),
                                                     rng=random.Random(0))
        assert events(r, "action")[0]["fitted"]["budget_row"] == row
        assert ("note" in events(r, "action")[0]["fitted"]) == (cap == 50)


@settings(max_examples=60, deadline=None)
@example(budget=98, knob=None, seed=4, calls=None)  # found a delegate's answerless chains dropped from the result
@given(budget=st.integers(1, 900), knob=st.one_of(st.none(), st.integers(1, 900)), seed=st.integers(0, 5),
       calls=st.one_of(st.none(), st.integers(1, 6)))
def test_the_budget_is_never_exceeded(tmp_path_factory, budget: int, knob: int | None, seed: int,
                                      calls: int | None) -> None:
    path = write_policy(tmp_path_factory.mktemp("p") / "p.json", max_tokens=40, caps=(100, 400),
                        choices={"easy": sample(16, 0.95),
                                 "hard": {"kind": "strategy", "spec": "self-consistency:n_samples=8"}})
    b = endless()
    r = execute(Auto(budget_tokens=knob, policy=path), PROBLEM, b,
                Budget(max_completion_tokens=budget, max_calls=calls), rng=random.Random(seed))
    spent = r.ledger.total()
    assert spent.completion_tokens <= min(budget, knob or budget)
    assert calls is None or spent.calls <= calls
    assert spent.completion_tokens == sum(c.completion_tokens for c in r.candidates)
    if not r.candidates:
        assert r.stop_reason == "budget"


def test_same_seed_same_run(policy) -> None:
    path = policy(hard=sample(12, 0.9), max_tokens=40)
    a = execute(Auto(policy=path), PROBLEM, endless(), Budget(), rng=random.Random(11))
    b = execute(Auto(policy=path), PROBLEM, endless(), Budget(), rng=random.Random(11))
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates] and a.answer == b.answer


def test_a_sampling_action_gives_up_on_a_scattered_vote(policy) -> None:
    """Hard first wave (1, 2, 3, none); the action samples to 16 with a futility stop after 8 chains at share
    0.34: wave 2 adds 4, 5, 6, 7 -> 8 chains, leader 1 <= 2.72 -> futile at 8 chains, 2 calls."""
    script = [words(2, "1"), words(2, "2"), words(2, "3"), words(2)] + [words(2, str(k)) for k in (4, 5, 6, 7)]
    hard = {**sample(16, 0.95), "give_up_after": 8, "give_up_share": 0.34}
    b = ScriptedBackend(script + [words(2, "1")] * 8)
    result = execute(Auto(policy=policy(hard=hard)), PROBLEM, b, Budget(), rng=random.Random(0))
    assert [r.n for r in b.requests] == [4, 4] and len(result.candidates) == 8
    (stop,) = events(result, "stop")
    assert stop["reason"] == "futile" and "leader holds 1 of them" in stop["detail"]
    assert events(result, "action")[0]["label"] == ("sample:max_samples=16,threshold=0.95,give_up_after=8,"
                                                    "give_up_share=0.34")


def test_greedy_first_puts_the_greedy_chain_first_and_continues_the_seeded_draw(policy) -> None:
    """greedy_first: the first wave is one call of two requests, the greedy strategy's (n 1, temperature 0, the
    policy's max_tokens) and 3 chains of the seeded draw from sample 0; a later wave continues that draw at sample 3
    (not 4: the greedy chain is not part of it). Greedy "5", sampled 1, 2, 3: agreement 1/4 -> hard -> sample to 8
    chains; the votes include the greedy chain."""
    script = [words(2, "5"), words(2, "1"), words(2, "2"), words(2, "3")] + [words(2, "5")] * 4
    b = ScriptedBackend(script)
    result = execute(Auto(policy=policy(hard=sample(8), greedy_first=True)), PROBLEM, b, Budget(), rng=random.Random(0))
    greedy, first, second = b.requests
    assert b.calls == 2 and (greedy.n, greedy.temperature, greedy.seed, greedy.max_tokens) == (1, 0.0, None, 10)
    assert (first.n, first.first_sample, second.n, second.first_sample) == (3, 0, 4, 3)
    assert first.seed == second.seed and first.temperature == 0.7
    assert result.answer == "5" and len(result.candidates) == 8
    waves = events(result, "auto_wave")
    assert waves[0]["greedy"] == 1 and waves[0]["n"] == 4 and waves[0]["usage"]["completion_tokens"] == 8
    assert waves[1]["greedy"] == 0
    # the greedy chain is exactly what the greedy strategy asks for, so a run's greedy unit serves it
    gb = ScriptedBackend([words(2, "5")])
    execute(build_strategy("greedy:max_tokens=10"), PROBLEM, gb, Budget(), rng=random.Random(0))
    assert gb.requests[0] == greedy


def test_greedy_breaks_a_tie_its_answer_is_in_and_only_that(policy) -> None:
    """greedy_breaks_ties: greedy "5", sampled 1, 2, 3: a 4-way tie with 5 in it -> "5", by the greedy chain. Waves
    of 5, greedy "5", sampled 1, 1, 2, 2: 1 and 2 tie, 5 is not among them -> the seeded rng picks (as without the
    knob). Greedy "5", sampled 1, 1, 3: no tie -> "1"."""
    def run(script: list[str], **kw) -> object:
        path = policy(easy=STOP, hard=STOP, greedy_first=True, greedy_breaks_ties=True, **kw)
        return execute(Auto(policy=path), PROBLEM, ScriptedBackend(script), Budget(), rng=random.Random(0))

    r = run([words(2, "5"), words(2, "1"), words(2, "2"), words(2, "3")])
    (vote,) = events(r, "vote")
    assert r.answer == "5" and vote["tie_broken_by_greedy"] and not vote["tie_broken_by_rng"]
    r = run([words(2, "5"), words(2, "1"), words(2, "1"), words(2, "2"), words(2, "2")], wave_size=5)
    (vote,) = events(r, "vote")
    assert r.answer in {"1", "2"} and vote["tie_broken_by_rng"] and not vote["tie_broken_by_greedy"]
    r = run([words(2, "5"), words(2, "1"), words(2, "1"), words(2, "3")])
    (vote,) = events(r, "vote")
    assert r.answer == "1" and not vote["tie_broken_by_rng"] and not vote["tie_broken_by_greedy"]


def test_greedy_breaks_ties_needs_greedy_first(policy) -> None:
    with pytest.raises(ValueError, match="greedy_breaks_ties needs greedy_first"):
        execute(Auto(policy=policy(greedy_breaks_ties=True)), PROBLEM, endless(), Budget(), rng=random.Random(0))
