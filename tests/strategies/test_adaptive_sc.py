"""Adaptive self-consistency on the scripted fake: the Beta stopping rule against hand-computed posteriors, waves of
one batched call, early stop on an easy problem, the budget, reproducibility, and the DeepConf confidence filter."""

from __future__ import annotations

import json
import math
import random

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, endless, item, words
from thinkscale.backends.base import Capabilities
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.adaptive_sc import AdaptiveSelfConsistency, majority_stays_probability
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, ConfidenceStop


def run(script, budget: Budget | None = None, seed: int = 0, **knobs):
    b = ScriptedBackend(script)
    return execute(AdaptiveSelfConsistency(**knobs), PROBLEM, b, budget or Budget(), rng=random.Random(seed)), b


# ------------------------------------------------------------------ the stopping rule


def test_majority_stays_probability_matches_hand_computed_posteriors():
    # {a:4}: v1 4, v2 0 -> 1 - I_0.5(5, 1) = 1 - C(5,5)/32 = 1 - 0.5^5 = 31/32
    assert majority_stays_probability({"a": 4}) == pytest.approx(0.96875, abs=1e-12)
    # {a:3, b:1}: 1 - I_0.5(4, 2) = 1 - (C(5,4) + C(5,5))/32 = 1 - 6/32 = 26/32
    assert majority_stays_probability({"a": 3, "b": 1}) == pytest.approx(0.8125, abs=1e-12)
    # {a:2, b:2}: 1 - I_0.5(3, 3) = 1 - (10 + 5 + 1)/32 = 0.5 (a tie settles nothing)
    assert majority_stays_probability({"a": 2, "b": 2}) == pytest.approx(0.5, abs=1e-12)
    # {a:1}: 1 - I_0.5(2, 1) = 1 - 1/4
    assert majority_stays_probability({"a": 1}) == pytest.approx(0.75, abs=1e-12)
    # {a:3}: 1 - 0.5^4 = 0.9375 < 0.95; only the top two count: {a:3, b:1, c:1} == {a:3, b:1}
    assert majority_stays_probability({"a": 3}) == pytest.approx(0.9375, abs=1e-12)
    assert majority_stays_probability({"a": 3, "b": 1, "c": 1}) == majority_stays_probability({"b": 1, "a": 3})
    # {a:5, b:3}: 1 - I_0.5(6, 4) = 1 - (C(9,6)+C(9,7)+C(9,8)+C(9,9))/512 = 1 - (84+36+9+1)/512 = 382/512
    assert majority_stays_probability({"a": 5, "b": 3}) == pytest.approx(382 / 512, abs=1e-12)
    assert majority_stays_probability({}) == 0.0


def test_majority_stays_probability_agrees_with_scipy_when_installed():
    special = pytest.importorskip("scipy.special")
    for v1 in range(0, 17):
        for v2 in range(0, v1 + 1):
            want = 1.0 - float(special.betainc(v1 + 1, v2 + 1, 0.5)) if v1 else 0.0
            assert majority_stays_probability({"a": v1, "b": v2}) == pytest.approx(want, abs=1e-12), (v1, v2)


def test_majority_stays_probability_refuses_bad_counts():
    with pytest.raises(ValueError, match="counts"):
        majority_stays_probability({"a": -1})
    with pytest.raises(ValueError, match="counts"):
        majority_stays_probability({"a": 1.5})  # type: ignore[dict-item]


# ------------------------------------------------------------------ waves and stopping


def test_an_easy_problem_stops_after_the_first_wave():
    """4 of 4 agree: P = 0.96875 >= 0.95 -> settled after one backend call."""
    result, b = run([words(3, "42")] * 4)
    assert b.calls == 1 and len(b.requests) == 1 and b.requests[0].n == 4
    assert result.answer == "42" and result.stop_reason == "done" and len(result.candidates) == 4
    wave, stop = algo_trace(result)[0], algo_trace(result)[1]
    assert wave["event"] == "wave" and wave["n"] == 4 and wave["counts"] == {"42": 4}
    assert wave["P"] == pytest.approx(0.96875)
    assert stop == {"event": "stop", "reason": "settled", "detail": "4 chains, P = 0.9688"}
    assert result.chosen is result.candidates[0]


