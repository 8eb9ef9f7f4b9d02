"""From a run store to the numbers a report shows: per-config accuracy with intervals and costs, pass@k and maj@k
curves, difficulty bins, the Pareto frontiers (generated tokens; FLOPs with the verifier's), the compute-optimal table,
the paired comparisons against greedy and self-consistency, and per strategy whether it pays (``Verdict``).
Reads the store; computes with ``thinkscale.eval.metrics``.

Each problem counts once per (model, strategy config, budget): its units over seeds are averaged first. The views
that compare configs (the Pareto frontier, the compute-optimal table, the cross-model crossovers) take only configs
with every problem finished: a config stored for a few problems so far (a sweep in progress) would otherwise win or
lose on other problems than the ones it is compared with. Such configs are listed by ``Analysis.not_compared``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from thinkscale.eval import metrics
from thinkscale.eval.metrics import Estimate, Point
from thinkscale.eval.store import Store

COST_FIELDS = ("completion_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens", "wall_seconds",
               "flops")


@dataclass(frozen=True)
class ConfigRow:
    """One (model, strategy config, budget): accuracy over problems and mean costs per problem (None = unknown)."""

    model: str
    strategy: str
    budget: int
    accuracy: Estimate
    costs: dict[str, float | None]
    estimated_cost: bool  # costs are k/N shares of larger runs (sample reuse)

    @property
    def label(self) -> str:
        return f"{self.strategy}@{self.budget}"


@dataclass(frozen=True)
class Sharing:
    """Chains the runs' jobs generated vs were served from the store (sample sharing), with their completion
    tokens, and the seconds the served ones took when first generated."""

    generated: int
    served: int
    generated_tokens: int
    served_tokens: int
    served_seconds: float
    other_runs: dict[str, int] = field(default_factory=dict)  # of ``served``: from other runs' stores, per run

    def describe(self) -> str:
        total = self.generated + self.served
        where = "the run's store"
        if self.other_runs:
            where += (" (" + ", ".join(f"{n} from {run}" for run, n in sorted(self.other_runs.items()))
                      + ": another run's store, share_chains_from)")
        return (f"{self.served} of {total} chains ({self.served_tokens} of "
                f"{self.generated_tokens + self.served_tokens} completion tokens) were served from {where} "
                f"instead of generated again (sample sharing); strategy costs charge them as first generated "
                f"({self.served_seconds:.1f} s), the sweep's wall and backend seconds do not include them")


@dataclass(frozen=True)
class Paired:
    """A config against the run's baselines on the same problems: its accuracy minus greedy's (``vs_greedy``) and
    minus self-consistency's at the same budget (``vs_sc``), per problem, with 95% bootstrap intervals over problems;
    ``flops_vs_sc``: its mean FLOPs per problem (verifier's included) over self-consistency's. None where the run has
    no such baseline with every problem finished."""

    row: ConfigRow
    vs_greedy: Estimate | None
    vs_sc: Estimate | None
    flops_vs_sc: float | None


GREEDY, SELF_CONSISTENCY = "greedy", "self-consistency"  # the baselines' strategy labels (default knobs)


def paired_comparisons(rows: Sequence[ConfigRow], per_problem: dict[tuple[str, str, int], dict[str, float]],
                       complete: Callable[[ConfigRow], bool], *, reps: int) -> list[Paired]:
    """Every complete config but greedy, against greedy (at budget 1) and, other than self-consistency itself,
    against self-consistency at the same budget, when the run has them complete (see ``Paired``)."""
    whole = {(r.model, r.strategy, r.budget): r for r in rows if complete(r)}

    def diff(r: ConfigRow, base: ConfigRow | None) -> Estimate | None:
        if base is None:
            return None
        # complete configs of one model have the same problems
        mine, theirs = per_problem[(r.model, r.strategy, r.budget)], per_problem[(base.model, base.strategy,
                                                                                  base.budget)]
        return metrics.bootstrap_ci([mine[p] - theirs[p] for p in sorted(mine)], reps=reps)

    out = []
    for _, r in sorted(whole.items()):
        if r.strategy == GREEDY:
            continue
        greedy = whole.get((r.model, GREEDY, 1))
        sc = None if r.strategy == SELF_CONSISTENCY else whole.get((r.model, SELF_CONSISTENCY, r.budget))
        ratio = None
        if sc is not None and r.costs["flops"] is not None and sc.costs["flops"]:
            ratio = r.costs["flops"] / sc.costs["flops"]
        out.append(Paired(r, diff(r, greedy), diff(r, sc), ratio))
    return out


def has_every_problem(r: ConfigRow, model_problems: dict[str, int]) -> bool:
    """Whether ``r`` has every problem its model's configs finished (``model_problems``: model -> that count), so it
    can be compared with them."""
    return r.accuracy.n >= model_problems.get(r.model, 0)


@dataclass(frozen=True)
class Verdict:
    """Whether a strategy pays on a model, from its complete configs: the budgets at which it sits on the Pareto
    frontier of generated tokens and of FLOPs (the verifier's included; a config tied exactly with a frontier point
    counts as on it), the budgets at which it beats or trails self-consistency at the same budget with the paired 95%
    interval clear of 0, and for each budget off the FLOPs frontier the config that beats it there (the cheapest
    frontier config at least as accurate, as ``"strategy@budget"``). It pays when some config is on a frontier."""

    model: str
    strategy: str
    budgets: tuple[int, ...]
    tokens_frontier: tuple[int, ...]
    flops_frontier: tuple[int, ...]
    above_sc: tuple[int, ...]
    below_sc: tuple[int, ...]
    beaten_by: tuple[tuple[int, str], ...]

    @property
    def pays(self) -> bool:
        return bool(self.tokens_frontier or self.flops_frontier)


def verdicts(rows: Sequence[ConfigRow], frontier: dict[str, list[Point]], frontier_flops: dict[str, list[Point]],
             paired: Sequence[Paired], complete: Callable[[ConfigRow], bool]) -> list[Verdict]:
    """One ``Verdict`` per (model, strategy) with a complete config, ordered by model and strategy."""
    vs_sc = {(p.row.model, p.row.strategy, p.row.budget): p.vs_sc for p in paired}

    def on(front: list[Point], r: ConfigRow, cost: str) -> bool:
        return any((q.cost, q.accuracy) == (r.costs[cost], r.accuracy.mean) for q in front)

    groups: dict[tuple[str, str], list[ConfigRow]] = defaultdict(list)
    for r in rows:
        if complete(r):
            groups[(r.model, r.strategy)].append(r)
    out = []
    for (model, strategy), mine in sorted(groups.items()):
        mine.sort(key=lambda r: r.budget)
        tok, fl = frontier.get(model, []), frontier_flops.get(model, [])
        diffs = [(r.budget, vs_sc.get((model, strategy, r.budget))) for r in mine]
        beaten = []
        for r in mine:
            if r.costs["flops"] is None or on(fl, r, "flops"):
                continue
            better = next((q for q in fl if q.accuracy >= r.accuracy.mean), None)
            if better is not None:
                beaten.append((r.budget, f"{better.label}@{better.budget}"))
        out.append(Verdict(model, strategy, tuple(r.budget for r in mine),
                           tuple(r.budget for r in mine if on(tok, r, "completion_tokens")),
                           tuple(r.budget for r in mine if on(fl, r, "flops")),
                           tuple(b for b, d in diffs if d is not None and d.low > 0),
                           tuple(b for b, d in diffs if d is not None and d.high < 0), tuple(beaten)))
    return out


@dataclass
class Analysis:
    config: dict[str, Any]
    info: dict[str, Any]
    dataset: str
    rows: list[ConfigRow]
    pass_at_k: dict[tuple[str, str], dict[int, float]]  # (model, strategy) -> k -> mean pass@k
    maj_at_k: dict[tuple[str, str], dict[int, float]]  # (model, strategy) -> k -> mean accuracy (prefix-reused)
    bins: dict[str, dict[str, str]]  # model -> problem_id -> bin
    bin_source: str  # "MATH level" or "pass rate"
    by_bin: dict[tuple[str, str, int, str], Estimate]  # (model, strategy, budget, bin) -> accuracy
    frontier: dict[str, list[Point]]  # model -> Pareto points (generated tokens vs accuracy)
    optimal: dict[str, dict[tuple[str, int], tuple[str, float]]]  # model -> (bin, budget) -> (strategy, acc)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    n_problems: int = 0
    sharing: Sharing | None = None  # None: the runs stored no chains (made before sample sharing existed)
    n_params: dict[str, int | None] = field(default_factory=dict)  # model -> parameters, as its backend reported
    model_problems: dict[str, int] = field(default_factory=dict)  # model -> problems any of its configs finished
    frontier_flops: dict[str, list[Point]] = field(default_factory=dict)  # model -> Pareto points (FLOPs, verifier's
    #                                                                        included, vs accuracy)
    paired: list[Paired] = field(default_factory=list)  # each config against greedy and self-consistency
    verdicts: list[Verdict] = field(default_factory=list)  # each strategy: on a frontier or never paying

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.rows})

    def complete(self, r: ConfigRow) -> bool:
        return has_every_problem(r, self.model_problems)

    def bin_size(self, model: str, b: str) -> int:
        """Problems of ``model`` in difficulty bin ``b`` (0 if none): its configs' largest count there (a config
        short of problems has fewer)."""
        return max((e.n for (m, _, _, bb), e in self.by_bin.items() if m == model and bb == b), default=0)

    def not_compared(self) -> tuple[list[ConfigRow], list[ConfigRow]]:
        """(configs left out of every comparison: fewer problems finished than their model's other configs;
        configs left out of the cross-model crossovers only: all their model's problems, fewer than the report's)."""
        short = [r for r in self.rows if not self.complete(r)]
        cross = [r for r in self.rows if self.complete(r) and r.accuracy.n < self.n_problems]
        return short, cross

    def overhead(self) -> tuple[float, float, float | None]:
        """(wall seconds, seconds inside backend calls, overhead share) over every session that ran jobs."""
        wall = sum(s["wall_seconds"] or 0.0 for s in self.sessions)
        busy = sum(s["backend_seconds"] or 0.0 for s in self.sessions)
        return wall, busy, (None if wall <= 0 else max(0.0, 1 - busy / wall))


def _mean_opt(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else metrics.mean([v for v in values if v is not None])


def analyze(stores: Sequence[Store], *, reps: int = 2000) -> Analysis:
    """Analyse one run, or several runs on the same dataset (e.g. one per model, each with its own strategies);
    a (model, strategy) pair may appear in only one of them."""
    if not stores:
        raise ValueError("no run to analyse")
    configs = [s.config() for s in stores]
    datasets = {(c["dataset"], c["dataset_sha256"]) for c in configs}
    if len(datasets) > 1:
        raise ValueError(f"runs on different datasets cannot share a report: {sorted(d for d, _ in datasets)}")
    units = [r for s in stores for r in s.rows("SELECT * FROM units")]
    owner: dict[tuple[str, str], str] = {}
    for s in stores:
        for r in s.rows("SELECT DISTINCT model, strategy FROM units"):
            key = (r["model"], r["strategy"])
            if key in owner:
                raise ValueError(f"model {key[0]} with strategy {key[1]} is in both {owner[key]} and {s.dir}")
            owner[key] = str(s.dir)
    problems = {r["problem_id"]: r for s in stores for r in s.rows("SELECT * FROM problems")}
    if not units:
        raise ValueError(f"{', '.join(str(s.path) for s in stores)}: no finished units yet")
    cfg = configs[0] if len(configs) == 1 else {"runs": {str(s.dir): c for s, c in zip(stores, configs, strict=True)},
                                                "budgets": sorted({b for c in configs for b in c["budgets"]})}

    per: dict[tuple[str, str, int], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for u in units:
        per[(u["model"], u["strategy"], u["budget"])][u["problem_id"]].append(u)
    rows = []
    per_problem: dict[tuple[str, str, int], dict[str, float]] = {}
    for (model, strat, budget), by_problem in sorted(per.items()):
        per_problem[(model, strat, budget)] = {pid: metrics.mean([u["correct"] for u in us])
                                               for pid, us in by_problem.items()}
        accs = [v for _, v in sorted(per_problem[(model, strat, budget)].items())]
        costs = {f: _mean_opt([_mean_opt([u[f] for u in us]) for us in by_problem.values()]) for f in COST_FIELDS}
        est = any(u["estimated_cost"] for us in by_problem.values() for u in us)
        rows.append(ConfigRow(model, strat, budget, metrics.bootstrap_ci(accs, reps=reps), costs, est))

    samples = [r for st in stores for r in st.rows(
        "SELECT j.model, j.strategy, j.problem_id, j.seed, j.reuse, s.correct, s.answer "
        "FROM samples s JOIN jobs j ON s.job_id = j.job_id")]
    groups: dict[tuple[str, str, str, int], list[int]] = defaultdict(list)
    for row in samples:
        if row["reuse"]:
            groups[(row["model"], row["strategy"], row["problem_id"], row["seed"])].append(row["correct"])
    pass_at: dict[tuple[str, str], dict[int, float]] = {}
    for (model, strat) in sorted({(m, st) for m, st, _, _ in groups}):
        gs = [v for (m, st, _, _), v in groups.items() if m == model and st == strat]
        n = min(len(g) for g in gs)
        pass_at[(model, strat)] = {k: metrics.mean([metrics.pass_at_k(len(g), sum(g), k) for g in gs])
                                   for k in _ks(n)}
    reused = {(m, st) for m, st, _, _ in groups}
    maj_at = {key: {r.budget: r.accuracy.mean for r in rows if (r.model, r.strategy) == key} for key in sorted(reused)}

    bins, source = _difficulty(problems, samples)
    by_bin: dict[tuple[str, str, int, str], Estimate] = {}
    for (model, strat, budget), by_problem in per.items():
        split: dict[str, list[float]] = defaultdict(list)
        for pid, us in by_problem.items():
            split[bins[model][pid]].append(metrics.mean([u["correct"] for u in us]))
        for b, accs in split.items():
            by_bin[(model, strat, budget, b)] = metrics.bootstrap_ci(accs, reps=reps)

    model_problems = {m: len({pid for (mm, _, _), by_problem in per.items() if mm == m for pid in by_problem})
                      for m in {r.model for r in rows}}

    def complete(r: ConfigRow) -> bool:
        return has_every_problem(r, model_problems)

    whole = {(r.model, r.strategy, r.budget) for r in rows if complete(r)}
    frontier, frontier_flops = {}, {}
    optimal = {}
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model and complete(r)]
        frontier[model], frontier_flops[model] = _frontier(mine, "completion_tokens"), _frontier(mine, "flops")
        optimal[model] = metrics.compute_optimal({(b, budget, strat): e.mean
                                                  for (m, strat, budget, b), e in by_bin.items()
                                                  if m == model and (m, strat, budget) in whole})
    sessions = [dict(r) | {"run": str(s.dir)} for s in stores
                for r in s.rows("SELECT * FROM sessions ORDER BY session_id")]
    dataset = next(iter(problems.values()))["dataset"]
    info = stores[0].info() if len(stores) == 1 else {str(s.dir): s.info() for s in stores}
    n_params = {m: ident.get("n_params") for s in stores for m, ident in (s.info().get("models") or {}).items()}
    paired = paired_comparisons(rows, per_problem, complete, reps=reps)
    return Analysis(cfg, info, dataset, rows, pass_at, maj_at, bins, source, by_bin, frontier, optimal,
                    sessions, len({u["problem_id"] for u in units}), _sharing(stores), n_params, model_problems,
                    frontier_flops, paired, verdicts(rows, frontier, frontier_flops, paired, complete))


def _frontier(rows: Sequence[ConfigRow], cost: str) -> list[Point]:
    """The Pareto frontier of ``rows`` with ``costs[cost]`` per problem on the x-axis (rows with it unknown left
    out)."""
    return metrics.pareto_frontier([Point(r.strategy, r.budget, r.costs[cost], r.accuracy.mean)  # type: ignore[arg-type]
                                    for r in rows if r.costs[cost] is not None])


@dataclass(frozen=True)
class Crossover:
    """Where a smaller model with more thought catches up: a larger model's config (``large``), and the smaller
    model's cheapest config by mean FLOPs per problem whose mean accuracy is at least as high (``match``; None when
    none is), beside the smaller model's most accurate config (``best``)."""

    large: ConfigRow
    small_model: str
    match: ConfigRow | None
    best: ConfigRow

    @property
    def flops_ratio(self) -> float | None:
        """The match's FLOPs per problem over the larger config's (below 1: the smaller model got there cheaper)."""
        if self.match is None or not self.large.costs["flops"]:
            return None
        return self.match.costs["flops"] / self.large.costs["flops"]  # type: ignore[operator]


