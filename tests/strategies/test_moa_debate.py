"""Mixture-of-agents and multi-agent debate on the scripted fake: what each prompt contains, batching, the per-model
ledger, the vote, and every budget."""

from __future__ import annotations

import random
import time

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, endless, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.debate import Debate
from thinkscale.strategies.moa import MixtureOfAgents
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, GenRequest


def last_user(req: GenRequest) -> str:
    assert req.messages is not None
    return next(m.content for m in reversed(req.messages) if m.role == "user")


# ------------------------------------------------------------------ mixture-of-agents


def test_moa_layer_prompts_contain_exactly_the_previous_layers_answers() -> None:
    """3 proposers, 2 layers: layer 1 answers the problem (one batched call of 3 requests), layer 2's three prompts
    each show exactly layer 1's three texts, the aggregator's prompt exactly layer 2's; the answer is the
    aggregator's."""
    layer1 = ["alpha \\boxed{1}", "beta \\boxed{2}", "gamma \\boxed{2}"]
    layer2 = ["delta \\boxed{2}", "epsilon \\boxed{2}", "zeta \\boxed{3}"]
    b = ScriptedBackend(layer1 + layer2 + ["omega \\boxed{2}"])
    result = execute(MixtureOfAgents(n_proposers=3, layers=2, max_tokens=20), PROBLEM, b, Budget(),
                     rng=random.Random(0))
    assert b.calls == 3 and [len(r) for r in (b.requests[:3], b.requests[3:6], b.requests[6:])] == [3, 3, 1]
    assert all(last_user(r) == "What is 6 times 7?" for r in b.requests[:3])
    for req in b.requests[3:6]:
        shown = [t for t in layer1 + layer2 if t in last_user(req)]
        assert shown == layer1 and "What is 6 times 7?" in last_user(req)
    assert [t for t in layer1 + layer2 if t in last_user(b.requests[6])] == layer2
    assert result.answer == "2" and result.chosen_index == 6 and result.stop_reason == "done"
    layers = [e for e in algo_trace(result) if e["event"] == "moa_layer"]
    assert [(e["wrote"], e["read"]) for e in layers] == [([0, 1, 2], []), ([3, 4, 5], [0, 1, 2])]


def test_moa_proposers_on_several_models_are_batched_and_charged_per_model() -> None:
    """Models a|b cycled over 3 proposers: a gets proposers 0 and 2 (one call, 2 requests), b proposer 1; the
    aggregator runs on the run's own model. Each backend's usage lands on its own model in the ledger."""
    a, b, own = (ScriptedBackend([words(2, "4")] * 2), ScriptedBackend([words(3, "4")]),
                 ScriptedBackend([words(5, "4")]))
    result = execute(MixtureOfAgents(n_proposers=3, layers=1, models="a|b", temperatures="0.3|0.9", max_tokens=20),
                     PROBLEM, own, Budget(), rng=random.Random(0), backend_for={"a": a, "b": b}.__getitem__)
    assert (a.calls, b.calls, own.calls) == (1, 1, 1)
    assert [r.temperature for r in a.requests] == [0.3, 0.3] and [r.temperature for r in b.requests] == [0.9]
    by_model = result.ledger.by_model()
    assert by_model["a"].completion_tokens == 4 and by_model["b"].completion_tokens == 3
    assert by_model[None].completion_tokens == 5 and result.answer == "4"


def test_moa_without_other_models_says_how_to_give_them() -> None:
    with pytest.raises(ValueError, match="only its own model"):
        execute(MixtureOfAgents(models="other"), PROBLEM, endless(), Budget(), rng=random.Random(0))


@pytest.mark.parametrize("budget", [Budget(max_completion_tokens=100), Budget(max_completion_tokens=79),
                                    Budget(max_calls=5), Budget(max_calls=8), Budget(max_calls=3)])
def test_moa_whole_layers_and_the_aggregation_fit_every_budget(budget: Budget) -> None:
    """max_tokens 20, 3 proposers: a layer needs 60 tokens and 3 calls, the aggregation 20 and 1."""
    b = endless()
    result = execute(MixtureOfAgents(n_proposers=3, layers=3, max_tokens=20), PROBLEM, b, budget,
                     rng=random.Random(0))
    total = result.ledger.total()
    assert budget.max_completion_tokens is None or (total.completion_tokens or 0) <= budget.max_completion_tokens
    assert budget.max_calls is None or total.calls <= budget.max_calls
    assert total.calls == len(b.requests) and len(result.candidates) % 3 in (0, 1)
    if result.candidates:
        aggregated = result.candidates[-1].answer is not None or len(result.candidates) % 3 == 0
        assert result.stop_reason == "budget" and (result.chosen_index == len(result.candidates) - 1) == aggregated
    else:
        assert result.stop_reason == "budget" and b.calls == 0