def test_a_split_problem_samples_up_to_max_samples():
    script = [words(2, "1"), words(2, "2")] * 8
    result, b = run(script, max_samples=16, wave_size=4)
    assert b.calls == 4 and [r.n for r in b.requests] == [4, 4, 4, 4]
    assert len(result.candidates) == 16 and result.stop_reason == "done"
    waves = [e for e in algo_trace(result) if e["event"] == "wave"]
    assert [w["P"] for w in waves] == [pytest.approx(0.5)] * 4
    assert [e for e in algo_trace(result) if e["event"] == "stop"][0]["reason"] == "max_samples"
    assert result.answer in ("1", "2")
    # the waves continue one seeded draw: one seed, chains 0-3, 4-7, 8-11, 12-15
    assert len({r.seed for r in b.requests}) == 1
    assert [r.first_sample for r in b.requests] == [0, 4, 8, 12]


def test_its_chains_are_the_ones_self_consistency_draws_with_the_same_rng():
    from thinkscale.strategies.self_consistency import SelfConsistency

    script = [words(2, "1"), words(2, "2")] * 8
    _, ba = run(script, max_samples=8, wave_size=4, seed=3)
    sc_backend = ScriptedBackend(script)
    execute(SelfConsistency(n_samples=8), PROBLEM, sc_backend, Budget(), rng=random.Random(3))
    (sc_req,) = sc_backend.requests
    assert {r.seed for r in ba.requests} == {sc_req.seed}
    assert [r.sample_seed(j) for r in ba.requests for j in range(r.n)] == [sc_req.sample_seed(j) for j in range(8)]


def test_it_stops_when_the_leader_is_settled_after_a_later_wave():
    """Wave 1: 3 x "7", 1 x "8" -> P 0.8125; wave 2 adds 4 x "7": {7: 7, 8: 1} -> 1 - 10/512 > 0.95."""
    script = [words(2, "7")] * 3 + [words(2, "8")] + [words(2, "7")] * 4
    result, b = run(script, max_samples=16)
    assert b.calls == 2 and result.answer == "7"
    waves = [e for e in algo_trace(result) if e["event"] == "wave"]
    assert waves[0]["P"] == pytest.approx(0.8125)
    assert waves[1]["counts"] == {"7": 7, "8": 1}
    assert waves[1]["P"] == pytest.approx(1 - (1 + 9) / 512)
    assert algo_trace(result)[-2]["reason"] == "settled"


def test_unanswered_samples_do_not_vote():
    script = [words(3)] * 2 + [words(2, "5")] * 2 + [words(2, "5")] * 4
    result, _ = run(script, max_samples=8)
    waves = [e for e in algo_trace(result) if e["event"] == "wave"]
    assert waves[0]["counts"] == {"5": 2} and waves[0]["P"] == pytest.approx(1 - 0.5**3)
    assert waves[1]["counts"] == {"5": 6} and result.answer == "5"


def test_the_last_wave_is_shrunk_to_max_samples():
    script = [words(2, "1"), words(2, "2")] * 3
    result, b = run(script, max_samples=6, wave_size=4)
    assert [r.n for r in b.requests] == [4, 2] and len(result.candidates) == 6


# ------------------------------------------------------------------ budget, seeds, trace


