"""Evaluate ``auto`` on an eval run without a model: replay the run's self-consistency chains (and greedy chains)
through ``auto`` at each token budget and compare with self-consistency at its largest budget on the same
problems. The core of ``bench/adaptive.py``.

Auto's chains are the stored chains (same requests; ``thinkscale.eval.replay``), so its accuracy and generated
tokens are what a live run would measure, with no new sampling noise between the two. ``accuracy`` counts a tied
vote fractionally, the estimator the store uses for self-consistency (with the policy's ``greedy_breaks_ties``, a
tie the greedy chain's answer is in counts as that answer, as auto decides it; ``answer_accuracy`` grades the
answer the run gave, any other tie broken by the rng); tokens are the ledger's generated tokens per problem. A
policy action the store cannot replay (a verifier-scored strategy) fails with ``ReplayMissing`` /
``NotImplementedError`` naming it.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thinkscale.answers import Verdict, check
from thinkscale.answers.extract import normalize_answer
from thinkscale.eval import metrics
from thinkscale.eval.analysis import Analysis, ConfigRow, analyze
from thinkscale.eval.datasets import EvalProblem
from thinkscale.eval.replay import (
    ReplayBackend,
    ReplayMissing,
    StoredDraw,
    StoredSample,
    controller_chains,
    load_draws,
    run_problems,
    sampler_plan,
    sampling_of,
)
from thinkscale.eval.store import StoreError, open_existing
from thinkscale.strategies.auto import Auto, DifficultyEstimate, PolicyAction
from thinkscale.strategies.auto_policy import Policy, load_policy
from thinkscale.strategies.events import Delegate, Stop
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Role
from thinkscale.verifiers.aggregate import Selection
from thinkscale.verifiers.base import Verifier

WITHIN_POINTS = 2.0  # issue 8: auto within 2 accuracy points of SC@16 ...
MAX_TOKEN_RATIO = 0.25  # ... using at most 25% of its generated tokens
# issue 26, on data the policy was not fitted on: accuracy >= greedy's, and where auto ends with greedy's answer it
# spends at most this many times greedy's generated tokens on those problems (tokens that bought nothing)
MAX_RATIO_AT_GREEDY_ANSWER = 1.5
AUTO_LABEL = "auto (numbers: token budget)"  # its points on the accuracy-vs-tokens plot


def _auto_on(auto: Auto, cap: int, d: StoredDraw, ep: EvalProblem, replay: ReplayBackend, policy: Policy,
             verifiers: Mapping[tuple[str, str | None], Verifier]
             ) -> tuple[float, float, float, tuple[str, str, str], str | None, float]:
    """auto replayed on one stored draw: (its graded value with ties split, whether its answer is right, tokens
    spent, (bin, action, stop reason), its answer normalised, the verifier's prompt tokens)."""
    try:
        res = execute(auto, ep.problem, replay, Budget(), rng=random.Random(d.rng_seed()), verifiers=verifiers)
    except (ReplayMissing, NotImplementedError) as e:
        raise ReplayMissing(f"auto at {cap} tokens on {d.problem_id}: {e}. Only stop, sample and greedy "
                            "actions replay from a run; fit the policy with --no-delegate to compare it "
                            "this way") from None
    spent = res.ledger.total().completion_tokens
    if spent is None or spent > cap:
        raise AssertionError(f"auto spent {spent} tokens at a budget of {cap}")
    right = check(ep.task, res.answer, ep.reference) is Verdict.EQUIVALENT
    if any(isinstance(e, Delegate) for e in res.trace):
        value = float(right)
    else:  # the chains are the first len(candidates) in the controller's order: the vote, ties split
        keys = [normalize_answer(c.answer) for c in res.candidates]
        chains = controller_chains(d, replay.greedy[d.problem_id] if policy.sampling.greedy_first else None)
        value = metrics.selection_value(
            keys, [x.correct for x in chains[:len(keys)]], None, Selection.MAJORITY,
            prefer=0 if policy.sampling.greedy_breaks_ties else None)
    diff = next((e for e in res.trace if isinstance(e, DifficultyEstimate)), None)
    act = next((e for e in res.trace if isinstance(e, PolicyAction)), None)
    stop = next(e for e in reversed(res.trace) if isinstance(e, Stop))
    return value, float(right), float(spent), (diff.bin if diff else "(no first wave)",
                                              act.label if act else "(none)", stop.reason), \
        normalize_answer(res.answer), float(res.ledger.total(Role.VERIFIER).prompt_tokens or 0)


def versus_greedy(answers: dict[str, list[str | None]], tokens: dict[str, list[float]], accuracy: float,
                  greedy: dict[str, StoredSample]) -> dict[str, Any] | None:
    """auto against the run's greedy chains (None when the run has none for some problem): accuracy minus greedy's,
    and on the (problem, seed) instances where auto's answer is greedy's, auto's generated tokens over greedy's on
    the same instances (``MAX_RATIO_AT_GREEDY_ANSWER``: the transfer target)."""
    if not greedy or any(pid not in greedy for pid in answers):
        return None
    g_acc = metrics.mean([float(greedy[pid].correct) for pid in answers])
    same_auto, same_greedy = [], []
    for pid, ans in answers.items():
        g = greedy[pid]
        g_key = normalize_answer(g.answer)
        for a, t in zip(ans, tokens[pid], strict=True):
            if a is not None and a == g_key:
                same_auto.append(t)
                same_greedy.append(float(g.completion_tokens or 0))
    ratio = (sum(same_auto) / sum(same_greedy)) if same_greedy and sum(same_greedy) > 0 else None
    return {"greedy_accuracy": g_acc, "accuracy_minus_greedy": accuracy - g_acc,
            "instances_with_greedy_answer": len(same_auto),
            "token_ratio_at_greedy_answer": ratio,
            "meets_transfer_target": accuracy >= g_acc - 1e-12 and (ratio is None
                                                                   or ratio <= MAX_RATIO_AT_GREEDY_ANSWER)}


def _transfer_met(row: dict[str, Any]) -> bool:
    vs = row.get("versus_greedy")
    return isinstance(vs, dict) and bool(vs.get("meets_transfer_target"))


def evaluate_auto(run: str | Path, policy_path: str | Path | None, *, budgets: list[int] | None = None,
                  sampler: str | None = None, model: str | None = None,
                  verifiers: Mapping[tuple[str, str | None], Verifier] | None = None
                  ) -> tuple[dict[str, Any], Analysis]:
    """(the comparison as JSON-ready data, the run's Analysis with auto's points added as strategy ``auto``).
    ``verifiers``: for a policy whose difficulty asks a verifier, the one that scores the stored chains
    (``thinkscale.policy.judges``)."""
    policy = load_policy(policy_path)
    pol_arg = None if policy_path is None else str(policy_path)
    store = open_existing(run, read_only=True)
    try:
        cfg = store.config()
        plan = sampler_plan(store, sampler)
        models = cfg["models"] if model is None else [model]
        if len(models) != 1:
            raise StoreError(f"{run} has models {models}: pick one")
        model = models[0]
        problems = run_problems(store)
        draws = load_draws(store, plan, model)
        replay = ReplayBackend.from_store(store, spec=plan.label, model=model)
        sc_units = {(u["problem_id"], u["seed"]): u for u in store.rows(
            "SELECT * FROM units WHERE model = ? AND strategy = ? AND budget = ?", (model, plan.label,
                                                                                  plan.budgets[-1]))}
        analysis = analyze([store], reps=1000)
    finally:
        store.close()
    temperature, top_p, max_tokens = sampling_of(plan)
    s = policy.sampling
    if (s.temperature, s.top_p, s.max_tokens) != (temperature, top_p, max_tokens):
        raise StoreError(f"the policy samples at temperature {s.temperature}, top_p {s.top_p}, max_tokens "
                         f"{s.max_tokens}; the run's {plan.label} at {temperature}, {top_p}, {max_tokens}: "
                         "its chains are not the ones auto would draw")
    budgets = budgets or [r.max_completion_tokens for r in policy.budgets]
    n_chains = plan.budgets[-1]
    per_problem_sc_acc: dict[str, list[float]] = defaultdict(list)
    per_problem_sc_tok: dict[str, list[float]] = defaultdict(list)
    for d in draws:
        u = sc_units[(d.problem_id, d.seed)]
        per_problem_sc_acc[d.problem_id].append(u["correct"])
        per_problem_sc_tok[d.problem_id].append(u["completion_tokens"])
    sc_acc = metrics.mean([metrics.mean(v) for v in per_problem_sc_acc.values()])
    sc_tok = metrics.mean([metrics.mean(v) for v in per_problem_sc_tok.values()])

    fixed = [(r.costs["completion_tokens"], r.accuracy.mean, r.label) for r in analysis.rows
             if r.model == model and not r.strategy.startswith("auto") and r.costs["completion_tokens"] is not None]
    out_rows, auto_rows = [], []
    for cap in budgets:
        acc: dict[str, list[float]] = defaultdict(list)
        ans: dict[str, list[float]] = defaultdict(list)
        tok: dict[str, list[float]] = defaultdict(list)
        judged: list[float] = []
        answers: dict[str, list[str | None]] = defaultdict(list)
        bins: Counter[str] = Counter()
        actions: Counter[str] = Counter()
        stops: Counter[str] = Counter()
        auto = Auto(budget_tokens=cap, policy=pol_arg)
        for d in draws:
            value, right, spent, labels, answer, v_tokens = _auto_on(auto, cap, d, problems[d.problem_id], replay,
                                                                     policy, verifiers or {})
            judged.append(v_tokens)
            answers[d.problem_id].append(answer)
            acc[d.problem_id].append(value)
            ans[d.problem_id].append(right)
            tok[d.problem_id].append(spent)
            bins[labels[0]] += 1
            actions[labels[1]] += 1
            stops[labels[2]] += 1
        per_acc = [metrics.mean(v) for v in acc.values()]
        a_mean = metrics.mean(per_acc)
        t_mean = metrics.mean([metrics.mean(v) for v in tok.values()])
        front = max((fa for fc, fa, _ in fixed if fc <= t_mean), default=0.0)
        out_rows.append({
            "budget_tokens": cap, "accuracy": a_mean, "answer_accuracy": metrics.mean(
                [metrics.mean(v) for v in ans.values()]), "mean_tokens": t_mean,
            "token_ratio_vs_sc": t_mean / sc_tok if sc_tok else None,
            "mean_verifier_prompt_tokens": metrics.mean(judged),
            "accuracy_gap_points": 100 * (a_mean - sc_acc),
            "meets_target": 100 * (sc_acc - a_mean) <= WITHIN_POINTS and t_mean <= MAX_TOKEN_RATIO * sc_tok,
            "frontier_accuracy_at_tokens": front, "on_or_above_frontier": a_mean >= front - 1e-9,
            "bins": dict(bins), "actions": dict(actions), "stop_reasons": dict(stops),
            "versus_greedy": versus_greedy(answers, tok, a_mean, replay.greedy)})
        auto_rows.append(ConfigRow(model, AUTO_LABEL, cap, metrics.bootstrap_ci(per_acc, reps=1000),
                                   {"completion_tokens": t_mean} | {k: None for k in
                                                                   ("prompt_tokens", "cached_prompt_tokens",
                                                                    "verifier_tokens", "wall_seconds", "flops")},
                                   False))
    result = {
        "run": str(run), "dataset": cfg["dataset"], "model": model, "policy": pol_arg or "(packaged default)",
        "policy_fitted_on": policy.fitted_on.model_dump(mode="json"),
        "same_dataset_as_fit": policy.fitted_on.dataset == cfg["dataset"],
        "problems": len(per_problem_sc_acc), "instances": len(draws),
        "sc": {"spec": plan.label, "n_samples": n_chains, "accuracy": sc_acc, "mean_tokens": sc_tok},
        "auto": out_rows,
        "target": {"within_points": WITHIN_POINTS, "max_token_ratio": MAX_TOKEN_RATIO,
                   "met_at_budgets": [r["budget_tokens"] for r in out_rows if r["meets_target"]],
                   "max_token_ratio_at_greedy_answer": MAX_RATIO_AT_GREEDY_ANSWER,
                   "transfer_met_at_budgets": [r["budget_tokens"] for r in out_rows if _transfer_met(r)]},
        "fixed_points": [{"label": lab, "mean_tokens": c, "accuracy": a} for c, a, lab in sorted(fixed)],
    }
    return result, dataclasses.replace(analysis, rows=analysis.rows + auto_rows)
