"""Beam search, DVTS and MCTS end to end on the real smallest model (smollm2-135m) with a tiny budget: the budget holds,
generator and verifier are charged apart, and every expansion after the first reuses its parent's cached prefix."""

from __future__ import annotations

import json
import random

import pytest

from tests.strategies.helpers import algo_trace
from thinkscale.strategies.beam_search import BeamSearch
from thinkscale.strategies.dvts import DVTS
from thinkscale.strategies.mcts import MCTS, ValueSource
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Problem, Role

pytestmark = pytest.mark.model

PROBLEM = Problem.from_text("Tom has 3 apples and buys 4 more. How many apples does he have?",
                            system="Solve step by step, one short paragraph per step, blank lines between steps.")


@pytest.fixture(autouse=True)
def _leave_the_shared_backend_clean(llama_backend):
    llama_backend.clear_cache()
    yield
    llama_backend.clear_cache()


@pytest.mark.parametrize("strategy", [
    BeamSearch(beam_width=2, expansions_per_beam=2, max_step_tokens=8),
    DVTS(n_subtrees=2, expansions_per_step=2, max_step_tokens=8),
    MCTS(n_simulations=3, expansions_per_node=2, max_step_tokens=8, value=ValueSource.PRM),
], ids=["beam", "dvts", "mcts"])
def test_tiny_search_on_the_real_model(llama_backend, strategy):
    """Budget 40 completion tokens at 8 per step: at most 5 samples. Each request after the first extends a prompt
    whose step was just sampled into the KV cache, so it computes only the step boundary (a few tokens), never the
    ~60-token problem prompt again."""
    before = dict(llama_backend.counters)
    result = execute(strategy, PROBLEM, llama_backend, Budget(max_completion_tokens=40), rng=random.Random(0))
    gen = [u for r, u in result.ledger.entries if r is Role.GENERATOR]
    assert result.ledger.total().completion_tokens <= 40
    assert result.candidates and result.ledger.total(Role.VERIFIER).calls > 0
    assert gen[0].computed_prompt_tokens == gen[0].prompt_tokens > 40
    assert all(u.computed_prompt_tokens is not None and u.computed_prompt_tokens <= 4 for u in gen[1:])
    assert llama_backend.counters["prompt_tokens_reused"] > before["prompt_tokens_reused"]
    json.dumps(algo_trace(result))