@pytest.mark.parametrize("budget", [
    Budget(max_completion_tokens=1), Budget(max_completion_tokens=50), Budget(max_completion_tokens=100),
    Budget(max_completion_tokens=333), Budget(max_calls=1), Budget(max_calls=2),
    Budget(max_completion_tokens=150, max_calls=3),
])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("confidence_filter", [False, True])
def test_the_budget_is_never_exceeded(budget, seed, confidence_filter):
    backend = endless()
    s = AdaptiveSelfConsistency(max_samples=16, wave_size=4, max_tokens=20, confidence_filter=confidence_filter)
    result = execute(s, PROBLEM, backend, budget, rng=random.Random(seed))
    total = result.ledger.total()
    if budget.max_completion_tokens is not None:
        assert total.completion_tokens <= budget.max_completion_tokens
    if budget.max_calls is not None:
        assert total.calls <= budget.max_calls
    assert total.calls == backend.calls
    assert total.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    json.dumps(list(algo_trace(result)))
    if algo_trace(result)[-2]["reason"] == "budget":
        assert result.stop_reason == "budget"


def test_no_affordable_sample_returns_budget_without_calling():
    result, b = run([], budget=Budget(max_completion_tokens=10), max_tokens=20)
    assert b.calls == 0 and result.answer is None and result.stop_reason == "budget"
    assert result.candidates == () and algo_trace(result)[-2]["reason"] == "budget"


def test_a_wave_is_shrunk_to_what_the_budget_affords():
    """100 tokens at max_tokens 20: 4 + 1 chains fit in the worst case; the first wave spends 8 (2 words each)."""
    result, b = run([words(2, str(i)) for i in range(16)], budget=Budget(max_completion_tokens=100), max_tokens=20)
    assert result.ledger.total().completion_tokens <= 100
    assert b.requests[0].n == 4 and all(r.n <= 4 for r in b.requests)


def test_same_seed_same_result_and_the_trace_is_json():
    def once(seed):
        backend = endless()
        r = execute(AdaptiveSelfConsistency(max_samples=12, wave_size=3, max_tokens=20),
            PROBLEM, backend, Budget(), rng=random.Random(seed))
        return r, backend

    (a, ba), (b, bb) = once(5), once(5)
    assert a.answer == b.answer and algo_trace(a) == algo_trace(b) and a.candidates == b.candidates
    assert [r.seed for r in ba.requests] == [r.seed for r in bb.requests]
    json.loads(json.dumps(list(algo_trace(a))))
    seeds = {tuple(r.seed for r in once(s)[1].requests) for s in range(5)}
    assert len(seeds) > 1


def test_it_is_registered_with_its_budget_knob():
    s = build_strategy("adaptive-sc:max_samples=8,wave_size=2,threshold=0.9,confidence_filter=true")
    assert isinstance(s, AdaptiveSelfConsistency)
    assert (s.max_samples, s.wave_size, s.threshold, s.confidence_filter) == (8, 2, 0.9, True)
    assert AdaptiveSelfConsistency.budget_knob == "max_samples"
    assert AdaptiveSelfConsistency.prefix_consistent is False


# ------------------------------------------------------------------ confidence filter


def test_the_confidence_filter_drops_the_low_confidence_trace_and_weights_the_rest():
    """First wave: two confident "3", one confident "4" and one confused "4". The 10th percentile of the wave lies
    above the confused trace's confidence, so it is dropped: the vote is {3: 2, 4: 1} (P 0.6875; weights 2 e^-0.1
    vs e^-0.1); wave 2 adds four "3": {3: 6, 4: 1}, P 1 - 9/256 > 0.95. Without the filter wave 1 is a 2-2 tie."""
    hi = (-0.1, -0.1, -0.1)
    lo = (-0.1, -3.0, -3.0)
    script = [item(words(3, "3"), hi), item(words(3, "4"), hi), item(words(3, "3"), hi), item(words(3, "4"), lo)]
    # enough for three more waves of consistent "3" at high confidence
    script += [item(words(3, "3"), hi)] * 12
    result, b = run(script, max_samples=16, confidence_filter=True, confidence_window=2)
    assert all(r.logprobs for r in b.requests)
    first = algo_trace(result)[0]
    assert first["kept"] == [True, True, True, False]
    assert first["counts"] == {"3": 2, "4": 1}
    assert first["confidence_threshold"] > first["confidences"][3]
    assert first["confidences"][0] == pytest.approx(0.9048374180359595)  # exp(-0.1)
    assert first["confidences"][3] == pytest.approx(2.718281828459045 ** -3.0)  # window of 2: min mean -3.0
    vote = algo_trace(result)[-1]
    assert vote["event"] == "vote" and vote["winner"] == "3"
    assert vote["weights"]["3"] > vote["weights"]["4"]
    assert result.answer == "3" and result.chosen is result.candidates[0]
    # the dropped trace is still a candidate
    assert len(b.requests) == 2 and len(result.candidates) == 8
    assert algo_trace(result)[1]["P"] == pytest.approx(1 - 9 / 256) and algo_trace(result)[2]["reason"] == "settled"