def crossovers(a: Analysis) -> list[Crossover]:
    """For every config of every model with a known parameter count, and every model with fewer parameters: the
    :class:`Crossover`. Configs whose FLOPs are unknown, and configs without every problem of the report finished,
    take no part (a model would otherwise be compared on other problems than the one it is compared with)."""
    sized = {m: n for m, n in a.n_params.items() if n}
    with_flops = [r for r in a.rows if r.model in sized and r.costs["flops"] is not None
                  and r.accuracy.n >= a.n_problems]
    out = []
    for large in sorted(with_flops, key=lambda r: (r.model, r.strategy, r.budget)):
        for small in sorted(m for m in sized if sized[m] < sized[large.model]):
            mine = [r for r in with_flops if r.model == small]
            if not mine:
                continue
            hits = [r for r in mine if r.accuracy.mean >= large.accuracy.mean]
            match = min(hits, key=lambda r: (r.costs["flops"], r.strategy, r.budget)) if hits else None
            best = max(mine, key=lambda r: (r.accuracy.mean, -r.costs["flops"]))  # type: ignore[operator]
            out.append(Crossover(large, small, match, best))
    return out


def _sharing(stores: Sequence[Store]) -> Sharing | None:
    out = Sharing(0, 0, 0, 0, 0.0)
    for s in stores:
        for r in s.rows("SELECT source_job IS NOT NULL OR source_run IS NOT NULL AS served, source_run, "
                        "COUNT(*) AS n, TOTAL(completion_tokens) AS tokens, TOTAL(seconds) AS seconds FROM chains "
                        "GROUP BY 1, 2"):
            if r["source_run"] is not None:
                out.other_runs[r["source_run"]] = out.other_runs.get(r["source_run"], 0) + r["n"]
            if r["served"]:
                out = replace(out, served=out.served + r["n"], served_tokens=out.served_tokens + int(r["tokens"]),
                              served_seconds=out.served_seconds + r["seconds"])
            else:
                out = replace(out, generated=out.generated + r["n"],
                              generated_tokens=out.generated_tokens + int(r["tokens"]))
    return None if out.generated + out.served == 0 else out


