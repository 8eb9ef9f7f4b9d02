"""Rescore a stored run with other selectors, without regenerating: ``thinkscale select RUN --selector ...``.

Every problem's stored self-consistency chains (``thinkscale.eval.draws``: the job at the largest budget, N chains)
are judged again by each selector at each k <= N the way the sweep harness scores a reused budget: the mean over
k-subsets of the N chains (all of them, or the run's ``max_subsets`` drawn with the harness's own per-unit rng,
``runner.unit_rng``), ties split evenly. So ``majority`` reproduces the store's own self-consistency units exactly,
and every selector is judged on the very same subsets (paired). Selectors (none reads the reference answer):

- ``majority``: the plain vote (self-consistency);
- ``weighted:verifier=NAME``: the vote with each chain weighted by its verifier score (RM-weighted voting);
  ``power=A`` weights by score ** A instead (0 < A; A -> 0 approaches the plain vote with ties going to the answer
  whose chains score higher, a large A best-of-k), the exponent chosen on *training* problems
  (``bench/orm_select.py`` fits it: 0.5 for the packaged ORM on the 0.5B);
- ``best:verifier=NAME``: the chain the verifier scores highest (best-of-k);
- ``tiebreak:verifier=NAME``: the plain vote, a tie for the most votes going to the tied answer whose best chain
  scores highest.

``verifier`` is any registered verifier (``thinkscale.verifiers``) that scores a chain from its text: ``orm``,
``pyes``, ``prm`` (with ``verifier_path=FILE`` and ``step_aggregation=last|min|product|mean``), ... Those that read
the generator's token logprobs cannot (the store keeps only their summary). Scores are computed on the run's model,
once per chain (``thinkscale.eval.chain_scores``: cached, optionally in a file kept between runs).

Reported per k and selector: accuracy with a 95% bootstrap interval over problems, the paired difference against
majority and against pass@k (bootstrap over per-problem differences), pass@k itself (Chen et al.'s unbiased
estimator: the oracle), and the cost per problem: generated tokens and FLOPs (the store's self-consistency units at
k; k/N shares of the draw's tokens where k is not a swept budget) plus the verifier's tokens and FLOPs (k/N shares
of what scoring the N chains took).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.base import Backend
from thinkscale.eval.chain_scores import LazyBackend, ScoreCache, backend_kind, score_chains, verifier_identity
from thinkscale.eval.draws import problem_messages, read_draws
from thinkscale.eval.metrics import (
    bootstrap_ci,
    expected_selection_accuracy,
    expected_tiebreak_accuracy,
    mean,
    pass_at_k,
)
from thinkscale.eval.runner import default_backend_factory, unit_rng
from thinkscale.strategies.base import format_spec, parse_spec
from thinkscale.types import Candidate, Problem, Usage
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps
from thinkscale.verifiers.base import Verifier, VerifierError, check_verifier_spec, resolve_verifier

DEFAULT_KS = (4, 8, 16)


class SelectorKind(enum.StrEnum):
    MAJORITY = "majority"
    WEIGHTED = "weighted"
    BEST = "best"
    TIEBREAK = "tiebreak"


SELECTION = {SelectorKind.MAJORITY: Selection.MAJORITY, SelectorKind.WEIGHTED: Selection.WEIGHTED_MAJORITY,
             SelectorKind.BEST: Selection.ARGMAX}


@dataclass(frozen=True)
class Selector:
    """One way to choose among a problem's chains: ``kind``, and for all but majority the verifier that scores
    them (a registered name, the file it needs, how a process verifier's step scores become one)."""

    kind: SelectorKind
    verifier: str | None = None
    verifier_path: str | None = None
    step_aggregation: StepAggregation = StepAggregation.LAST
    power: float = 1.0  # weighted: each chain weighs score ** power

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SelectorKind(self.kind))
        object.__setattr__(self, "step_aggregation", StepAggregation(self.step_aggregation))
        if not (math.isfinite(self.power) and self.power > 0):
            raise ValueError(f"power must be a finite number > 0, got {self.power}")
        if self.power != 1.0 and self.kind is not SelectorKind.WEIGHTED:
            raise ValueError(f"power applies to the weighted selector only (weights score ** power), not {self.kind}")
        if self.kind is SelectorKind.MAJORITY:
            if self.verifier is not None or self.verifier_path is not None:
                raise ValueError("selector majority takes no verifier (weighted, best and tiebreak do)")
            return
        if self.verifier is None:
            raise ValueError(f"selector {self.kind} needs a verifier: {self.kind}:verifier=NAME (e.g. orm, pyes)")
        info = check_verifier_spec(self.verifier, self.verifier_path)
        if info.reads_logprobs:
            raise ValueError(f"verifier {self.verifier!r} reads the generator's token logprobs, which the store keeps "
                             "only as a summary: it cannot rescore stored chains")

    @property
    def label(self) -> str:
        knobs = {"verifier": self.verifier, "verifier_path": self.verifier_path,
                 "step_aggregation": None if self.step_aggregation is StepAggregation.LAST else self.step_aggregation,
                 "power": None if self.power == 1.0 else f"{self.power:g}"}
        return format_spec(str(self.kind), {k: str(v) for k, v in knobs.items() if v is not None})

    @property
    def scorer(self) -> tuple[str, str | None] | None:
        """The verifier whose scores it reads (selectors that share one share its scores)."""
        return None if self.verifier is None else (self.verifier, self.verifier_path)