def test_the_confidence_threshold_comes_from_the_first_wave_only():
    hi = (-0.1, -0.1)
    mid = (-0.5, -0.5)
    script = [item(words(2, "1"), hi)] * 3 + [item(words(2, "1"), mid)]
    script += [item(words(2, "2"), mid)] * 4 + [item(words(2, "1"), hi)] * 8
    result, _ = run(script, max_samples=16, confidence_filter=True, threshold=0.99)
    waves = [e for e in algo_trace(result) if e["event"] == "wave"]
    t = waves[0]["confidence_threshold"]
    assert all(w["confidence_threshold"] == t for w in waves)
    # wave 2 is all at the dropped confidence of wave 1: none of it votes
    assert waves[1]["kept"] == [False] * 4
    assert result.answer == "1"


def test_without_the_filter_no_logprobs_are_requested():
    _, b = run([words(2, "1")] * 4)
    assert not b.requests[0].logprobs


# ------------------------------------------------------------------ knobs


@pytest.mark.parametrize(("knobs", "name"), [
    ({"wave_size": 0}, "wave_size"),
    ({"max_samples": 3, "wave_size": 4}, "max_samples"),
    ({"threshold": 0.5}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"keep_percentile": 100.0}, "keep_percentile"),
    ({"keep_percentile": -1.0}, "keep_percentile"),
    ({"confidence_window": 0}, "confidence_window"),
    ({"temperature": 0.0}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_bad_knobs_are_refused_by_name(knobs, name):
    with pytest.raises(ValueError, match=name):
        AdaptiveSelfConsistency(**knobs)


# ------------------------------------------------------------------ DeepConf online: stopping a trace mid-generation

HI6 = (-0.1,) * 6
CONFUSED6 = (-0.1, -0.1, -3.0, -3.0, -0.1, -0.1)


def _online_script():
    """Wave 1: three calm "3" and one "4" with a confused stretch; wave 2 the same again (window 2 throughout)."""
    wave = [item(words(6, "3"), HI6)] * 3 + [item(words(6, "4"), CONFUSED6)]
    return wave + wave


def test_later_waves_stop_a_trace_once_its_confidence_falls():
    """Threshold = 10th percentile of wave 1's confidences: e^-3 + 0.3 (e^-0.1 - e^-3) = 0.3063, i.e. a mean
    logprob of log(0.3063) = -1.183 over a window of 2 tokens. Wave 2 carries that rule: the confused trace's
    window (-0.1, -3.0) has mean -1.55, so the backend ends it after 3 tokens. It would have been dropped anyway:
    the vote ({3: 6}, P = 1 - 0.5^7 > 0.99) is the one without online stopping, for 3 tokens fewer (45 vs 48)."""
    on, b = run(_online_script(), max_samples=8, threshold=0.99, confidence_filter=True, confidence_window=2)
    off, _ = run(_online_script(), max_samples=8, threshold=0.99, confidence_filter=True, confidence_window=2,
                 online_stop=False)
    first, second = b.requests
    assert first.confidence_stop is None  # the first wave sets the threshold: it runs whole
    on_waves = [e for e in algo_trace(on) if e["event"] == "wave"]
    off_waves = [e for e in algo_trace(off) if e["event"] == "wave"]
    t = on_waves[0]["confidence_threshold"]
    assert t == pytest.approx(math.exp(-3.0) + 0.3 * (math.exp(-0.1) - math.exp(-3.0)))
    assert second.confidence_stop == ConfidenceStop(window=2, min_mean_logprob=math.log(t))
    stopped = on.candidates[7]
    assert (stopped.finish_reason, stopped.completion_tokens, stopped.answer) == ("low_confidence", 3, None)
    second = [e for e in algo_trace(on) if e["event"] == "wave"][1]
    assert second["online_stop"]["stopped"] == 1 and second["kept"] == [True, True, True, False]
    assert off_waves[1]["kept"] == on_waves[1]["kept"] and off.candidates[7].answer == "4"
    assert (on.answer, algo_trace(on)[-1]["weights"]) == (off.answer, algo_trace(off)[-1]["weights"]) == (
        "3", {"3": pytest.approx(6 * math.exp(-0.1))})
    assert on.ledger.total().completion_tokens == 45 and off.ledger.total().completion_tokens == 48


def test_a_backend_that_cannot_stop_a_trace_gets_whole_traces_and_the_trace_says_so():
    class Plain(ScriptedBackend):
        capabilities = Capabilities(logprobs=True)

    b = Plain(_online_script())
    r = execute(AdaptiveSelfConsistency(max_samples=8, threshold=0.99, confidence_filter=True,
                                confidence_window=2), PROBLEM, b, Budget(), rng=random.Random(0))
    assert all(req.confidence_stop is None for req in b.requests)
    assert "not supported" in algo_trace(r)[1]["online_stop"] and r.answer == "3"
    assert r.ledger.total().completion_tokens == 48


# ------------------------------------------------------------------ futility stopping


def test_vote_is_futile_by_hand():
    from thinkscale.strategies.adaptive_sc import vote_is_futile

    assert vote_is_futile({"a": 1, "b": 1, "c": 1}, drawn=4, after=4, share=0.34)  # 1 <= 1.36
    assert not vote_is_futile({"a": 2, "b": 1, "c": 1}, drawn=4, after=4, share=0.34)  # 2 > 1.36
    assert not vote_is_futile({"a": 1, "b": 1, "c": 1}, drawn=3, after=4, share=0.34)  # too early to judge
    assert vote_is_futile({}, drawn=4, after=4, share=0.1)  # no answer at all: nothing to wait for
    assert vote_is_futile({"a": 2}, drawn=4, after=4, share=0.5)  # the boundary counts as futile


def test_a_scattered_vote_gives_up_after_give_up_after_chains():
    """Waves of 2: {1, 2} then {1, 2, 3, none}: 4 chains, leader 1 <= 0.34 x 4 -> futile; the chains beyond
    are never asked for. Without the knob it samples on to max_samples."""
    script = [words(2, "1"), words(2, "2"), words(2, "3"), words(2)] + [words(2, "9")] * 4
    result, b = run(script, max_samples=8, wave_size=2, give_up_after=4, give_up_share=0.34)
    assert [r.n for r in b.requests] == [2, 2] and len(result.candidates) == 4
    stop = [e for e in algo_trace(result) if e["event"] == "stop"][0]
    assert stop["reason"] == "futile" and stop["detail"].startswith("4 chains") and result.stop_reason == "done"
    result2, b2 = run(script, max_samples=8, wave_size=2)
    assert len(result2.candidates) == 8 and result2.answer == "9"


@pytest.mark.parametrize(("knobs", "name"), [
    ({"give_up_after": 0}, "give_up_after"),
    ({"give_up_after": 4, "give_up_share": 1.0}, "give_up_share"),
    ({"give_up_after": 4, "give_up_share": 0.0}, "give_up_share"),
])
def test_bad_futility_knobs_are_refused_by_name(knobs, name):
    with pytest.raises(ValueError, match=name):
        AdaptiveSelfConsistency(**knobs)
