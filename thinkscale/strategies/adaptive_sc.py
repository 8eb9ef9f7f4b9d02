"""Adaptive self-consistency: sample in waves and stop as soon as the vote is settled.

Aggarwal et al., "Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and Coding with LLMs",
https://arxiv.org/abs/2305.11860 (the Beta stopping criterion); optional DeepConf-style confidence filter and
confidence-weighted vote from Fu et al., "Deep Think with Confidence", https://arxiv.org/abs/2508.15260.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from thinkscale.answers.extract import normalize_answer
from thinkscale.strategies.base import check_int, register, voted_index
from thinkscale.strategies.events import Vote, event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, ConfidenceStop, Event, GenRequest, Result
from thinkscale.verifiers.confidence import lowest_group_logprob


@event("wave")
@dataclass(frozen=True)
class Wave(Event):
    """One wave of chains: how many, where in the seeded draw, the vote so far (``counts``, ``P`` the posterior
    that the leader stays the majority) and, with the confidence filter, each chain's confidence, whether it was
    kept, the threshold and what the online stop did (a dict, or why it was off)."""

    wave: int
    n: int
    first_sample: int
    counts: dict[str, float]
    P: float
    confidences: tuple[float, ...] | None = None
    kept: tuple[bool, ...] | None = None
    confidence_threshold: float | None = None
    online_stop: dict[str, float] | str | None = None


def _beta_cdf_half(a: int, b: int) -> float:
    """The regularised incomplete beta function I_{0.5}(a, b) for integer a, b >= 1, exactly:
    I_x(a, b) = sum_{j=a}^{a+b-1} C(a+b-1, j) x^j (1-x)^(a+b-1-j), which at x = 1/2 is
    sum_{j=a}^{m} C(m, j) / 2^m with m = a + b - 1 (integer arithmetic, one rounding at the end)."""
    m = a + b - 1
    return sum(math.comb(m, j) for j in range(a, m + 1)) / 2**m


def majority_stays_probability(counts: Mapping[Any, int]) -> float:
    """Adaptive-Consistency's Beta stopping criterion: the posterior probability that the current leader is the
    true majority answer.

    ``counts`` maps each (normalised) answer to its number of votes; unanswered samples are simply not in it. With
    the two largest counts ``v1 >= v2`` (``v2 = 0`` when only one answer was seen) and a uniform prior, the leader's
    share of the top two, ``p1 / (p1 + p2)``, has posterior Beta(v1 + 1, v2 + 1), so

        P = P(p1 > p2) = 1 - I_{0.5}(v1 + 1, v2 + 1)

    (``I`` the regularised incomplete beta function, computed exactly for these integer parameters). Examples:
    {a: 4} -> 1 - 0.5^5 = 0.96875; {a: 3, b: 1} -> 0.8125; {a: 2, b: 2} -> 0.5. No votes at all -> 0.0.
    """
    values = sorted(counts.values(), reverse=True)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"vote counts must be integers >= 0, got {v!r}")
    v1 = values[0] if values else 0
    v2 = values[1] if len(values) > 1 else 0
    if v1 == 0:
        return 0.0
    return 1.0 - _beta_cdf_half(v1 + 1, v2 + 1)


def vote_is_futile(counts: Mapping[Any, int], drawn: int, after: int, share: float) -> bool:
    """Futility stopping, the other side of ``majority_stays_probability``: once ``after`` chains are drawn, stop
    when the leading answer holds at most ``share`` of them: the vote is so scattered that more chains rarely
    settle it on the right answer (on a small model such problems are mostly beyond it), so they are not bought.
    ``counts`` as for ``majority_stays_probability``; ``drawn`` counts every chain, with or without an answer.

    >>> vote_is_futile({"12": 2, "7": 1, "40": 1, "3": 1, "9": 1}, drawn=6, after=6, share=0.34)
    True
    >>> vote_is_futile({"12": 3, "7": 3}, drawn=6, after=6, share=0.34)
    False
    """
    if drawn < after:
        return False
    return max(counts.values(), default=0) <= share * drawn


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _confidence(c: Candidate, window: int) -> float:
    """DeepConf lowest-group confidence of one trace, exp-mapped to (0, 1]; 0.0 for a trace with no tokens."""
    if not c.logprobs:
        return 0.0
    return math.exp(lowest_group_logprob(c.logprobs, window))


@register("adaptive-sc", "self-consistency in waves that stops once the majority is settled (Beta posterior), "
          "optional DeepConf confidence filter", "https://arxiv.org/abs/2305.11860")
@dataclass(frozen=True)
class AdaptiveSelfConsistency:
    """Args:
        max_samples: the most chains to sample in all. The budget knob.
        wave_size: chains per wave (one batched backend call per wave). All waves continue ONE seeded draw (seed
            drawn once from the caller's rng, wave k asks for its chains with ``first_sample``), so the chains are
            exactly the ones self-consistency draws with the same rng: an eval run shares and replays them.
        threshold: stop once ``majority_stays_probability`` of the vote reaches it; in (0.5, 1).
        confidence_filter: request logprobs, score each trace by DeepConf lowest-group confidence, drop traces
            below the ``keep_percentile``-th percentile of the first wave's confidences from the vote, and weight
            the remaining votes by confidence.
        keep_percentile: the percentile of the first wave that sets the confidence threshold (10 keeps ~90%).
        confidence_window: tokens per group of the lowest-group confidence (capped to the trace's length). 128 by
            default, a quarter of a default chain (DeepConf's 2048 suits its traces of many thousand tokens).
        online_stop: with the filter, waves after the first are generated with ``ConfidenceStop(confidence_window,
            log(threshold))``: the backend ends a trace as soon as a window's mean logprob falls below the
            threshold (DeepConf online). Such a trace would be dropped anyway (its lowest group is below the
            threshold), so the vote is the same as without it; only the tokens after the stop are saved. A
            backend without ``Capabilities.confidence_stop`` generates whole traces and the filter applies after
            (the wave's trace event says so).
        give_up_after, give_up_share: futility stopping (``vote_is_futile``): with ``give_up_after`` chains or more
            drawn, stop once the leader holds at most ``give_up_share`` of them ("futile"). Off by default.
        temperature, top_p, max_tokens: sampling knobs; ``max_tokens`` per chain.

    Stopping: after every wave the (kept) answers' vote counts give ``P``, the posterior probability that the
    leader stays the majority; the run stops when ``P >= threshold`` ("settled"), when the vote is futile (with
    ``give_up_after``), after ``max_samples`` chains
    ("max_samples"), or when the next wave no longer fits the budget ("budget": each chain is charged at
    ``max_tokens`` worst case, a wave is shrunk to what fits). With the confidence filter the stopping rule counts
    the kept traces' votes and the winner is the largest confidence sum (ties broken by ``rng``); without it the
    winner is the plain majority. The chosen candidate is the first sample with the winning normalised answer.

    >>> execute(AdaptiveSelfConsistency(max_samples=16), problem, backend,  # doctest: +SKIP
    ...         Budget(), rng=random.Random(0))
    """

    prefix_consistent: ClassVar[bool] = False
    budget_knob: ClassVar[str] = "max_samples"

    max_samples: int = 16
    wave_size: int = 4
    threshold: float = 0.95
    confidence_filter: bool = False
    keep_percentile: float = 10.0
    confidence_window: int = 128
    online_stop: bool = True
    give_up_after: int | None = None
    give_up_share: float = 0.34
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_int("wave_size", self.wave_size)
        check_int("max_samples", self.max_samples)
        if self.max_samples < self.wave_size:
            raise ValueError(f"max_samples must be >= wave_size ({self.wave_size}), got {self.max_samples}")
        if not (math.isfinite(self.threshold) and 0.5 < self.threshold < 1.0):
            raise ValueError(f"threshold must be in (0.5, 1), got {self.threshold}")
        if not (math.isfinite(self.keep_percentile) and 0.0 <= self.keep_percentile < 100.0):
            raise ValueError(f"keep_percentile must be in [0, 100), got {self.keep_percentile}")
        check_int("confidence_window", self.confidence_window)
        if not isinstance(self.online_stop, bool):
            raise ValueError(f"online_stop must be true or false, got {self.online_stop!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"adaptive-sc needs a finite temperature > 0 (got {self.temperature}); use greedy")
        check_int("max_tokens", self.max_tokens)
        if self.give_up_after is not None:
            check_int("give_up_after", self.give_up_after)
        if isinstance(self.give_up_share, bool) or not isinstance(self.give_up_share, int | float) or not (
                0.0 < self.give_up_share < 1.0):
            raise ValueError(f"give_up_share must be in (0, 1), got {self.give_up_share!r}")

    def run(self, ctx: Run) -> Result:
        st = _Waves()
        seed = ctx.seed()
        while len(st.cands) < self.max_samples:
            n = ctx.affordable(min(self.wave_size, self.max_samples - len(st.cands)), self.max_tokens)
            if n == 0:
                st.stop = "budget"
                break
            self._wave(ctx, st, n, seed)
            if st.p >= self.threshold:
                st.stop = "settled"
                break
            if self.give_up_after is not None and vote_is_futile(st.counts, len(st.cands), self.give_up_after,
                                                                  self.give_up_share):
                st.stop = "futile"
                break
        stop = st.stop or "max_samples"
        ctx.stop(stop, f"{len(st.cands)} chains, P = {st.p:.4f}" if st.cands else "budget allows no sample")
        if not self.confidence_filter:
            return vote_result(ctx, st.cands, budget_hit=stop == "budget")
        return self._confidence_vote(ctx, st, stop)

    def _wave(self, ctx: Run, st: _Waves, n: int, seed: int) -> None:
        """Draw the next ``n`` chains of the seeded draw, filter them (with the confidence filter), update the vote."""
        # DeepConf online: a wave after the first carries the first wave's line (a threshold of 0 stops nothing)
        stop_rule: ConfidenceStop | None = None
        online: dict[str, float] | str | None = None
        if self.confidence_filter and self.online_stop and st.conf_threshold is not None:
            if not ctx.backend.capabilities.confidence_stop:
                online = "not supported by this backend: whole traces, filtered after generation"
            elif st.conf_threshold > 0.0:
                stop_rule = ConfidenceStop(self.confidence_window, math.log(st.conf_threshold))
            else:
                online = "off: the first wave's threshold is 0"
        req = GenRequest(messages=ctx.problem.messages, n=n, temperature=self.temperature, top_p=self.top_p,
                         max_tokens=self.max_tokens, seed=seed, logprobs=self.confidence_filter,
                         first_sample=len(st.cands), confidence_stop=stop_rule)
        wave = candidates_from(ctx.generate([req], tag="wave")[0])
        st.cands.extend(wave)
        confs: tuple[float, ...] | None = None
        if self.confidence_filter:
            confs = tuple(_confidence(c, self.confidence_window) for c in wave)
            if st.conf_threshold is None:
                st.conf_threshold = _percentile(list(confs), self.keep_percentile)
            st.confs.extend(confs)
            # a trace the backend stopped is dropped even where float rounding put its confidence at the line
            st.kept.extend(conf >= st.conf_threshold and c.finish_reason != "low_confidence"
                           for c, conf in zip(wave, confs, strict=True))
            if stop_rule is not None:
                online = {"window": stop_rule.window, "min_mean_logprob": stop_rule.min_mean_logprob,
                          "stopped": sum(c.finish_reason == "low_confidence" for c in wave)}
        else:
            st.kept.extend(True for _ in wave)
        st.counts = dict(Counter(a for a in (normalize_answer(c.answer) for c, k in zip(st.cands, st.kept, strict=True)
                                             if k) if a is not None))
        st.p = majority_stays_probability(st.counts)
        ctx.note(Wave(st.waves, n, req.first_sample, {a: float(c) for a, c in st.counts.items()}, st.p, confs,
                      tuple(st.kept[-n:]) if confs is not None else None,
                      st.conf_threshold if confs is not None else None, online))
        st.waves += 1

    def _confidence_vote(self, ctx: Run, st: _Waves, stop: str) -> Result:
        """The kept traces' answers weighted by their confidence; ties broken by the run's rng."""
        weights: dict[str, float] = defaultdict(float)
        for c, conf, k in zip(st.cands, st.confs, st.kept, strict=True):
            a = normalize_answer(c.answer)
            if k and a is not None:
                weights[a] += conf
        winner, tie = None, False
        if weights:
            top = max(weights.values())
            tied = sorted(a for a, w in weights.items() if w == top)
            winner, tie = (tied[0] if len(tied) == 1 else ctx.rng.choice(tied)), len(tied) > 1
        ctx.note(Vote({a: float(c) for a, c in st.counts.items()}, winner, tie, weights=dict(weights)))
        kept = [i for i, k in enumerate(st.kept) if k]
        return ctx.result(st.cands, chosen_index=voted_index(st.cands, winner, kept), votes=dict(weights),
                          votes_kind="score", stop_reason="budget" if stop == "budget" else "done")


@dataclass
class _Waves:
    """What an adaptive-sc run has drawn so far."""

    cands: list[Candidate] = field(default_factory=list)
    confs: list[float] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)
    conf_threshold: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    p: float = 0.0
    stop: str | None = None
    waves: int = 0