def parse_selector(spec: str) -> Selector:
    """``majority``, ``weighted:verifier=orm,power=0.5``,
    ``best:verifier=prm,verifier_path=prm.json,step_aggregation=min``. ValueError naming what is wrong (an unknown
    selector, knob or verifier)."""
    try:
        name, values = parse_spec(spec)
        kind = SelectorKind(name)
    except ValueError as e:
        why = str(e).replace("strategy spec", "selector").replace("strategy name", "selector name")
        if "is not a valid SelectorKind" in why:
            why = f"unknown selector {spec.partition(':')[0].strip()!r}; choose one of: {', '.join(SelectorKind)}"
        raise ValueError(f"--selector {spec!r}: {why}") from None
    unknown = sorted(set(values) - {"verifier", "verifier_path", "step_aggregation", "power"})
    if unknown:
        raise ValueError(f"--selector {spec!r}: unknown knob {unknown[0]!r}; a selector takes verifier, "
                         "verifier_path, step_aggregation, power (weighted)")
    try:
        power = float(values.get("power", "1"))
    except ValueError:
        raise ValueError(f"--selector {spec!r}: power must be a number, got {values['power']!r}") from None
    try:
        return Selector(kind, values.get("verifier"), values.get("verifier_path"),
                        StepAggregation(values.get("step_aggregation", "last")), power)
    except ValueError as e:
        raise ValueError(f"--selector {spec!r}: {e}") from None


# ---------------------------------------------------------------------- the stored draws


@dataclass(frozen=True)
class Draw:
    """One problem's stored chains (its self-consistency job's samples) with their grades."""

    problem_id: str
    seed: int
    chains: tuple[Candidate, ...]
    correct: tuple[bool, ...]

    @property
    def keys(self) -> list[str | None]:
        return [None if c.answer is None else normalize_answer(c.answer) for c in self.chains]


@dataclass(frozen=True)
class StoredRun:
    """What rescoring reads from a run folder: its self-consistency draws, the harness's settings that decide the
    subsets, and the store's own units of that spec (for costs and to compare with)."""

    run: str
    cfg: dict[str, Any] = field(repr=False)
    model: str
    fingerprint: str | None
    sampler: str
    draws: tuple[Draw, ...]
    units: dict[tuple[int, str], dict[str, Any]] = field(repr=False)  # (budget, problem) -> correct, tokens, FLOPs

    @property
    def n_chains(self) -> int:
        """Chains per problem (the fewest any problem has)."""
        return min(len(d.chains) for d in self.draws)


