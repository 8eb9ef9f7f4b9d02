"""Each strategy family end to end on the real smallest model (smollm2-135m) with a tiny budget: it runs through
llama.cpp, keeps to the budget, charges generator and verifier separately and returns a JSON trace. Seconds each."""

from __future__ import annotations

import json
import random

import pytest

from tests.strategies.helpers import algo_trace
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Problem, Role

pytestmark = pytest.mark.model

PROBLEM = Problem.from_text("What is 2 plus 3?", system="Answer briefly, then write the answer as \\boxed{N}.")


@pytest.fixture(autouse=True)
def _leave_the_shared_backend_clean(llama_backend):
    """The session's backend is shared with other suites: leave no cached sequences behind."""
    yield
    llama_backend.clear_cache()


def run(spec: str, backend, budget: Budget):
    result = execute(build_strategy(spec), PROBLEM, backend, budget, rng=random.Random(0))
    spent = result.ledger.total()
    if budget.max_completion_tokens is not None:
        assert spent.completion_tokens <= budget.max_completion_tokens
    if budget.max_calls is not None:
        assert spent.calls <= budget.max_calls
    json.dumps(list(algo_trace(result)))
    assert result.candidates and spent.calls >= 1
    return result


@pytest.mark.parametrize(("spec", "verifier_calls"), [
    ("best-of-n:n_samples=2,max_tokens=12,verifier=pyes", 4),  # Yes and No per chain
    ("weighted-sc:n_samples=2,max_tokens=12,verifier=confidence-mean", 0),  # reads the generator's logprobs
])
def test_verifier_strategies(llama_backend, spec, verifier_calls):
    result = run(spec, llama_backend, Budget(max_completion_tokens=24))
    assert all(len(c.scores) == 1 and 0.0 <= c.scores[0] <= 1.0 for c in result.candidates)
    gen = result.ledger.total(Role.GENERATOR)
    assert gen.calls == 1 and gen.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    ver = result.ledger.total(Role.VERIFIER)
    assert ver.calls == verifier_calls and ver.completion_tokens == 0
    if verifier_calls:
        assert ver.cached_prompt_tokens > 0  # the judge's follow-up turn reuses the generator's KV


def test_self_refine(llama_backend):
    result = run("self-refine:max_rounds=1,max_tokens=12,critique_max_tokens=8", llama_backend,
                 Budget(max_completion_tokens=40))
    calls = result.ledger.total().calls
    assert calls in (2, 3)  # draft + critique (+ revision unless judged correct)
    # every call after the first extends the conversation: its prompt is mostly cached
    usages = [e["usage"] for e in algo_trace(result) if "usage" in e]
    assert all(u["cached_prompt_tokens"] > 0 for u in usages[1:])


def test_budget_forcing(llama_backend):
    """Both ends of budget forcing on greedy smollm2-135m. Asked "What is 2 plus 3? Answer with one number." it ends
    its turn after 8 tokens ("2 + 3 = 5"): with min_thinking_tokens=24 that end must be suppressed and "Wait"
    appended, until it has thought 24 tokens or used its 2 waits. On PROBLEM it writes 136 tokens before it ends:
    with max_thinking_tokens=8 it must be cut at exactly 8 and the answer forced with "Final answer:"."""
    short = Problem.from_text("What is 2 plus 3? Answer with one number.")
    result = execute(build_strategy("budget-forcing:min_thinking_tokens=24,max_thinking_tokens=48,max_waits=2,"
                                    "answer_max_tokens=6"), short, llama_backend, Budget(max_completion_tokens=64),
                     rng=random.Random(0))
    (cand,) = result.candidates
    end = algo_trace(result)[-1]
    gen = result.ledger.total(Role.GENERATOR)
    assert end["event"] == "answer" and 1 <= end["waits"] <= 2
    assert cand.text[len(cand.steps[0]):].lstrip().startswith("Wait")  # the first end of thinking was suppressed
    assert end["thinking_tokens"] >= 24 or end["waits"] == 2
    assert end["thinking_tokens"] <= 48 and gen.calls == len(cand.steps) >= end["waits"] + 1
    assert gen.completion_tokens == cand.completion_tokens == end["thinking_tokens"] + end["answer_tokens"]
    llama_backend.clear_cache()

    result = run("budget-forcing:max_thinking_tokens=8,answer_max_tokens=6", llama_backend,
                 Budget(max_completion_tokens=30))
    (cand,) = result.candidates
    end = algo_trace(result)[-1]
    gen = result.ledger.total(Role.GENERATOR)
    assert (end["event"], end["thinking_tokens"], end["waits"]) == ("answer", 8, 0) and result.stop_reason == "done"
    thinking, answer = cand.steps  # one thinking call cut at the maximum, then one answer call
    assert cand.text.startswith(thinking) and cand.text.endswith("Final answer:" + answer)
    assert gen.calls == 2 and 1 <= end["answer_tokens"] <= 6
    assert gen.completion_tokens == cand.completion_tokens == 8 + end["answer_tokens"]


def test_rsa(llama_backend):
    result = run("rsa:population=2,aggregation_size=2,rounds=1,max_tokens=10", llama_backend,
                 Budget(max_completion_tokens=40))
    assert len(result.candidates) == 4
    assert next(e for e in algo_trace(result) if e["event"] == "aggregate")["members"] in ([[0, 1], [0, 1]],
                                                                                      [[0, 1], [1, 0]],
                                                                                      [[1, 0], [0, 1]],
                                                                                      [[1, 0], [1, 0]])
