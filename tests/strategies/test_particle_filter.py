"""Particle filtering on the scripted fake: resampling by hand-computed softmax weights, particles advancing
one step per round on a shared prefix, finished particles carried, and the chosen answer."""

from __future__ import annotations

import math
import random

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace
from tests.strategies.test_tree_search import by_prefill, prefill, table  # noqa: F401 - fixture
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.particle_filter import ParticleFilter, resample, softmax_weights
from thinkscale.strategies.run import execute
from thinkscale.types import Budget


def test_softmax_weights_by_hand() -> None:
    """Scores 0.2, 0.8 at T = 0.5: exp(0.4), exp(1.6) normalised = 1 / (1 + e^1.2), e^1.2 / (1 + e^1.2)."""
    w = softmax_weights([0.2, 0.8], 0.5)
    assert w == pytest.approx([1 / (1 + math.exp(1.2)), math.exp(1.2) / (1 + math.exp(1.2))])
    assert softmax_weights([0.3, 0.3, 0.3], 2.0) == pytest.approx([1 / 3] * 3)


def test_resampling_draws_what_rng_choices_draws_with_those_weights() -> None:
    """The draw is exactly random.Random(7).choices over the particles with the softmax weights: a fixed rng
    replays it, and over many draws the frequencies follow the weights."""
    probs, drawn = resample([10, 11, 12], [0.9, 0.1, 0.5], 0.25, random.Random(7))
    expected = [math.exp(s / 0.25) for s in (0.9, 0.1, 0.5)]
    assert probs == pytest.approx([e / sum(expected) for e in expected])
    assert drawn == random.Random(7).choices([10, 11, 12], weights=probs, k=3)
    counts = [0, 0, 0]
    rng = random.Random(3)
    for _ in range(2000):
        for i in resample([0, 1, 2], [0.9, 0.1, 0.5], 0.25, rng)[1]:
            counts[i] += 1
    assert [c / 6000 for c in counts] == pytest.approx(probs, abs=0.02)


def test_particles_advance_one_step_per_round_and_resample_toward_the_better_step(table) -> None:  # noqa: F811
    """2 particles at the root share one request (n = 2): steps "good" (0.9) and "bad" (0.1). At T = 0.05 the
    weights are 1 / (1 + e^-16) and e^-16 / (1 + e^-16): both particles continue from "good", again in one request
    (n = 2), and both finish with the answer 4; the result is "good"'s solution."""
    table({"good": 0.9, "bad": 0.1, "so \\boxed{4}": 0.8})
    script = by_prefill({"": ["good", "bad"], "good\n\n": ["so \\boxed{4}", "so \\boxed{4}"]})
    b = ScriptedBackend([script] * 4)
    result = execute(ParticleFilter(n_particles=2, resample_temperature=0.05, verifier="table", max_step_tokens=5),
                     PROBLEM, b, Budget(), rng=random.Random(0))
    assert [(r.n, prefill(r)) for r in b.requests] == [(2, ""), (2, "good\n\n")]
    steps = [e for e in algo_trace(result) if e["event"] == "pf_step"]
    assert steps[0]["probabilities"] == pytest.approx([1 / (1 + math.exp(-16)), math.exp(-16) / (1 + math.exp(-16))])
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
    with pytest.raises(ValueError, match="resample_temperature"):
        build_strategy("particle-filter:resample_temperature=0")
