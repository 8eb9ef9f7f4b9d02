"""auto: a compute-optimal controller. One wave of chains, a difficulty estimate from it, then what a fitted policy
says is the best use of the rest of the budget for problems that look like this one.

Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters",
https://arxiv.org/abs/2408.03314 (difficulty bins, per-bin compute-optimal strategy); the stopping rule is
Adaptive-Consistency's (https://arxiv.org/abs/2305.11860), the confidence signal DeepConf's
(https://arxiv.org/abs/2508.15260).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from thinkscale.answers.extract import normalize_answer
from thinkscale.strategies.adaptive_sc import majority_stays_probability, vote_is_futile
from thinkscale.strategies.auto_features import difficulty_score, wave_features
from thinkscale.strategies.auto_policy import (
    Action,
    Difficulty,
    Policy,
    SampleAction,
    Sampling,
    StopAction,
    StrategyAction,
    load_policy,
)
from thinkscale.strategies.base import (
    build_strategy,
    knobs,
    majority_vote,
    operator_knob,
    parse_spec,
    register,
    voted_index,
)
from thinkscale.strategies.events import Delegate, Vote, event
from thinkscale.strategies.run import Run, candidates_from, strategy_name
from thinkscale.types import Candidate, Event, GenRequest, Result, StopReason, Usage

# (bin, token budget of the run or None) -> (the action, what the trace says about why)
Decide = Callable[[str, int | None], tuple[Action, dict[str, Any]]]


@event("policy")
@dataclass(frozen=True)
class PolicyInfo(Event):
    """The policy auto runs with (its file, or the packaged default), what it was fitted on, the token cap."""

    policy: str | None
    fitted_on: dict[str, Any] | None
    max_completion_tokens: int | None


@event("auto_wave")
@dataclass(frozen=True)
class AutoWave(Event):
    """A wave of auto's chains: where in the seeded draw, how many, whether the first was the greedy chain."""

    first_sample: int
    n: int
    seed: int
    greedy: int
    usage: Usage


@event("difficulty")
@dataclass(frozen=True)
class DifficultyEstimate(Event):
    """The first wave's features, the difficulty score computed from them and the bin it falls in."""

    features: dict[str, Any]
    score_kind: str
    score: float
    edges: tuple[float, ...]
    bins: tuple[str, ...]
    bin: str


@event("action")
@dataclass(frozen=True)
class PolicyAction(Event):
    """What the policy chose for the bin and budget (``action`` in its JSON form, ``label`` in words) and the fitted
    numbers behind the choice (``fitted``: budget row, accuracy, mean tokens, problems, why)."""

    action: dict[str, Any]
    label: str
    fitted: dict[str, Any]


@event("check")
@dataclass(frozen=True)
class Check(Event):
    """A stopping check of the ``sample`` action: the vote so far and its posterior P against the threshold."""

    samples: int
    counts: dict[str, float]
    P: float
    threshold: float | None


@functools.lru_cache(maxsize=16)
def _cached_policy(path: str | None, mtime_ns: int, size: int) -> Policy:
    return load_policy(path)


