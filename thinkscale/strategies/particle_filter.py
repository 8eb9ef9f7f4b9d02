"""Particle filtering over reasoning steps: N particles (partial solutions) advance one step at a time, each step is
scored by a process scorer, and the particles are resampled in proportion to their weights.

Puri et al., "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo
Methods", https://arxiv.org/abs/2502.01618 (its_hub's particle filtering: Qwen2.5-Math-1.5B-Instruct passes GPT-4o on
MATH-500 with 4 particles).
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies._steps import Node, StepKnobs, StepTree, enum_knob
from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run
from thinkscale.types import Event, Result
from thinkscale.verifiers.aggregate import Selection


class Weighting(enum.StrEnum):
    LOGIT = "logit"  # log weight = logit(score): the score read as a probability (Puri et al., its_hub)
    SCORE = "score"  # log weight = the score itself (any scale)


# a probability is clipped this far from 0 and 1 before its logit (a PRM that says exactly 0 or 1)
LOGIT_CLIP = 1e-7


class FinalPick(enum.StrEnum):
    BEST = "best"  # the finished particle of the highest weight
    WEIGHTED_VOTE = "weighted_vote"  # the answer with the largest summed score over the finished particles


@event("pf_step")
@dataclass(frozen=True)
class ParticleStep(Event):
    """One step: the particles (tree node indices) after advancing, their scores and resampling probabilities, and
    the particles drawn for the next step."""

    step: int
    particles: tuple[int, ...]
    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    resampled: tuple[int, ...]


def softmax_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """``exp(s_i / T) / sum_j exp(s_j / T)``, computed stably (the largest score subtracted first).

    >>> [round(w, 4) for w in softmax_weights([0.0, math.log(3)], 1.0)]
    [0.25, 0.75]
    """
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    total = math.fsum(exps)
    return [e / total for e in exps]


def log_weights(scores: Sequence[float], weighting: Weighting) -> list[float]:
    """The particles' log weights: ``logit(score)`` (``Weighting.LOGIT``; a score must be a probability in [0, 1],
    clipped to ``LOGIT_CLIP`` from either end) or the scores as they are (``Weighting.SCORE``).

    >>> [round(w, 4) for w in log_weights([0.5, 0.75], Weighting.LOGIT)]
    [0.0, 1.0986]
    """
    if weighting is Weighting.SCORE:
        return list(scores)
    out = []
    for s in scores:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"particle-filter weighting=logit reads step scores as probabilities, got {s!r}: use a "
                             "verifier whose scores are in [0, 1] (a PRM), or weighting=score")
        p = min(max(s, LOGIT_CLIP), 1 - LOGIT_CLIP)
        out.append(math.log(p / (1 - p)))
    return out


def resample(particles: Sequence[int], scores: Sequence[float], temperature: float, rng: random.Random,
             weighting: Weighting = Weighting.LOGIT) -> tuple[list[float], list[int]]:
    """Multinomial resampling: N draws with replacement, particle i with probability softmax(log weights / T)_i
    (``log_weights``), from ``rng`` (``rng.choices``, so a fixed rng replays the draw). Returns (the probabilities,
    the drawn particles)."""
    probs = softmax_weights(log_weights(scores, weighting), temperature)
    return probs, rng.choices(list(particles), weights=probs, k=len(particles))


@register("particle-filter", "particle filtering: N partial solutions advanced step by step, weighted by a process "
          "scorer and resampled", "https://arxiv.org/abs/2502.01618")
@dataclass(frozen=True)
class ParticleFilter(StepKnobs):
    """Args (besides the step knobs of ``StepKnobs``: verifier, step_aggregation, step_delimiter, max_step_tokens,
    max_steps, temperature, top_p):
        n_particles: N, the particles. The budget knob.
        weighting: ``logit`` (a particle's log weight is the logit of its score, a probability: weights are the
            odds r / (1 - r), as in Puri et al. and its_hub) or ``score`` (the score itself is the log weight: for
            scorers not on [0, 1]; on a probability it resamples almost uniformly, e^1 at most between particles).
        resample_temperature: T of the softmax that turns log weights into resampling probabilities (lower =
            greedier).
        final: ``best`` (the finished particle of the highest score) or ``weighted_vote`` (the answer with the
            largest summed score over the finished particles, a particle counted as often as it was drawn).

    Each step extends every unfinished particle by one sampled step (particles on the same node share one request,
    ``n`` = how many; all in one batched call that continues the cached prefix), scores the new steps with the
    verifier (a PRM's step score; an outcome verifier scores the partial solution), and resamples all N particles
    (finished ones included, which stay as they are) with probabilities softmax(log weight / T). The search ends when
    every particle is finished. The weight of a particle is its aggregated step score (``step_aggregation``, the
    last step's by default, as in Puri et al.).

    Budget: a step's worst case is (unfinished particles) x ``max_step_tokens`` completion tokens, a call per
    distinct node and the verifier's declared calls; a step that does not fit whole advances the particles that fit,
    in order; when none fits the search stops with ``stop_reason="budget"`` and picks among what it has.

    >>> execute(ParticleFilter(n_particles=4, verifier="prm", verifier_path="prm.json"), problem, backend,
    ...         Budget(max_completion_tokens=8000), rng=random.Random(0))  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "n_particles"

    n_particles: int = 4
    weighting: Weighting = Weighting.LOGIT
    resample_temperature: float = 1.0
    final: FinalPick = FinalPick.BEST

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_particles", self.n_particles)
        t = self.resample_temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"resample_temperature must be a finite number > 0, got {t!r}")
        object.__setattr__(self, "final", enum_knob("final", FinalPick, self.final))
        object.__setattr__(self, "weighting", enum_knob("weighting", Weighting, self.weighting))

    def run(self, ctx: Run) -> Result:
        tree = StepTree(ctx, self, ctx.verifier(self.verifier, self.verifier_path))
        particles: list[Node] = [tree.nodes[0]] * self.n_particles
        step = 0
        while any(p.terminal is None for p in particles):
            if not self._advance(tree, particles, step):
                break
            step += 1
        finished = [p for p in particles if p.terminal is not None] or [p for p in particles if p.index != 0]
        how = Selection.ARGMAX if self.final is FinalPick.BEST else Selection.WEIGHTED_MAJORITY
        return tree.result(tree.choose(finished, how))

    def _advance(self, tree: StepTree, particles: list[Node], step: int) -> bool:
        """Extend the unfinished particles by one step, score, resample (in place); False when nothing fits."""
        wanted = Counter(p.index for p in particles if p.terminal is None)
        plan = tree.affordable(sorted(wanted.items()), self.max_step_tokens)
        if not plan:
            tree.stop_for_budget(f"a step for {sum(wanted.values())} particle(s) does not fit")
            return False
        children = {index: group for (index, _), group in zip(plan, tree.expand(plan), strict=True)}
        tree.score([c for group in children.values() for c in group])
        advanced: list[Node] = []
        for p in particles:
            group = children.get(p.index) if p.terminal is None else None
            advanced.append(group.pop(0) if group else p)  # each particle takes one of its node's new children
        if len(plan) < len(wanted) or any(n < wanted[i] for i, n in plan):
            tree.budget_hit = True  # some particles could not advance this step: they keep their node
        scores = [p.score(self.step_aggregation) for p in advanced]
        probs, drawn = resample(range(len(advanced)), scores, self.resample_temperature, tree.ctx.rng, self.weighting)
        particles[:] = [advanced[i] for i in drawn]
        tree.ctx.note(ParticleStep(step, tuple(p.index for p in advanced), tuple(scores), tuple(probs),
                                   tuple(advanced[i].index for i in drawn)))
        return True
