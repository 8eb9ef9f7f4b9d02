"""``thinkscale fit-policy``: fit an ``auto`` policy from eval runs, by replaying their self-consistency chains.

Inputs: run folders whose sweep has self-consistency at N chains (the largest budget; ``--strategy
self-consistency --budgets ...,16``), on a training set. Every (problem, sample seed) of the runs is one fitting
instance. Steps:

1. Difficulty. ``auto``'s first wave is the first ``wave_size`` stored chains (same request, see
   ``thinkscale.eval.replay``); the controller runs on the replay backend and its trace gives each instance's
   difficulty score (``1 - agreement``; the confidence score needs per-token logprobs, which stores do not keep;
   ``difficulty="verifier"``: ``1 - p``, the verifier's probability that the first chain is right, from the
   verifier object the caller gives for the policy's spec, e.g. the ORM behind a score cache, or heads cross-fitted
   so that no fitting problem is scored by a head fitted on it). Bin edges are fitted on those scores
   (``features.fit_edges``).
2. Candidate actions after the first wave: ``stop``; ``sample`` up to m chains (m = 2W, 3W, ..., N) with each
   threshold in ``thresholds`` (none = always m), each with and without each futility stop in ``give_ups``; and,
   when the runs have them, ``strategy`` actions for the one-call strategies ``greedy``, ``best-of-n`` and
   ``weighted-sc`` at each stored budget.
3. Evaluation at each token budget B. ``stop`` and ``sample`` actions are *run*: the controller itself, forced to
   the action, capped at B, on the replay backend, with the rng the eval harness gives every strategy on that
   instance; its accuracy is the vote's expected correctness with ties split (as the eval store scores
   self-consistency; with ``greedy_breaks_ties``, a tie the greedy chain's answer is in is that answer's grade, as
   auto decides it), its cost the generated tokens the ledger measured. A ``strategy`` action is estimated from
   the stored unit of that strategy (run without a cap): first-wave tokens + the unit's tokens, the unit's
   correctness; it is offered at B only when its worst case (first wave + chains x max_tokens) fits B, so the cap
   never binds.
4. Objective, per (bin, B): the highest mean accuracy over the bin's instances; among the actions within
   ``tolerance`` of it, the one with the fewest mean generated tokens (then the label that sorts first). Every run
   is capped at B, so each choice's mean tokens are <= B.

Fitting on an evaluation set (a dataset whose name or problem ids say ``test``, or a shipped dataset that is not a
``-train`` split) is refused unless ``allow_test_data`` is set, and the policy records it.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.datasets import DATASETS, EvalProblem
from thinkscale.eval.metrics import mean, selection_value
from thinkscale.eval.replay import (
    ReplayBackend,
    StoredDraw,
    StoredSample,
    controller_chains,
    greedy_plans,
    load_draws,
    run_problems,
    sampler_plan,
    sampling_of,
)
from thinkscale.eval.runner import SweepConfig, plan_strategy
from thinkscale.eval.store import open_existing
from thinkscale.strategies.auto import AutoWave, DifficultyEstimate, run_controller
from thinkscale.strategies.auto_features import DifficultyScore, bin_names, fit_edges
from thinkscale.strategies.auto_policy import (
    FORMAT,
    Action,
    BudgetRow,
    Choice,
    Difficulty,
    FittedOn,
    Policy,
    SampleAction,
    Sampling,
    StopAction,
    StrategyAction,
    TableEntry,
)
from thinkscale.strategies.run import Run
from thinkscale.types import Budget, Result
from thinkscale.verifiers.aggregate import Selection
from thinkscale.verifiers.base import Verifier

log = logging.getLogger(__name__)

# strategies whose stored units can stand for a ``strategy`` action: one generate call of n chains (1 for greedy)
DELEGABLE = ("greedy", "best-of-n", "weighted-sc")

OBJECTIVE_PRICED = ("per difficulty bin and token budget: the action with the highest mean accuracy minus {price:g} "
                    "per 1000 mean generated tokens over the bin's fitting instances (ties in a vote split), every "
                    "run capped at the budget as auto runs it; among the actions within `tolerance` of that, the one "
                    "with the fewest mean generated tokens")
OBJECTIVE = ("per difficulty bin and token budget: the action with the highest mean accuracy over the bin's "
             "fitting instances (ties in a vote split), every run capped at the budget as auto runs it; among the "
             "actions within `tolerance` of that accuracy, the one with the fewest mean generated tokens")


class FitError(ValueError):
    """The runs cannot be fitted on (test data, no self-consistency samples, mixed models or sampling)."""


@dataclass(frozen=True)
class FitOptions:
    n_bins: int = 3
    wave_size: int = 4
    budgets: tuple[int, ...] | None = None  # generated tokens; default wave x max_tokens x (1, 2, 4), <= N chains
    tolerance: float = 0.005
    token_price: float = 0.0  # accuracy given up per 1000 generated tokens (0: the most accurate action)
    min_bin_problems: int = 10
    thresholds: tuple[float | None, ...] = (None, 0.8, 0.9, 0.95)
    # futility stops compared with every sample action (give_up_after, give_up_share); None = no futility stop
    give_ups: tuple[tuple[int, float] | None, ...] = (None, (4, 0.5), (6, 0.34), (6, 0.5), (8, 0.34))
    delegate: bool = True  # also compare the runs' one-call strategies as `strategy` actions
    allow_test_data: bool = False
    sampler: str | None = None  # the self-consistency spec to replay, when a run has several
    model: str | None = None  # when the runs have several models
    greedy_first: bool = False  # auto's first chain is the run's greedy chain (Sampling.greedy_first)
    greedy_breaks_ties: bool = False  # a vote tied for the top goes to the greedy chain's answer (needs greedy_first)
    first_wave: int | None = None  # chains in auto's first wave (Sampling.first_wave; None: wave_size)
    difficulty: DifficultyScore = DifficultyScore.AGREEMENT
    verifier: str | None = None  # difficulty "verifier": the spec auto resolves (Difficulty.verifier) ...
    verifier_path: str | None = None
    # ... and the object that scores the replayed chains for it, keyed like Run's verifiers (e.g. the model's ORM
    # behind a score cache, or heads cross-fitted so that no problem is scored by a head fitted on it)
    verifiers: Mapping[tuple[str, str | None], Verifier] = field(default_factory=dict)
    verifier_scores: str | None = None  # what scored them, for fitted_on


def is_evaluation_set(dataset: str, problem_ids: Sequence[str]) -> bool:
    """True for data a policy must not be fitted on (see the module doc)."""
    name = dataset.lower()
    if "test" in name or any("test" in p.lower() for p in problem_ids):
        return True
    return name in DATASETS and not name.endswith("-train")


@dataclass
class _Instance:
    draw: StoredDraw
    problem: EvalProblem
    replay: ReplayBackend
    chains: tuple[StoredSample, ...]  # in the order the controller's requests get them
    units: dict[str, tuple[float, float]] = field(default_factory=dict)  # spec -> (correct, tokens)


@dataclass(frozen=True)
class _Outcome:
    bin: str
    accuracy: float
    tokens: float


def _value(result: Result, chains: Sequence[StoredSample], greedy_breaks_ties: bool) -> float:
    """Expected correctness of the vote over the chains the run used (the first len(candidates) of ``chains``, in
    the controller's order: ``replay.controller_chains``), ties split (or, with ``greedy_breaks_ties``, given to
    the greedy chain's answer, chain 0, when it is among them), graded as stored."""
    keys = [normalize_answer(c.answer) for c in result.candidates]
    correct = [s.correct for s in chains[:len(keys)]]
    return selection_value(keys, correct, None, Selection.MAJORITY, prefer=0 if greedy_breaks_ties else None)


def _bin_and_first_wave(result: Result) -> tuple[str, float]:
    diff = next((e for e in result.trace if isinstance(e, DifficultyEstimate)), None)
    first = next((e for e in result.trace if isinstance(e, AutoWave)), None)
    if diff is None or first is None:
        raise FitError("a budget allows no first wave: raise the smallest budget to at least one chain's "
                       "max_tokens")
    return diff.bin, float(first.usage.completion_tokens or 0)


def _run(inst: _Instance, sampling: Sampling, difficulty: Difficulty, action: Action, cap: int,
         verifiers: Mapping[tuple[str, str | None], Verifier]) -> Result:
    def decide(bin_name: str, _cap: int | None) -> tuple[Action, dict[str, Any]]:
        return action, {"why": "forced by the fitter"}

    ctx = Run(inst.problem.problem, inst.replay, Budget(), random.Random(inst.draw.rng_seed()), strategy="auto",
              _verifiers=dict(verifiers))
    return run_controller(sampling, difficulty, decide, ctx, budget_tokens=cap)


@dataclass
class _Loaded:
    """What the runs hold for fitting: the replayable instances and what must agree across runs."""

    instances: list[_Instance] = field(default_factory=list)
    datasets: set[tuple[str, str]] = field(default_factory=set)
    samplers: set[tuple[float, float, int]] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    test_data: bool = False
    delegable: dict[str, int] = field(default_factory=dict)  # spec at budget -> worst-case chains


def _load_run(run: str | Path, opts: FitOptions, into: _Loaded) -> None:
    """One run's self-consistency draws (and greedy units, stored strategies to delegate to) as instances."""
    store = open_existing(run, read_only=True)
    try:
        cfg = store.config()
        problems = run_problems(store)
        if is_evaluation_set(cfg["dataset"], list(problems)):
            if not opts.allow_test_data:
                raise FitError(f"{run} is a run on {cfg['dataset']!r}, an evaluation set: a policy fitted on it "
                               "is tuned on the problems it is judged on. Fit on training-set runs "
                               "(`thinkscale eval --dataset gsm8k-train ...`), or pass --allow-test-data (the "
                               "policy records it)")
            into.test_data = True
        into.datasets.add((cfg["dataset"], cfg["dataset_sha256"]))
        plan = sampler_plan(store, opts.sampler)
        into.samplers.add(sampling_of(plan))
        into.labels.add(plan.label)
        models = sorted({r["model"] for r in store.rows("SELECT DISTINCT model FROM jobs WHERE strategy = ?",
                                                        (plan.label,))})
        model = opts.model or (models[0] if len(models) == 1 else None)
        if model is None or model not in models:
            raise FitError(f"{run}: pick the model to fit for ({', '.join(models) or 'none has samples'})")
        draws = load_draws(store, plan, model)
        served = list(draws)
        if opts.greedy_first:
            greedy_runs = greedy_plans(store)
            if not greedy_runs:
                raise FitError(f"{run} has no greedy units: a greedy-first policy replays them (run the sweep "
                               "with --strategy greedy too)")
            for gp in greedy_runs:
                served += load_draws(store, gp, model)
        replay = ReplayBackend.from_draws(served, problems, fingerprint=f"replay:{run}")
        if opts.greedy_first:
            missing = sorted({d.problem_id for d in draws} - set(replay.greedy))
            if missing:
                raise FitError(f"{run}: no greedy unit for {len(missing)} problems (e.g. {missing[0]}); let "
                               "the sweep finish")
        by_key = {(d.problem_id, d.seed): _Instance(d, problems[d.problem_id], replay, controller_chains(
            d, replay.greedy[d.problem_id] if opts.greedy_first else None)) for d in draws}
        into.instances.extend(by_key.values())
        into.fingerprints[model] = ((store.info().get("models") or {}).get(model) or {}).get("fingerprint")
        if opts.delegate:
            _attach_units(store, cfg, model, by_key, into.delegable)
    finally:
        store.close()


def _candidate_actions(opts: FitOptions, first: int, n_chains: int) -> list[Action]:
    """Stop, and every sample action the stored chains can replay (m = the first wave's chains + 1, 2, ... waves,
    and all n_chains), each label once."""
    actions: list[Action] = [StopAction()]
    for m in range(first + opts.wave_size, n_chains + opts.wave_size, opts.wave_size):
        for t in opts.thresholds:
            for g in opts.give_ups:
                if g is None:
                    actions.append(SampleAction(max_samples=min(m, n_chains), threshold=t))
                elif g[0] < min(m, n_chains):  # a futility check at or after max_samples changes nothing
                    actions.append(SampleAction(max_samples=min(m, n_chains), threshold=t, give_up_after=g[0],
                                                give_up_share=g[1]))
    return list({a.label: a for a in actions}.values())


Table = dict[tuple[str, int, str], list[_Outcome]]


def _fill_table(loaded: _Loaded, opts: FitOptions, sampling: Sampling, difficulty: Difficulty,
                actions: list[Action], budgets: Sequence[int], action_of: dict[str, Action]) -> Table:
    """Every candidate action (and stored strategy to delegate to) replayed on every instance at every budget."""
    table: Table = defaultdict(list)
    max_tokens = sampling.max_tokens
    for cap in budgets:
        for inst in loaded.instances:
            first_bin, first_tokens = "", 0.0
            for a in actions:
                res = _run(inst, sampling, difficulty, a, cap, opts.verifiers)
                b, first = _bin_and_first_wave(res)
                if isinstance(a, StopAction):
                    first_bin, first_tokens = b, first
                table[(b, cap, a.label)].append(_Outcome(b, _value(res, inst.chains, opts.greedy_breaks_ties),
                                                         float(res.ledger.total().completion_tokens or 0)))
            for spec, chains in loaded.delegable.items():
                if sampling.first * max_tokens + chains * max_tokens > cap:
                    continue
                unit = inst.units.get(spec)
                if unit is None:
                    continue
                act = StrategyAction(spec=spec)
                action_of[act.label] = act
                table[(first_bin, cap, act.label)].append(_Outcome(first_bin, unit[0], first_tokens + unit[1]))
    return table


def _choose_rows(table: Table, difficulty: Difficulty, budgets: Sequence[int], action_of: dict[str, Action],
                 opts: FitOptions) -> tuple[list[BudgetRow], list[TableEntry]]:
    """The choice per (bin, budget); ties in tokens go to the simplest action (stop first)."""
    rows, entries = [], []
    n_by_bin: dict[tuple[str, int], int] = defaultdict(int)
    for (b, cap, label), outs in table.items():
        if label == "stop":
            n_by_bin[(b, cap)] = len(outs)
    for cap in budgets:
        choices: dict[str, Choice] = {}
        for b in difficulty.bins:
            n = n_by_bin.get((b, cap), 0)
            stats = {label: (mean([o.accuracy for o in outs]), mean([o.tokens for o in outs]))
                     for (bb, cc, label), outs in table.items() if (bb, cc) == (b, cap) and len(outs) == n and n}
            for label, (acc, tok) in sorted(stats.items()):
                entries.append(TableEntry(bin=b, max_completion_tokens=cap, action=label, accuracy=acc,
                                          mean_tokens=tok, n_problems=n))
            choices[b] = _choose(stats, action_of, opts.tolerance, n, b, cap, opts.token_price)
        rows.append(BudgetRow(max_completion_tokens=cap, choices=choices))
    return rows, entries


def fit_policy(runs: Sequence[str | Path], options: FitOptions | None = None) -> Policy:
    """Fit a policy on the runs (see the module doc). Raises FitError / StoreError with what to fix."""
    opts = options or FitOptions()
    if opts.greedy_breaks_ties and not opts.greedy_first:
        raise FitError("greedy_breaks_ties needs greedy_first (--greedy-first): without it no chain is the greedy one")
    if not runs:
        raise FitError("give at least one run folder")
    loaded = _Loaded()
    for run in runs:
        _load_run(run, opts, loaded)
    if len(loaded.datasets) > 1:
        raise FitError(f"the runs are on different datasets: {sorted(d for d, _ in loaded.datasets)}")
    if len(loaded.samplers) > 1 or len(loaded.fingerprints) > 1:
        raise FitError(f"the runs sample differently or use different models ({sorted(loaded.samplers)}, "
                       f"{sorted(loaded.fingerprints)}): fit each on its own")
    if not loaded.instances:
        raise FitError("the runs have no self-consistency samples to replay")
    temperature, top_p, max_tokens = loaded.samplers.pop()
    n_chains = min(len(i.draw.samples) for i in loaded.instances)
    sampling = Sampling(wave_size=opts.wave_size, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                        greedy_first=opts.greedy_first, greedy_breaks_ties=opts.greedy_breaks_ties,
                        first_wave=opts.first_wave)
    if n_chains < sampling.first:
        raise FitError(f"the runs stored {n_chains} chains per problem; the first wave alone needs {sampling.first}")
    budgets = opts.budgets or _default_budgets(sampling.first, max_tokens, n_chains)

    # 1. difficulty: the controller's own score of each first wave (one bin, forced stop)
    one_bin = Difficulty(score=opts.difficulty, edges=[], bins=["all"], verifier=opts.verifier,
                         verifier_path=opts.verifier_path)
    scores = []
    for inst in loaded.instances:
        res = _run(inst, sampling, one_bin, StopAction(), max(budgets), opts.verifiers)
        scores.append(next(e.score for e in res.trace if isinstance(e, DifficultyEstimate)))
    edges = fit_edges(scores, n_bins=opts.n_bins, min_per_bin=opts.min_bin_problems)
    difficulty = Difficulty.model_validate({**one_bin.model_dump(), "edges": edges,
                                            "bins": bin_names(len(edges) + 1)})

    # 2.-4. every candidate action at every budget, then the choice per (bin, budget)
    actions = _candidate_actions(opts, sampling.first, n_chains)
    action_of: dict[str, Action] = {a.label: a for a in actions}
    table = _fill_table(loaded, opts, sampling, difficulty, actions, budgets, action_of)
    rows, entries = _choose_rows(table, difficulty, budgets, action_of, opts)
    dataset, sha = loaded.datasets.pop()
    model = next(iter(loaded.fingerprints))
    return Policy(
        format=FORMAT, sampling=sampling, difficulty=difficulty, budgets=rows, table=entries,
        objective=OBJECTIVE if not opts.token_price else OBJECTIVE_PRICED.format(price=opts.token_price),
        tolerance=opts.tolerance, token_price=opts.token_price,
        fitted_on=FittedOn(runs=[str(r) for r in runs], dataset=dataset, dataset_sha256=sha,
                           problems=len({i.draw.problem_id for i in loaded.instances}),
                           instances=len(loaded.instances), test_data=loaded.test_data, model=model,
                           model_fingerprint=loaded.fingerprints[model],
                           sampler=f"{loaded.labels.pop()} (n_samples={n_chains})", samples_per_problem=n_chains,
                           verifier_scores=opts.verifier_scores),
        fitted_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _default_budgets(wave: int, max_tokens: int, n_chains: int) -> tuple[int, ...]:
    top = n_chains * max_tokens
    return tuple(sorted({min(top, wave * max_tokens * k) for k in (1, 2, 4)}))


def _choose(stats: dict[str, tuple[float, float]], action_of: dict[str, Action], tolerance: float, n: int, b: str,
            cap: int, token_price: float = 0.0) -> Choice:
    """The action with the highest utility (accuracy, minus ``token_price`` per 1000 generated tokens when priced);
    among those within ``tolerance`` of it, the cheapest (then the simplest)."""
    if not stats:  # no fitting instance fell in this bin at this budget: the cheapest safe default
        return Choice(action=StopAction(), accuracy=0.0, mean_tokens=0.0, n_problems=0,
                      why=f"no fitting problem in bin {b} at {cap} tokens: stop after the first wave")
    order = {k: i for i, k in enumerate(action_of)}  # stop, then sampling by size, then strategies: simplest first
    ranked = sorted(stats, key=lambda k: order[k])

    def utility(k: str) -> float:
        return stats[k][0] - token_price * stats[k][1] / 1000.0

    best_label = max(ranked, key=utility)
    best_acc, best_tok = stats[best_label]
    near = [k for k in ranked if utility(k) >= utility(best_label) - tolerance]
    label = min(near, key=lambda k: (stats[k][1], order[k]))
    acc, tok = stats[label]
    why = f"bin {b} at {cap} tokens, {n} fitting problems: {label} has accuracy {acc:.3f} at {tok:.0f} tokens"
    best = "the most accurate" if not token_price else f"the best at {token_price:g} accuracy per 1000 tokens"
    if label == best_label:
        why += f" ({best}; cheapest among equals)"
    else:
        why += (f"; {best}, {best_label}, has {best_acc:.3f} at {best_tok:.0f} tokens, within the tolerance "
                f"{tolerance:g}, so the cheaper one")
    return Choice(action=action_of[label], accuracy=acc, mean_tokens=tok, n_problems=n, why=why)


def _attach_units(store: Any, cfg: dict[str, Any], model: str, by_key: dict[tuple[str, int], _Instance],
                  delegable: dict[str, int]) -> None:
    """Each instance's stored units of the one-call strategies, keyed by their spec at a budget."""
    for s in cfg["strategies"]:
        name = s["spec"].partition(":")[0]
        if name not in DELEGABLE:
            continue
        sweep = SweepConfig(dataset=cfg["dataset"], models=tuple(cfg["models"]), strategies=(s["spec"],),
                            budgets=tuple(cfg["budgets"]), max_tokens=cfg["max_tokens"])
        plan = plan_strategy(s["spec"], sweep)
        for budget in plan.budgets:
            strat = plan.build(budget)
            if getattr(strat, "max_tokens", None) != cfg["max_tokens"]:
                continue  # chains of another length: the worst-case check below would not hold
            spec = plan.spec_at(budget)
            try:
                StrategyAction(spec=spec)
            except ValueError as e:
                log.warning("not offered as a policy action: %s (%s)", spec, e)
                continue
            delegable[spec] = int(getattr(strat, "n_samples", 1))
            for u in store.rows("SELECT problem_id, seed, correct, completion_tokens FROM units WHERE model = ? "
                                "AND strategy = ? AND budget = ?", (model, plan.label, budget)):
                inst = by_key.get((u["problem_id"], u["seed"]))
                if inst is not None and u["completion_tokens"] is not None:
                    inst.units[spec] = (float(u["correct"]), float(u["completion_tokens"]))

