"""The replay backend: it serves a run's stored chains for exactly the requests that drew them, and refuses the
rest by name."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.policy.helpers import hand_run
from thinkscale.eval.replay import ReplayBackend, ReplayMissing, run_problems
from thinkscale.eval.runner import RNG_SCHEME
from thinkscale.eval.store import open_existing
from thinkscale.strategies.greedy import Greedy
from thinkscale.strategies.run import execute
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.types import Budget, GenRequest

CHAINS = [("ok", 3), ("bad", 4), ("ok", 5), (None, 6), ("ok", 7), ("bad2", 8)]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return hand_run(tmp_path / "run", [CHAINS, CHAINS], greedy=[("ok", 2), ("bad", 9)])


def open_replay(run: Path):
    store = open_existing(run)
    try:
        return ReplayBackend.from_store(store), run_problems(store)
    finally:
        store.close()


def test_replaying_self_consistency_gives_back_the_stored_run(run: Path) -> None:
    """SC at 6 chains with the harness's rng for the problem: the same chains, tokens 3+4+...+8 = 33, the stored
    prompt tokens, and a continuation (first_sample) serves the later chains."""
    replay, problems = open_replay(run)
    ep = problems[sorted(problems)[0]]
    rng = random.Random(RNG_SCHEME.format(seed=0, problem=ep.id, model="m"))
    res = execute(SelfConsistency(n_samples=6, max_tokens=10), ep.problem, replay, Budget(), rng=rng)
    assert [c.completion_tokens for c in res.candidates] == [3, 4, 5, 6, 7, 8]
    assert res.answer == ep.reference
    u = res.ledger.total()
    assert (u.completion_tokens, u.prompt_tokens, u.cached_prompt_tokens, u.calls) == (33, 30, None, 1)
    seed = replay.requests[0].seed
    (tail,) = replay.generate([GenRequest(messages=ep.problem.messages, n=2, temperature=0.7, top_p=0.95,
                                          max_tokens=10, seed=seed, first_sample=4)])
    assert [s.completion_tokens for s in tail.samples] == [7, 8] and tail.usage.completion_tokens == 15
    g = execute(Greedy(max_tokens=10), ep.problem, replay, Budget(), rng=random.Random(0))
    assert g.answer == ep.reference and g.ledger.total().completion_tokens == 2


def test_requests_the_store_does_not_hold_are_refused_by_name(run: Path) -> None:
    replay, problems = open_replay(run)
    ep = problems[sorted(problems)[0]]
    seed = random.Random(RNG_SCHEME.format(seed=0, problem=ep.id, model="m")).randrange(2**31 - 1)
    ok = dict(messages=ep.problem.messages, n=2, temperature=0.7, top_p=0.95, max_tokens=10, seed=seed)
    for change, message in ((dict(seed=seed + 1), "no stored chains for this request"),
                            (dict(temperature=0.8), "no stored chains"), (dict(max_tokens=11), "no stored chains"),
                            (dict(first_sample=5), "holds 6 chains .* asks for chains 5..6")):
        with pytest.raises(ReplayMissing, match=message):
            replay.generate([GenRequest(**{**ok, **change})])
    with pytest.raises(NotImplementedError, match="logprobs; ReplayBackend cannot give them"):
        replay.generate([GenRequest(**{**ok, "logprobs": True})])
    with pytest.raises(ReplayMissing, match="no stored chains"):
        replay.generate([GenRequest(messages=ep.problem.messages, n=1, temperature=0.7)])  # no seed