def load_run(run: str | Path, *, model: str | None = None, sampler: str | None = None) -> StoredRun:
    """The run's self-consistency draws (store opened read-only). StoreError for a folder with no run; ValueError
    for a run with no self-consistency chains of the model."""
    stored = read_draws(run, model=model, sampler=sampler)
    if not stored.rows:
        raise ValueError(f"{run}: no {stored.spec} chains of {stored.model} to select among (run `thinkscale eval` "
                         "with --strategy self-consistency)")
    by_problem: dict[str, list[Any]] = {}
    for r in stored.rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    draws = tuple(Draw(pid, rs[0]["seed"], tuple(Candidate(text=r["text"], answer=r["answer"],
                                                           completion_tokens=r["completion_tokens"],
                                                           finish_reason=r["finish_reason"]) for r in rs),
                       tuple(bool(r["correct"]) for r in rs)) for pid, rs in by_problem.items())
    units = {(r["budget"], r["problem_id"]): dict(r) for r in stored.units}
    return StoredRun(str(run), stored.cfg, stored.model, stored.identity.get("fingerprint"), stored.spec, draws,
                     units)


def check_ks(ks: Sequence[int] | None, n_chains: int) -> list[int]:
    """The k to evaluate: ``ks`` (each 1 <= k <= N, else ValueError), or 4, 8, 16 where <= N (N alone when none)."""
    if ks is None:
        return [k for k in DEFAULT_KS if k <= n_chains] or [n_chains]
    for k in ks:
        if not 1 <= k <= n_chains:
            raise ValueError(f"--k {k}: the run stores {n_chains} chains per problem; give k from 1 to {n_chains}")
    return sorted(set(ks))


# ---------------------------------------------------------------------- scoring


@dataclass
class Scores:
    """Each scorer's scores of every draw's chains (one per chain, step scores not yet reduced) and their costs."""

    scores: dict[tuple[str, str | None], list[list[tuple[float, ...]]]] = field(default_factory=dict)
    costs: dict[tuple[str, str | None], list[list[Usage]]] = field(default_factory=dict)
    model_loaded: bool = False
    computed: int = 0  # chains scored now (the others were in the cache)
    cached: int = 0


def build(name: str, path: str | None, backend: LazyBackend) -> Verifier:
    """The verifier on the run's model; one that cannot be built (a missing head file, a head fitted on another
    model, a backend that cannot do what it needs) is bad input: ValueError."""
    try:
        return resolve_verifier(name, path, backend)
    except (VerifierError, NotImplementedError) as e:
        raise ValueError(f"verifier {name}: {e}") from None


Progress = Callable[[int, int], None]  # (chains scored or found in the cache so far, chains to score)


def score_run(stored: StoredRun, selectors: Sequence[Selector], cache: ScoreCache, make: Callable[[], Backend],
              kind: str, progress: Progress | None = None) -> Scores:
    """Score every chain with each verifier the selectors name, on the run's model (loaded only for chains the
    cache lacks); ``progress`` after each problem."""
    out = Scores()
    scorers = list(dict.fromkeys(s.scorer for s in selectors if s.scorer is not None))
    if not scorers:
        return out
    backend = LazyBackend(make, kind, stored.model, stored.fingerprint)
    try:
        fingerprint = backend.info().fingerprint
        messages = problem_messages(stored.cfg)
        total = len(scorers) * sum(len(d.chains) for d in stored.draws)
        for name, path in scorers:
            verifier = build(name, path, backend)
            identity = verifier_identity(name, path, verifier, fingerprint)
            for d in stored.draws:
                sc, cost = score_chains(Problem(d.problem_id, messages[d.problem_id]), d.chains, verifier, identity,
                                        cache)
                out.scores.setdefault((name, path), []).append(sc)
                out.costs.setdefault((name, path), []).append(cost)
                if progress is not None:
                    progress(sum(len(c) for rows in out.scores.values() for c in rows), total)
        out.model_loaded, out.computed, out.cached = backend.loaded, cache.computed, cache.hits
    finally:
        backend.close()
    return out


# ---------------------------------------------------------------------- evaluation