def test_moa_falls_back_to_the_last_layers_vote_when_the_aggregator_gives_no_answer() -> None:
    """The aggregator writes no answer (the 0.5B once wrote a bare "ANSWER"): by default the last layer's majority
    answers and the trace says so; with fallback=none the run has no answer, as the aggregator wrote."""
    texts = ["a \\boxed{7}", "b \\boxed{5}", "c \\boxed{7}", "ANSWER"]
    voted = execute(MixtureOfAgents(n_proposers=3, layers=1, max_tokens=20), PROBLEM, ScriptedBackend(texts),
                    Budget(), rng=random.Random(0))
    assert voted.answer == "7" and voted.chosen_index == 0 and voted.stop_reason == "done"
    (agg,) = [e for e in algo_trace(voted) if e["event"] == "moa_aggregate"]
    assert agg["wrote"] == 3 and agg["fell_back"] is True
    assert [e["counts"] for e in algo_trace(voted) if e["event"] == "vote"] == [{"7": 2.0, "5": 1.0}]
    bare = execute(MixtureOfAgents(n_proposers=3, layers=1, max_tokens=20, fallback="none"), PROBLEM,
                   ScriptedBackend(texts), Budget(), rng=random.Random(0))
    assert bare.answer is None and bare.chosen_index == 3
    assert [e["fell_back"] for e in algo_trace(bare) if e["event"] == "moa_aggregate"] == [False]


def test_moa_knobs_are_checked() -> None:
    for spec, needle in [("moa:fallback=random", "fallback must be one of vote, none"),
                         ("moa:temperatures=hot", "not a number"), ("moa:models=a||b", "empty entry"),
                         ("moa:n_proposers=0", "n_proposers"), ("moa:temperatures=-1", ">= 0")]:
        with pytest.raises(ValueError, match=needle):
            build_strategy(spec)


# ------------------------------------------------------------------ debate


def test_debate_rounds_show_each_agent_the_others_answers_once_and_its_own_once() -> None:
    """3 agents, 2 rounds. In round r, agent i's conversation holds its own answers as assistant turns (each once)
    and, in the last user turn, exactly the other agents' round r-1 answers."""
    r0 = ["A0 \\boxed{1}", "B0 \\boxed{2}", "C0 \\boxed{2}"]
    r1 = ["A1 \\boxed{2}", "B1 \\boxed{2}", "C1 \\boxed{3}"]
    r2 = ["A2 \\boxed{2}", "B2 \\boxed{2}", "C2 \\boxed{2}"]
    b = ScriptedBackend(r0 + r1 + r2)
    result = execute(Debate(n_agents=3, rounds=2, max_tokens=20), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.calls == 3 and b.requests[0].n == 3 and len(b.requests) == 1 + 3 + 3
    everything = r0 + r1 + r2
    for rnd, prev in ((1, r0), (2, r1)):
        for i, req in enumerate(b.requests[1 + 3 * (rnd - 1): 1 + 3 * rnd]):
            assert req.messages is not None
            others = [t for t in everything if t in req.messages[-1].content]
            assert others == [prev[j] for j in range(3) if j != i]  # the others' latest, not its own
            own = [m.content for m in req.messages if m.role == "assistant"]
            assert own == [r0[i], r1[i]][:rnd]  # its own answers, each once
            text = "\n".join(m.content for m in req.messages)
            assert all(text.count(t) <= 1 for t in everything)
            # Qwen's words for the answer format: no "\boxed{ANSWER}" placeholder for the model to copy
            assert req.messages[-1].content.endswith("put your final answer within \\boxed{}.")
    assert result.answer == "2" and result.votes == {"2": 3.0} and result.chosen_index == 6
    assert result.candidates[6].parent == 3 and result.candidates[3].parent == 0


def test_debate_stops_at_whole_rounds_within_the_budget() -> None:
    """max_tokens 10, 3 agents: a round needs 30 tokens (round 0: 1 call, later rounds 3): 70 tokens pay for
    round 0 and one more, not two; 4 calls the same."""
    for budget in (Budget(max_completion_tokens=70), Budget(max_calls=4)):
        b = endless()
        result = execute(Debate(n_agents=3, rounds=3, max_tokens=10), PROBLEM, b, budget, rng=random.Random(1))
        rounds = [e for e in algo_trace(result) if e["event"] == "debate_round"]
        assert len(rounds) == 2 and result.stop_reason == "budget" and len(result.candidates) == 6
        total = result.ledger.total()
        assert (total.completion_tokens or 0) <= (budget.max_completion_tokens or 10**9)
        assert total.calls <= (budget.max_calls or 10**9)


def test_debate_with_zero_rounds_is_a_majority_of_n_samples_and_a_seconds_budget_holds() -> None:
    b = ScriptedBackend([words(2, "5"), words(2, "5"), words(2, "6")])
    assert execute(Debate(n_agents=3, rounds=0), PROBLEM, b, Budget(), rng=random.Random(0)).answer == "5"

    def slow(req: GenRequest, j: int) -> str:
        time.sleep(0.02)
        return words(2, "5")

    b = ScriptedBackend([slow] * 1000)
    r = execute(Debate(n_agents=2, rounds=200, max_tokens=10), PROBLEM, b, Budget(max_seconds=0.3),
                rng=random.Random(0))
    assert r.stop_reason == "budget" and r.answer == "5"
    rounds = sum(e["event"] == "debate_round" for e in algo_trace(r))
    assert 2 <= rounds < 20  # each round sleeps 2 x 0.02 s: the clock stops it long before 200 rounds