def policy_at(path: str | None) -> Policy:
    """``load_policy`` memoised per file version (a server builds auto for every request)."""
    if path is None:
        return _cached_policy(None, 0, 0)
    try:
        st = Path(path).stat()
    except OSError:
        return load_policy(path)  # the PolicyError that names the file
    return _cached_policy(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@register("auto", "compute-optimal controller: a first wave estimates difficulty, a fitted policy picks what to "
          "do with the rest of the token budget", "https://arxiv.org/abs/2408.03314")
@dataclass(frozen=True)
class Auto:
    """Args:
        budget_tokens: completion tokens for the whole run (the budget knob); the run's ``Budget`` may lower it.
            Picks the policy's budget row (see ``thinkscale.strategies.auto_policy``) and is a hard limit.
        policy: a policy file from ``thinkscale fit-policy``; none = the packaged default for the default model.

    Run: a first wave of ``wave_size`` chains (``first_wave`` when the policy sets it), requested exactly as
    self-consistency requests its first chains (same messages, sampling knobs and seed, drawn first from ``rng``;
    with the policy's ``greedy_first``, the greedy strategy's one chain and the rest of those, in one backend call);
    its agreement (and confidence, or the policy's verifier's probability that the first chain is right: verifier
    calls of the run) give a difficulty score and bin; the policy's choice for that bin and budget is then carried
    out: ``stop`` votes on the wave, ``sample`` continues the same seeded draw (``first_sample``) in waves of
    ``wave_size`` until Adaptive-Consistency's posterior reaches the threshold, the vote is futile
    (``give_up_after``) or ``max_samples``, ``strategy`` runs another strategy on what is left of the budget with
    the rng as the run received it (so it draws what it would draw on its own). The answer is the vote's majority; a
    tie is broken by ``rng``, or, with the policy's ``greedy_breaks_ties``, given to the greedy chain's answer when
    it is among the tied ones. Every chain is charged at ``max_tokens`` worst case before it is asked for, so the
    budget is never exceeded. The trace records the features, the bin, the action and the fitted numbers behind it,
    and why the run stopped.

    >>> auto = Auto(budget_tokens=4096, policy="policy.json")
    >>> execute(auto, problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = False
    budget_knob: ClassVar[str] = "budget_tokens"
    budget_in_tokens: ClassVar[bool] = True  # a sweep's budget k: k chains' worth of tokens

    budget_tokens: int | None = None
    policy: str | None = operator_knob(None)

    def __post_init__(self) -> None:
        if self.budget_tokens is not None and (not isinstance(self.budget_tokens, int)
                                               or isinstance(self.budget_tokens, bool) or self.budget_tokens < 1):
            raise ValueError(f"budget_tokens must be an integer >= 1 or none, got {self.budget_tokens!r}")
        policy_at(self.policy)  # a missing or bad policy fails when the strategy is built, naming the file

    def run(self, ctx: Run) -> Result:
        pol = policy_at(self.policy)
        source = self.policy or "(packaged default)"

        def decide(bin_name: str, cap: int | None) -> tuple[Action, dict[str, Any]]:
            row = pol.row_for(cap)
            choice = row.choices[bin_name]
            note: dict[str, Any] = {"policy": source, "budget_row": row.max_completion_tokens,
                                    "fitted_accuracy": choice.accuracy, "fitted_mean_tokens": choice.mean_tokens,
                                    "fitted_problems": choice.n_problems, "why": choice.why}
            if cap is not None and cap < row.max_completion_tokens:
                note["note"] = "the budget is below every fitted budget: the smallest row, cut by the budget"
            return choice.action, note

        return run_controller(pol.sampling, pol.difficulty, decide, ctx, budget_tokens=self.budget_tokens,
                              policy=source, fitted_on=pol.fitted_on.model_dump(mode="json"))


@dataclass
class _Controller:
    """One auto run in progress: its context, sampling, the seeded draw and the chains so far."""

    ctx: Run
    sampling: Sampling
    seed: int
    logprobs: bool
    cands: list[Candidate] = field(default_factory=list)
    sampled: int = 0  # chains of the seeded draw so far (all chains but the greedy one)

    def wave(self, wanted: int) -> bool:
        """Draw up to ``wanted`` more chains (what fits at max_tokens each); False when none fits."""
        s, ctx = self.sampling, self.ctx
        n = ctx.affordable(wanted, s.max_tokens)
        if n == 0:
            return False
        reqs = []
        greedy = s.greedy_first and not self.cands
        if greedy:  # exactly the greedy strategy's request, so a run's greedy unit serves it
            reqs.append(GenRequest(messages=ctx.problem.messages, n=1, temperature=0.0, max_tokens=s.max_tokens,
                                   logprobs=self.logprobs))
        if n - greedy:
            reqs.append(GenRequest(messages=ctx.problem.messages, n=n - greedy, temperature=s.temperature,
                                   top_p=s.top_p, max_tokens=s.max_tokens, seed=self.seed, logprobs=self.logprobs,
                                   first_sample=self.sampled))
        completions = ctx.generate(reqs, tag="wave")  # one call: the backend batches greedy and sampled chains
        for c in completions:
            self.cands.extend(candidates_from(c))
        ctx.note(AutoWave(self.sampled, n, self.seed, int(greedy), Usage.total(c.usage for c in completions)))
        self.sampled += n - greedy
        return True

    def finish(self, stop: str, detail: str | None = None, stop_reason: StopReason | None = None) -> Result:
        """The vote over every chain (a tie to the greedy chain's answer with ``greedy_breaks_ties``)."""
        winner, counts, tie = majority_vote([c.answer for c in self.cands], self.ctx.rng)
        by_greedy = False
        first = self.cands[0].answer if self.cands else None
        if tie and self.sampling.greedy_breaks_ties and first is not None:
            g = normalize_answer(first)  # cands[0] is the greedy chain (greedy_first)
            if g is not None and counts.get(g) == max(counts.values()):
                winner, by_greedy = g, True
        self.ctx.stop(stop, detail)
        votes = {a: float(c) for a, c in counts.items()}
        self.ctx.note(Vote(votes, winner, tie and not by_greedy, by_greedy))
        reason: StopReason = stop_reason or ("budget" if stop == "budget" else "done")
        return self.ctx.result(self.cands, chosen_index=voted_index(self.cands, winner), votes=votes,
                               votes_kind="count", stop_reason=reason, stop_detail=detail)


def run_controller(sampling: Sampling, difficulty: Difficulty, decide: Decide, ctx: Run, *,
                   budget_tokens: int | None = None, policy: str | None = None,
                   fitted_on: dict[str, Any] | None = None) -> Result:
    """auto's algorithm with the decision passed in: ``Auto.run`` decides from its policy file, the fitter
    (``thinkscale.policy.fit``) forces each action it compares. See ``Auto``."""
    start_state = ctx.rng.getstate()  # a strategy action gets the rng as the run received it
    ctx.tighten(max_completion_tokens=budget_tokens)
    ctx.note(PolicyInfo(policy, fitted_on, ctx.budget.max_completion_tokens))
    run = _Controller(ctx, sampling, ctx.seed(), difficulty.score.needs_logprobs)
    if not run.wave(sampling.first):
        return run.finish("budget", "budget allows no first wave")
    feats = wave_features(run.cands, window=difficulty.confidence_window)
    if difficulty.score.needs_verifier:
        judged = _judge_first(difficulty, run)
        if judged is None:
            return run.finish("budget", "the budget leaves no call for the verifier to judge the first chain")
        feats = dataclasses.replace(feats, verifier_p=judged)
    score = difficulty_score(feats, difficulty.score)
    bin_name = difficulty.bin_of(score)
    ctx.note(DifficultyEstimate(feats.to_dict(), difficulty.score.value, score, tuple(difficulty.edges),
                                tuple(difficulty.bins), bin_name))
    action, why = decide(bin_name, ctx.budget.max_completion_tokens)
    ctx.note(PolicyAction(action.model_dump(mode="json"), action.label, why))
    if isinstance(action, StopAction):
        return run.finish("policy_stop", f"the policy stops after the first wave in bin {bin_name}")
    if isinstance(action, SampleAction):
        return _sample(action, run)
    if not isinstance(action, StrategyAction):
        raise TypeError(f"unknown policy action {action!r}")
    return _delegate(action, run, start_state)


def _judge_first(difficulty: Difficulty, run: _Controller) -> float | None:
    """The difficulty's verifier's probability that the first chain is right (its calls charged to the run as verifier
    calls); None when the budget leaves no call for it."""
    ctx = run.ctx
    assert difficulty.verifier is not None  # Difficulty's validator: score "verifier" names one
    verifier = ctx.verifier(difficulty.verifier, difficulty.verifier_path)
    if ctx.scorable(verifier, run.cands[:1]) == 0:
        return None
    return ctx.verify(verifier, run.cands[:1], tag="difficulty")[0][0]


def _sample(action: SampleAction, run: _Controller) -> Result:
    while True:
        counts = Counter(a for a in (normalize_answer(c.answer) for c in run.cands) if a is not None)
        p = majority_stays_probability(counts)
        run.ctx.note(Check(len(run.cands), {a: float(c) for a, c in counts.items()}, p, action.threshold))
        if action.threshold is not None and p >= action.threshold:
            return run.finish("settled", f"P = {p:.4f} >= threshold {action.threshold}")
        if action.give_up_after is not None and vote_is_futile(counts, len(run.cands), action.give_up_after,
                                                                action.give_up_share):
            return run.finish("futile", f"{len(run.cands)} chains drawn, the leader holds "
                              f"{max(counts.values(), default=0)} of them: a share <= give_up_share "
                              f"{action.give_up_share:g}")
        if len(run.cands) >= action.max_samples:
            return run.finish("max_samples", f"{len(run.cands)} chains drawn, the action's max_samples")
        if not run.wave(min(run.sampling.wave_size, action.max_samples - len(run.cands))):
            return run.finish("budget", "the next chain does not fit the budget (charged at max_tokens)")


def _delegate(action: StrategyAction, run: _Controller, start_state: Any) -> Result:
    """Run the action's strategy on a child context (the same ledger, so the same budget) with the rng as the run
    received it (so it draws what it would draw on its own)."""
    ctx = run.ctx
    name, values = parse_spec(action.spec)
    over: dict[str, Any] = {}
    if "max_tokens" in knobs(name) and "max_tokens" not in values:
        over["max_tokens"] = run.sampling.max_tokens  # as the eval harness builds it, so it draws the same chains
    sub = build_strategy(action.spec, **over)
    if ctx.budget.exhausted(ctx.ledger) is not None:
        return run.finish("budget", f"nothing left of the budget for {action.spec}")
    sub_rng = random.Random()
    sub_rng.setstate(start_state)
    child = ctx.child(rng=sub_rng, strategy=strategy_name(sub))
    res = sub.run(child)
    ctx.note(Delegate(action.spec, res.stop_reason, res.answer, child.spent(), res.trace))
    if res.answer is None:  # its chains still count: they were paid for, and they join the vote
        run.cands.extend(res.candidates)
        return run.finish("delegate_no_answer", f"{action.spec} gave no answer: the vote over every chain",
                          stop_reason=res.stop_reason)
    ctx.stop("delegated", f"{action.spec} answered (its stop reason: {res.stop_reason})")
    chosen = None if res.chosen_index is None else len(run.cands) + res.chosen_index
    return ctx.result(run.cands + list(res.candidates), chosen_index=chosen, answer=res.answer, votes=res.votes,
                      votes_kind=res.votes_kind, stop_reason=res.stop_reason)