def _ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= n]
    return ks if n in ks else ks + [n]


def _difficulty(problems: dict[str, Any], samples: list[Any]) -> tuple[dict[str, dict[str, str]], str]:
    """Per model, each problem's bin: its MATH level when every problem has one, else the bin of the model's own
    pass rate over its sampled (prefix-reused) chains, or over all its samples when it has no sampled ones."""
    models = sorted({s["model"] for s in samples})
    if problems and all(p["level"] is not None for p in problems.values()):
        return {m: {pid: f"L{p['level']}" for pid, p in problems.items()} for m in models}, "MATH level"
    out: dict[str, dict[str, str]] = {}
    for m in models:
        mine = [s for s in samples if s["model"] == m]
        sampled = [s for s in mine if s["reuse"]] or mine
        hits: dict[str, list[int]] = defaultdict(list)
        for s in sampled:
            hits[s["problem_id"]].append(s["correct"])
        out[m] = {pid: metrics.difficulty_bin(sum(h) / len(h)) for pid, h in hits.items()}
        for pid in problems:  # a problem with no sample at all (no job finished) cannot be binned
            out[m].setdefault(pid, "?")
    return out, "pass rate"


def export_rows(store: Store) -> list[dict[str, Any]]:
    """One row per unit for ``thinkscale export``: identification, answer and grade, and every cost."""
    out = []
    for r in store.rows("SELECT u.*, p.dataset, p.reference FROM units u JOIN problems p USING (problem_id) "
                        "ORDER BY u.model, u.strategy, u.budget, u.problem_id, u.seed"):
        out.append({"problem_id": r["problem_id"], "dataset": r["dataset"], "model": r["model"],
                    "strategy": r["strategy"], "budget": r["budget"], "seed": r["seed"], "answer": r["answer"],
                    "reference": r["reference"], "correct": r["correct"], "answer_correct": r["answer_correct"],
                    "n_subsets": r["n_subsets"], "estimated_cost": r["estimated_cost"],
                    "prompt_tokens": r["prompt_tokens"], "cached_prompt_tokens": r["cached_prompt_tokens"],
                    "completion_tokens": r["completion_tokens"], "verifier_tokens": r["verifier_tokens"],
                    "wall_seconds": r["wall_seconds"], "flops": r["flops"]})
    return out


def config_json(a: Analysis) -> str:
    return json.dumps(a.config, indent=2, sort_keys=True)