def selector_value(draw: Draw, selector: Selector, scores: Sequence[tuple[float, ...]] | None, k: int,
                   stored: StoredRun) -> float:
    """The selector's expected accuracy on one problem's chains at k, over the harness's k-subsets of them."""
    rng = unit_rng(draw.seed, draw.problem_id, stored.sampler, stored.model, k)
    flat = None if scores is None else [aggregate_steps(s, selector.step_aggregation) for s in scores]
    if flat is not None and selector.power != 1.0:
        if any(not 0.0 <= x <= 1.0 for x in flat):
            raise ValueError(f"{selector.label}: power needs scores in [0, 1]; verifier {selector.verifier} gave "
                             f"{min(flat)}..{max(flat)} on problem {draw.problem_id}")
        flat = [x ** selector.power for x in flat]
    max_subsets = int(stored.cfg["max_subsets"])
    if selector.kind is SelectorKind.TIEBREAK:
        assert flat is not None
        return expected_tiebreak_accuracy(draw.keys, draw.correct, flat, k, max_subsets=max_subsets, rng=rng)[0]
    return expected_selection_accuracy(draw.keys, draw.correct, flat, SELECTION[selector.kind], k,
                                       max_subsets=max_subsets, rng=rng)[0]


def evaluate(stored: StoredRun, selectors: Sequence[Selector], scores: Scores, ks: Sequence[int]
             ) -> dict[int, dict[str, list[float]]]:
    """Per k, per selector label (and ``pass@k``), the per-problem values, problems in the draws' order."""
    out: dict[int, dict[str, list[float]]] = {}
    for k in ks:
        rows: dict[str, list[float]] = {}
        for i, d in enumerate(stored.draws):
            for s in selectors:
                sc = None if s.scorer is None else scores.scores[s.scorer][i]
                rows.setdefault(s.label, []).append(selector_value(d, s, sc, k, stored))
            rows.setdefault("pass@k", []).append(pass_at_k(len(d.chains), sum(d.correct), k))
        out[k] = rows
    return out


def _share_mean(values: Sequence[float | None]) -> float | None:
    """The mean when every problem's value is known, else None (unknown usage is not 0)."""
    known = [v for v in values if v is not None]
    return mean(known) if known and len(known) == len(values) else None


def generated_cost(stored: StoredRun, k: int) -> dict[str, float | None]:
    """Generated tokens and FLOPs per problem at k: the store's self-consistency unit at budget k (the harness's
    k/N shares), else k/N of the draw's completion tokens (FLOPs unknown then)."""
    tokens: list[float | None] = []
    flops: list[float | None] = []
    for d in stored.draws:
        unit = stored.units.get((k, d.problem_id))
        if unit is not None:
            tokens.append(unit["completion_tokens"])
            flops.append(unit["flops"])
            continue
        comp = [c.completion_tokens for c in d.chains]
        tokens.append(None if None in comp else k / len(comp) * sum(t or 0 for t in comp))
        flops.append(None)
    return {"generated_tokens": _share_mean(tokens), "generator_flops": _share_mean(flops)}


def verifier_cost(stored: StoredRun, costs: list[list[Usage]] | None, k: int) -> dict[str, float | None]:
    """The verifier's tokens (prompt + completion, as the harness counts them), tokens it computed (not served
    from the prefix cache) and FLOPs per problem at k: k/N shares of what scoring the N chains took."""
    if costs is None:
        return {"verifier_tokens": 0.0, "verifier_computed_tokens": 0.0, "verifier_flops": 0.0}
    tokens, computed, flops = [], [], []
    for d, per_chain in zip(stored.draws, costs, strict=True):
        total, share = Usage.total(per_chain), k / len(d.chains)
        spanned = None if total.prompt_tokens is None or total.completion_tokens is None else \
            total.prompt_tokens + total.completion_tokens
        tokens.append(None if spanned is None else share * spanned)
        fresh = total.computed_prompt_tokens
        computed.append(None if fresh is None or total.completion_tokens is None else
                        share * (fresh + total.completion_tokens))
        flops.append(None if total.flops is None else share * total.flops)
    return {"verifier_tokens": _share_mean(tokens), "verifier_computed_tokens": _share_mean(computed),
            "verifier_flops": _share_mean(flops)}


