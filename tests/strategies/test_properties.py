"""Properties every strategy must have, checked on an endless seeded fake over many budgets: spend never exceeds
the budget (completion tokens and calls, every role counted), the same rng seed replays the same run, the trace is
JSON, and a run cut short by the budget says so."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies.helpers import PROBLEM, algo_trace, endless
from thinkscale.strategies.base import REGISTRY, build_strategy, load_all
from thinkscale.strategies.run import execute
from thinkscale.types import Budget

# Small knobs so that budgets in the tens to hundreds of tokens bind at every stage of every strategy.
SPECS = [
    "greedy:max_tokens=20",
    "self-consistency:n_samples=4,max_tokens=20",
    "best-of-n:n_samples=4,max_tokens=20",
    "weighted-sc:n_samples=4,max_tokens=20,verifier=confidence-lowest-group",
    "self-refine:max_rounds=3,max_tokens=20,critique_max_tokens=10",
    "budget-forcing:min_thinking_tokens=30,max_thinking_tokens=60,answer_max_tokens=10,think_end=</think>",
    "rsa:population=3,aggregation_size=2,rounds=2,max_tokens=20",
    "adaptive-sc:max_samples=8,wave_size=4,max_tokens=20",
]
NAMES = sorted({s.partition(":")[0] for s in SPECS})


def test_the_specs_cover_this_files_strategies():
    load_all()
    mine = {"greedy", "self-consistency", "best-of-n", "weighted-sc", "self-refine", "budget-forcing", "rsa",
            "adaptive-sc"}
    assert mine <= set(REGISTRY) and set(NAMES) == mine


def run(spec: str, budget: Budget, seed: int):
    backend = endless()
    return execute(build_strategy(spec), PROBLEM, backend, budget, rng=random.Random(seed)), backend


budgets = st.builds(Budget, max_completion_tokens=st.one_of(st.none(), st.integers(1, 400)),
                    max_calls=st.one_of(st.none(), st.integers(1, 25)))


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=40, deadline=None)
@given(budget=budgets, seed=st.integers(0, 2**16))
def test_spend_never_exceeds_the_budget(spec, budget, seed):
    result, backend = run(spec, budget, seed)
    total = result.ledger.total()
    if budget.max_completion_tokens is not None:
        assert total.completion_tokens <= budget.max_completion_tokens
    if budget.max_calls is not None:
        assert total.calls <= budget.max_calls
    # the ledger is exactly what the fake reported: generator calls = requests the fake served
    assert result.ledger.total().completion_tokens == sum(
        e[1].completion_tokens for e in result.ledger.entries)
    json.dumps(list(algo_trace(result)))  # JSON-serialisable, whatever happened


@pytest.mark.parametrize("spec", SPECS)
def test_a_tight_budget_stops_with_reason_budget(spec):
    """15 completion tokens cannot pay for any of these strategies' full runs (20-token chains, or 60 thinking
    tokens): every one either spends nothing more or stops early, and says "budget"."""
    if spec.startswith("greedy"):
        pytest.skip("greedy caps its one sample at the budget instead of stopping")
    result, _ = run(spec, Budget(max_completion_tokens=15), 0)
    assert result.stop_reason == "budget"
    assert result.ledger.total().completion_tokens <= 15


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_seed_same_run(spec, seed):
    a, ba = run(spec, Budget(), seed)
    b, bb = run(spec, Budget(), seed)
    assert json.dumps(list(algo_trace(a))) == json.dumps(list(algo_trace(b)))
    assert a.answer == b.answer and a.candidates == b.candidates
    assert [r.seed for r in ba.requests] == [r.seed for r in bb.requests]


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("greedy")])
def test_request_seeds_come_from_the_rng(spec):
    """Different rng seeds give different sampling seeds (greedy samples at temperature 0 and sends none)."""
    seeds = {tuple(r.seed for r in run(spec, Budget(), s)[1].requests) for s in range(4)}
    assert len(seeds) == 4
    assert all(all(x is not None for x in t) for t in seeds)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith(("greedy", "self-consistency"))])
def test_no_call_starts_after_the_time_budget(spec):
    """The fake sleeps 5 ms per computed token, so the first call alone outlasts a 10 ms budget: every multi-call
    strategy makes that one call, starts nothing after it (no scoring, no second round), and says "budget"."""
    backend = endless(seconds_per_token=0.005)
    result = execute(build_strategy(spec), PROBLEM, backend, Budget(max_seconds=0.01), rng=random.Random(0))
    assert backend.calls == 1 and backend.score_requests == []
    assert result.stop_reason == "budget"
