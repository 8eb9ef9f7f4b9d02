"""Particle filtering on the scripted fake: resampling by hand-computed weights (softmax of the scores' logits, or
of the scores), particles advancing one step per round on a shared prefix, finished particles carried, and the
chosen answer."""

from __future__ import annotations

import math
import random

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace
from tests.strategies.test_tree_search import by_prefill, prefill, table  # noqa: F401 - fixture
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.particle_filter import ParticleFilter, Weighting, log_weights, resample, softmax_weights
from thinkscale.strategies.run import execute
from thinkscale.types import Budget


def test_softmax_weights_by_hand() -> None:
    """Scores 0.2, 0.8 at T = 0.5: exp(0.4), exp(1.6) normalised = 1 / (1 + e^1.2), e^1.2 / (1 + e^1.2)."""
    w = softmax_weights([0.2, 0.8], 0.5)
    assert w == pytest.approx([1 / (1 + math.exp(1.2)), math.exp(1.2) / (1 + math.exp(1.2))])
    assert softmax_weights([0.3, 0.3, 0.3], 2.0) == pytest.approx([1 / 3] * 3)


def test_resampling_draws_what_rng_choices_draws_with_those_weights() -> None:
    """Scores 0.9, 0.1, 0.5 (probabilities) at T = 2: log weights logit(s) = ln 9, -ln 9, 0, so the weights are
    9^(1/2), 9^(-1/2), 1 = 3, 1/3, 1, normalised. The draw is exactly random.Random(7).choices over the particles with
    them: a fixed rng replays it, and over many draws the frequencies follow the weights."""
    probs, drawn = resample([10, 11, 12], [0.9, 0.1, 0.5], 2.0, random.Random(7))
    assert probs == pytest.approx([3 / (3 + 1 / 3 + 1), (1 / 3) / (3 + 1 / 3 + 1), 1 / (3 + 1 / 3 + 1)])
    assert drawn == random.Random(7).choices([10, 11, 12], weights=probs, k=3)
    counts = [0, 0, 0]
    rng = random.Random(3)
    for _ in range(2000):
        for i in resample([0, 1, 2], [0.9, 0.1, 0.5], 2.0, rng)[1]:
            counts[i] += 1
    assert [c / 6000 for c in counts] == pytest.approx(probs, abs=0.02)


def test_score_weighting_uses_the_scores_as_log_weights_and_logit_refuses_a_score_off_0_1() -> None:
    """weighting=score: softmax(score / T) as it stands (for scorers on any scale; on probabilities it barely
    separates 0.9 from 0.1: e^0.8 at T = 1); weighting=logit clips 0 and 1 and refuses 1.5 with a way out."""
    probs, _ = resample([0, 1], [0.9, 0.1], 1.0, random.Random(0), Weighting.SCORE)
    assert probs == pytest.approx([math.exp(0.8) / (1 + math.exp(0.8)), 1 / (1 + math.exp(0.8))])
    assert log_weights([0.0, 1.0], Weighting.LOGIT) == pytest.approx([math.log(1e-7 / (1 - 1e-7)),
                                                                      math.log((1 - 1e-7) / 1e-7)])
    with pytest.raises(ValueError, match="as probabilities, got 1.5.*weighting=score"):
        resample([0, 1], [0.9, 1.5], 1.0, random.Random(0))


def test_particles_advance_one_step_per_round_and_resample_toward_the_better_step(table) -> None:  # noqa: F811
    """2 particles at the root share one request (n = 2): steps "good" (0.9) and "bad" (0.1). At T = 0.5 the log
    weights are ln 9 / 0.5 and -ln 9 / 0.5, so the weights 81 : 1/81, probabilities 1 / (1 + 9^-4) and
    9^-4 / (1 + 9^-4); with this rng both particles continue from "good", again in one request (n = 2), and both
    finish with the answer 4; the result is "good"'s solution."""
    table({"good": 0.9, "bad": 0.1, "so \\boxed{4}": 0.8})
    script = by_prefill({"": ["good", "bad"], "good\n\n": ["so \\boxed{4}", "so \\boxed{4}"]})
    b = ScriptedBackend([script] * 4)
    result = execute(ParticleFilter(n_particles=2, resample_temperature=0.5, verifier="table", max_step_tokens=5),
                     PROBLEM, b, Budget(), rng=random.Random(0))
    assert [(r.n, prefill(r)) for r in b.requests] == [(2, ""), (2, "good\n\n")]
    steps = [e for e in algo_trace(result) if e["event"] == "pf_step"]
    assert steps[0]["probabilities"] == pytest.approx([1 / (1 + 9 ** -4), 9 ** -4 / (1 + 9 ** -4)])
    assert steps[0]["resampled"] == [1, 1]  # node 1 ("good") twice
    assert result.answer == "4" and result.chosen is not None and result.chosen.steps[0] == "good"
    assert result.stop_reason == "done"


def test_finished_particles_are_carried_and_resampled_with_the_rest(table) -> None:  # noqa: F811
    """One particle finishes at step 1 (\\boxed{7}); at step 2 only the other one is extended."""
    table({})
    script = by_prefill({"": ["done \\boxed{7}", "more"], "more\n\n": ["then \\boxed{7}"]})
    b = ScriptedBackend([script] * 3)
    result = execute(ParticleFilter(n_particles=2, resample_temperature=100.0, verifier="table", max_step_tokens=5),
                     PROBLEM, b, Budget(), rng=random.Random(4))
    steps = [e for e in algo_trace(result) if e["event"] == "pf_step"]
    assert steps[0]["particles"] == [1, 2]
    if len(steps) > 1:  # the draw kept the unfinished particle: it alone was extended
        assert [(r.n, prefill(r)) for r in b.requests[1:]] == [(1, "more\n\n")]
    assert result.answer == "7"


def test_particle_filter_is_registered_with_its_knobs() -> None:
    s = build_strategy("particle-filter:n_particles=8,resample_temperature=0.5,final=weighted_vote")
    assert isinstance(s, ParticleFilter) and s.n_particles == 8 and s.final.value == "weighted_vote"
    assert s.weighting is Weighting.LOGIT and build_strategy("particle-filter:weighting=score").weighting == "score"
    with pytest.raises(ValueError, match="weighting.*must be logit|score, got .odds."):
        build_strategy("particle-filter:weighting=odds")
    with pytest.raises(ValueError, match="resample_temperature"):
        build_strategy("particle-filter:resample_temperature=0")