def _paired(values: Sequence[float], base: Sequence[float], reps: int) -> dict[str, Any]:
    d = bootstrap_ci([a - b for a, b in zip(values, base, strict=True)], reps=reps)
    return {"diff": d.mean, "ci95": [d.low, d.high], "excludes_0": d.low > 0 or d.high < 0}


def summarise(stored: StoredRun, selectors: Sequence[Selector], scores: Scores,
              values: dict[int, dict[str, list[float]]], reps: int = 2000) -> dict[str, Any]:
    """Per k: pass@k, the store's own self-consistency accuracy at k (when it has that budget), and per selector
    its accuracy, the paired differences against majority and pass@k, and its cost per problem."""
    out: dict[str, Any] = {}
    for k, rows in values.items():
        base, oracle = rows[SelectorKind.MAJORITY.value], rows["pass@k"]
        stored_units = [stored.units.get((k, d.problem_id)) for d in stored.draws]
        table: dict[str, Any] = {}
        for s in selectors:
            est = bootstrap_ci(rows[s.label], reps=reps)
            table[s.label] = {
                "accuracy": est.mean, "ci95": [est.low, est.high],
                **({} if s.kind is SelectorKind.MAJORITY else {"vs_majority": _paired(rows[s.label], base, reps)}),
                "vs_pass_at_k": _paired(rows[s.label], oracle, reps),
                "cost_per_problem": {**generated_cost(stored, k), **verifier_cost(
                    stored, None if s.scorer is None else scores.costs[s.scorer], k)}}
        pk = bootstrap_ci(oracle, reps=reps)
        out[str(k)] = {"problems": len(base), "pass_at_k": {"accuracy": pk.mean, "ci95": [pk.low, pk.high]},
                       "stored_self_consistency": None if None in stored_units else
                       mean([u["correct"] for u in stored_units if u is not None]),
                       "selectors": table}
    return out


def with_majority(selectors: Sequence[Selector]) -> list[Selector]:
    """The selectors, majority first (added when missing: every other is compared with it), duplicates dropped."""
    return list({s.label: s for s in [Selector(SelectorKind.MAJORITY), *selectors]}.values())


def select_run(run: str | Path, selectors: Sequence[Selector], *, ks: Sequence[int] | None = None,
               cache: str | Path | None = None, backend: str | None = None,
               backend_factory: Callable[[str], Backend] | None = None, model: str | None = None,
               sampler: str | None = None, threads: int | None = None, reps: int = 2000,
               progress: Progress | None = None) -> dict[str, Any]:
    """Rescore ``run``'s stored self-consistency chains with ``selectors`` (see the module doc); the JSON-able
    report. ``backend``: the backend spec of the run's model (default: the run's own); ``backend_factory`` makes
    it instead (tests); ``cache``: the score cache's file (default: in memory); ``progress(done, total)``: chains
    scored so far."""
    stored = load_run(run, model=model, sampler=sampler)
    ks = check_ks(ks, stored.n_chains)
    selectors = with_majority(selectors)
    spec = backend or str(stored.cfg["backend"])
    needs_model = any(s.scorer is not None for s in selectors)
    kind = backend_kind(spec) if needs_model else ""
    factory = backend_factory or default_backend_factory(spec, n_threads=threads)
    score_cache = ScoreCache(cache)
    try:
        scores = score_run(stored, selectors, score_cache, lambda: factory(stored.model), kind, progress)
    finally:
        score_cache.close()
    values = evaluate(stored, selectors, scores, ks)
    return {"run": stored.run, "model": stored.model, "sampler": stored.sampler,
            "problems": len(stored.draws), "chains_per_problem": stored.n_chains,
            "max_subsets": stored.cfg["max_subsets"], "ks": ks, "selectors": [s.label for s in selectors],
            "model_loaded": scores.model_loaded,
            "verifier_scores": {"computed": scores.computed, "from_cache": scores.cached},
            "by_k": summarise(stored, selectors, scores, values, reps),
            "per_problem": {"problem_ids": [d.problem_id for d in stored.draws],
                            **{str(k): v for k, v in values.items()}}}
