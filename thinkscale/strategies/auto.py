"""auto: a compute-optimal controller. One wave of chains, a difficulty estimate from it, then what a fitted policy
says is the best use of the rest of the budget for problems that look like this one.

Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters",
https://arxiv.org/abs/2408.03314 (difficulty bins, per-bin compute-optimal strategy); the stopping rule is
Adaptive-Consistency's (https://arxiv.org/abs/2305.11860), the confidence signal DeepConf's
(https://arxiv.org/abs/2508.15260).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.base import Backend
from thinkscale.policy.features import difficulty_score, wave_features
from thinkscale.policy.model import (
    Action,
    Difficulty,
    Policy,
    SampleAction,
    Sampling,
    StopAction,
    StrategyAction,
    load_policy,
)
from thinkscale.strategies.adaptive_sc import majority_stays_probability, vote_is_futile
from thinkscale.strategies.base import (
    affordable_samples,
    build_strategy,
    candidates_from,
    charge,
    chosen_by_vote,
    knobs,
    majority_vote,
    new_seed,
    parse_spec,
    register,
)
from thinkscale.types import Budget, Candidate, GenRequest, Ledger, Problem, Result, Role, StopReason

# (bin, token budget of the run or None) -> (the action, what the trace says about why)
Decide = Callable[[str, int | None], tuple[Action, dict[str, Any]]]


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
            Picks the policy's budget row (see ``thinkscale.policy.model``) and is a hard limit.
        policy: a policy file from ``thinkscale fit-policy``; none = the packaged default for the default model.

    Run: a first wave of ``wave_size`` chains, requested exactly as self-consistency requests its first chains
    (same messages, sampling knobs and seed, drawn first from ``rng``; with the policy's ``greedy_first``, the
    greedy strategy's one chain and ``wave_size - 1`` of those, in one backend call); its agreement (and confidence, for
    policies that use it) give a difficulty score and bin; the policy's choice for that bin and budget is then
    carried out: ``stop`` votes on the wave, ``sample`` continues the same seeded draw (``first_sample``) in waves
    until Adaptive-Consistency's posterior reaches the threshold, the vote is futile (``give_up_after``) or
    ``max_samples``, ``strategy`` runs another
    strategy on what is left of the budget with the rng as the run received it (so it draws what it would draw
    on its own). The answer is the vote's majority; a tie is broken by ``rng``, or, with the policy's
    ``greedy_breaks_ties``, given to the greedy chain's answer when it is among the tied ones. Every chain is
    charged at ``max_tokens`` worst case before it is asked for, so the budget is never exceeded. The trace
    records the features, the bin, the action and the fitted numbers behind it, and why the run stopped.

    >>> auto = Auto(budget_tokens=4096, policy="policy.json")
    >>> auto.run(problem, backend, Budget(), rng=random.Random(0))  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = False
    budget_knob: ClassVar[str] = "budget_tokens"
    budget_in_tokens: ClassVar[bool] = True  # a sweep's budget k: k chains' worth of tokens

    budget_tokens: int | None = None
    policy: str | None = None

    def __post_init__(self) -> None:
        if self.budget_tokens is not None and (not isinstance(self.budget_tokens, int)
                                               or isinstance(self.budget_tokens, bool) or self.budget_tokens < 1):
            raise ValueError(f"budget_tokens must be an integer >= 1 or none, got {self.budget_tokens!r}")
        policy_at(self.policy)  # a missing or bad policy fails when the strategy is built, naming the file

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
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

        head = {"event": "policy", "policy": source, "fitted_on": pol.fitted_on.model_dump(mode="json")}
        return run_controller(pol.sampling, pol.difficulty, decide, problem, backend, budget, rng=rng,
                              budget_tokens=self.budget_tokens, head=head)


def _effective(budget: Budget, budget_tokens: int | None) -> Budget:
    caps = [c for c in (budget.max_completion_tokens, budget_tokens) if c is not None]
    return Budget(max_completion_tokens=min(caps) if caps else None, max_calls=budget.max_calls,
                  max_seconds=budget.max_seconds)


def _remaining(budget: Budget, ledger: Ledger) -> Budget | None:
    """What is left of ``budget`` as a Budget for a sub-strategy; None when some limit is spent."""
    if budget.exhausted(ledger) is not None:
        return None
    total = ledger.total()
    return Budget(max_completion_tokens=budget.remaining_completion_tokens(ledger),
                  max_calls=None if budget.max_calls is None else budget.max_calls - total.calls,
                  max_seconds=None if budget.max_seconds is None
                  else budget.max_seconds - ledger.elapsed_seconds())


def run_controller(sampling: Sampling, difficulty: Difficulty, decide: Decide, problem: Problem, backend: Backend,
                   budget: Budget, *, rng: random.Random, budget_tokens: int | None = None,
                   head: dict[str, Any] | None = None) -> Result:
    """auto's algorithm with the decision passed in: ``Auto.run`` decides from its policy file, the fitter
    (``thinkscale.policy.fit``) forces each action it compares. See ``Auto``."""
    start_state = rng.getstate()  # a strategy action gets the rng as the run received it
    eff = _effective(budget, budget_tokens)
    ledger = Ledger()
    trace: list[dict[str, Any]] = [{**(head or {}), "event": "policy", "max_completion_tokens":
                                    eff.max_completion_tokens}]
    seed = new_seed(rng)
    logprobs = difficulty.score.needs_logprobs
    cands: list[Candidate] = []

    sampled = 0  # chains of the seeded draw so far (all chains but the greedy one)

    def wave(wanted: int) -> bool:
        nonlocal sampled
        n = affordable_samples(eff, ledger, wanted, sampling.max_tokens)
        if n == 0:
            return False
        reqs = []
        greedy = sampling.greedy_first and not cands
        if greedy:  # exactly the greedy strategy's request, so a run's greedy unit serves it
            reqs.append(GenRequest(messages=problem.messages, n=1, temperature=0.0, max_tokens=sampling.max_tokens,
                                   logprobs=logprobs))
        if n - greedy:
            reqs.append(GenRequest(messages=problem.messages, n=n - greedy, temperature=sampling.temperature,
                                   top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=seed,
                                   logprobs=logprobs, first_sample=sampled))
        completions = backend.generate(reqs)  # one call: the backend batches the greedy and the sampled chains
        charge(ledger, Role.GENERATOR, completions)
        for c in completions:
            cands.extend(candidates_from(c))
        event: dict[str, Any] = {"event": "wave", "first_sample": sampled, "n": n, "seed": seed,
                                 "usage": sum((c.usage for c in completions[1:]), completions[0].usage).to_dict()}
        if greedy:
            event["greedy"] = 1
        trace.append(event)
        sampled += n - greedy
        return True

    def finish(stop: str, detail: str | None = None, stop_reason: StopReason | None = None) -> Result:
        winner, counts, tie = majority_vote([c.answer for c in cands], rng)
        by_greedy = False
        if tie and sampling.greedy_breaks_ties and cands and cands[0].answer is not None:
            g = normalize_answer(cands[0].answer)  # cands[0] is the greedy chain (greedy_first)
            if g is not None and counts.get(g) == max(counts.values()):
                winner, by_greedy = g, True
        event: dict[str, Any] = {"event": "stop", "reason": stop, "samples": len(cands)}
        if detail:
            event["detail"] = detail
        trace.append(event)
        trace.append({"event": "vote", "counts": counts, "tie_broken_by_rng": tie and not by_greedy,
                      "tie_broken_by_greedy": by_greedy, "winner": winner})
        chosen = chosen_by_vote(cands, winner)
        reason: StopReason = stop_reason or ("budget" if stop == "budget" else "done")
        return Result(answer=chosen.answer if chosen else None, chosen=chosen, candidates=tuple(cands),
                      ledger=ledger, stop_reason=reason, strategy="auto", trace=tuple(trace))

    if not wave(sampling.wave_size):
        return finish("budget", "budget allows no first wave")
    feats = wave_features(cands, window=difficulty.confidence_window)
    score = difficulty_score(feats, difficulty.score)
    bin_name = difficulty.bin_of(score)
    trace.append({"event": "difficulty", "features": feats.to_dict(), "score_kind": difficulty.score.value,
                  "score": score, "edges": difficulty.edges, "bins": difficulty.bins, "bin": bin_name})
    action, why = decide(bin_name, eff.max_completion_tokens)
    trace.append({"event": "action", "action": action.model_dump(mode="json"), "label": action.label, **why})

    if isinstance(action, StopAction):
        return finish("policy_stop", f"the policy stops after the first wave in bin {bin_name}")
    if isinstance(action, SampleAction):
        return _sample(action, sampling.wave_size, cands, wave, finish, trace)
    assert isinstance(action, StrategyAction)
    return _delegate(action, sampling, problem, backend, eff, ledger, cands, trace, start_state, finish)


def _sample(action: SampleAction, wave_size: int, cands: list[Candidate], wave: Callable[[int], bool],
            finish: Callable[..., Result], trace: list[dict[str, Any]]) -> Result:
    while True:
        counts = Counter(a for a in (normalize_answer(c.answer) if c.answer is not None else None
                                     for c in cands) if a is not None)
        p = majority_stays_probability(counts)
        trace.append({"event": "check", "samples": len(cands), "counts": dict(counts), "P": p,
                      "threshold": action.threshold})
        if action.threshold is not None and p >= action.threshold:
            return finish("settled", f"P = {p:.4f} >= threshold {action.threshold}")
        if action.give_up_after is not None and vote_is_futile(counts, len(cands), action.give_up_after,
                                                                action.give_up_share):
            return finish("futile", f"{len(cands)} chains drawn, the leader holds {max(counts.values(), default=0)} of "
                          f"them: a share <= give_up_share {action.give_up_share:g}")
        if len(cands) >= action.max_samples:
            return finish("max_samples", f"{len(cands)} chains drawn, the action's max_samples")
        if not wave(min(wave_size, action.max_samples - len(cands))):
            return finish("budget", "the next chain does not fit the budget (charged at max_tokens)")


def _delegate(action: StrategyAction, sampling: Sampling, problem: Problem, backend: Backend, eff: Budget,
              ledger: Ledger, cands: list[Candidate], trace: list[dict[str, Any]], start_state: Any,
              finish: Callable[..., Result]) -> Result:
    name, values = parse_spec(action.spec)
    over: dict[str, Any] = {}
    if "max_tokens" in knobs(name) and "max_tokens" not in values:
        over["max_tokens"] = sampling.max_tokens  # as the eval harness builds it, so it draws the same chains
    sub = build_strategy(action.spec, **over)
    left = _remaining(eff, ledger)
    if left is None:
        return finish("budget", f"nothing left of the budget for {action.spec}")
    sub_rng = random.Random()
    sub_rng.setstate(start_state)
    res = sub.run(problem, backend, left, rng=sub_rng)
    ledger.entries.extend(res.ledger.entries)
    trace.append({"event": "delegate", "spec": action.spec, "stop_reason": res.stop_reason,
                  "answer": res.answer, "usage": res.ledger.total().to_dict(), "trace": list(res.trace)})
    if res.answer is None:  # its chains still count: they were paid for, and they join the vote
        cands.extend(res.candidates)
        return finish("delegate_no_answer", f"{action.spec} gave no answer: the vote over every chain",
                      stop_reason=res.stop_reason)
    trace.append({"event": "stop", "reason": "delegated", "samples": len(cands) + len(res.candidates),
                  "detail": f"{action.spec} answered (its stop reason: {res.stop_reason})"})
    return Result(answer=res.answer, chosen=res.chosen, candidates=tuple(cands) + tuple(res.candidates),
                  ledger=ledger, stop_reason=res.stop_reason, strategy="auto", trace=tuple(trace))
