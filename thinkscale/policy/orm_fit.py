"""Fit the outcome verifier (``verifier=orm``) from eval runs: ``thinkscale train orm``.

The chains are the policy's own self-consistency samples on a training set, drawn by the sweep harness into a run
folder (``draw_chains``: ``self-consistency:n_samples=K`` on ``--problems`` problems, resumable, a kill loses at most
the jobs in flight) or read from run folders that already hold them (``--run runs/train-0.5b``). Their grades are the
store's (the answer checker's). Features, fitting and the learning curve are ``thinkscale.verifiers.orm_train``; this
module is the part that needs the eval harness, which the verifiers layer may not import.

    thinkscale train orm --model qwen2.5-coder-0.5b --data gsm8k-train --problems 100 --samples 16 --out orm.json
    thinkscale train orm --run runs/train-0.5b --out orm.json --curve bench/results/orm/learning_curve.json
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from thinkscale.eval.config import SweepConfig
from thinkscale.eval.draws import SAMPLER, problem_messages, read_draws
from thinkscale.eval.runner import run_sweep
from thinkscale.types import Candidate, Ledger, Problem, Usage
from thinkscale.verifiers.base import VerifierKind
from thinkscale.verifiers.orm import FeatureSpec, TrainedORM, View
from thinkscale.verifiers.orm_train import (
    VIEW_SETS,
    FeatureCache,
    FitConfig,
    LabelledChain,
    chain_features,
    fit_calibrated,
    fit_views,
    learning_curve,
    problem_folds,
    split_problems,
    stack_views,
)
from thinkscale.verifiers.trained_prm import FeatureBackend

log = logging.getLogger(__name__)

TEST_SETS = frozenset({"gsm8k", "math500", "amc23", "aime24", "aime25"})  # evaluation sets: never fitted on


@dataclass(frozen=True)
class RunChains:
    """The chains of one run folder with where they came from."""

    run: str
    model: str
    fingerprint: str | None
    dataset: str
    dataset_sha256: str | None
    chains: tuple[LabelledChain, ...]
    sampler: str = SAMPLER  # the self-consistency spec the chains are from


def chains_from_run(run: str | Path, *, model: str | None = None, sampler: str | None = None,
                    max_chains: int | None = None) -> RunChains:
    """Every sample of the run's self-consistency jobs at their largest budget (one job per problem; seed 0 when
    there are several; the first ``max_chains`` of each when given), with the messages it was generated from
    (rebuilt from the run's dataset and system prompt) and its stored grade."""
    stored = read_draws(run, model=model, sampler=sampler)
    cfg, model, spec, identity, rows = stored.cfg, stored.model, stored.spec, stored.identity, stored.rows
    messages = problem_messages(cfg)
    chains = tuple(LabelledChain(r["problem_id"], r["idx"], messages[r["problem_id"]], r["text"], r["answer"],
                                 bool(r["correct"])) for r in rows if max_chains is None or r["idx"] < max_chains)
    if not chains:
        raise ValueError(f"{run}: no {spec} samples of {model} (run `thinkscale eval` with --strategy {SAMPLER})")
    return RunChains(str(run), model, identity.get("fingerprint"), cfg["dataset"], cfg.get("dataset_sha256"), chains,
                     spec)


def draw_chains(out: str | Path, *, model: str, data: str, problems: int, samples: int, seed: int = 0,
                max_tokens: int = 512, workers: int = 1, threads: int | None = None) -> None:
    """Sample ``samples`` chains on ``problems`` problems of ``data`` into the run folder ``out`` with the sweep
    harness (``thinkscale eval`` with ``self-consistency:n_samples=K``); rerun to resume."""
    from thinkscale.backends import load_backend

    cfg = SweepConfig(dataset=data, limit=problems, seed=seed, models=(model,),
                      strategies=(f"{SAMPLER}:n_samples={samples}",), budgets=(samples,), max_tokens=max_tokens)
    summary = run_sweep(cfg, out, workers=workers, command="thinkscale train orm (draw chains)",
                        backend_factory=lambda m: load_backend(m, n_threads=threads))
    log.info("drew chains into %s: %s", out, summary)


def merge_runs(runs: Sequence[RunChains], fingerprint: str) -> list[LabelledChain]:
    """The chains of several runs of one model, a problem kept from the first run that has it."""
    seen: set[str] = set()
    out: list[LabelledChain] = []
    for r in runs:
        if r.dataset in TEST_SETS:
            raise ValueError(f"{r.run} samples {r.dataset}, an evaluation set: the ORM is fitted on training "
                             "problems only (gsm8k-train)")
        if r.fingerprint is not None and r.fingerprint != fingerprint:
            raise ValueError(f"{r.run} was sampled by model {r.fingerprint}, the features come from {fingerprint}")
        new = {c.problem_id for c in r.chains} - seen
        out += [c for c in r.chains if c.problem_id in new]
        seen |= new
    return out


def _usage_total(costs: dict[View, list[Usage]], views: Sequence[View]) -> dict[str, Any]:
    total = Usage.zero()
    for v in views:
        for u in costs[v]:
            total = total + u
    return total.to_dict()


def train_orm(backend: FeatureBackend, runs: Sequence[RunChains], out: str | Path, *, cache: FeatureCache,
              views: Sequence[tuple[View, ...]] = VIEW_SETS, cfg: FitConfig | None = None,
              progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Features for every chain (cached), the head of the best view set, the learning curve; save the ORM to
    ``out`` and return its metadata."""
    cfg = cfg or FitConfig()
    t0 = time.perf_counter()
    info = backend.info()
    chains = merge_runs(runs, info.fingerprint)
    needed = sorted({v for vs in views for v in vs}, key=list(View).index)
    per_view, costs = chain_features(backend, chains, needed, cache, progress=progress)
    best, head, comparison = fit_views(per_view, chains, views, cfg)
    train_ids, held_ids = split_problems(chains, cfg)
    y = np.array([c.correct for c in chains], dtype=np.float64)
    curve = learning_curve(stack_views(per_view, best), y, [c.problem_id for c in chains], train_ids, held_ids, cfg)
    spec = FeatureSpec(views=best)
    name = "+".join(best)
    meta = {
        "model": {"name": info.name, "fingerprint": info.fingerprint, "n_params": info.n_params},
        "feature": spec.describe(),
        "feature_dim": head.dim,
        "fitted_on": {"model": info.fingerprint, "runs": [r.run for r in runs],
                      "data": sorted({f"{r.dataset} (sha256 {r.dataset_sha256})" for r in runs}),
                      "problems": len(train_ids) + len(held_ids), "chains": len(chains),
                      "positive_rate": float(y.mean()),
                      "split": {"by": "problem", "seed": cfg.seed, "heldout_fraction": cfg.heldout_fraction,
                                "train_problems": train_ids, "heldout_problems": held_ids}},
        "head": {"kind": "logistic", "c": comparison[name]["c"], "calibration": "platt on out-of-fold logits",
                 "platt": comparison[name]["platt"], "cv_folds": cfg.folds, "c_grid": list(cfg.c_grid)},
        "heldout_auroc": comparison[name]["heldout"]["auroc"],
        "heldout": comparison[name]["heldout"],
        "cv_auroc": comparison[name]["cv_auroc"],
        "views_chosen_by": "cross-validated AUROC on the training problems",
        "view_comparison": comparison,
        "learning_curve": curve,
        "feature_cost": {"by_view": {str(v): _usage_total(costs, (v,)) for v in needed},
                         "chains": len(chains), "note": "as computed when cached (cold KV: whole chains)"},
        "wall_seconds": time.perf_counter() - t0,
    }
    TrainedORM(backend=backend, head=head, spec=spec, metadata=meta).save(out)
    return meta


def write_curve(meta: dict[str, Any], path: str | Path, command: str) -> None:
    """The learning curve as its own results file (with the command and what it was fitted on)."""
    payload = {"command": command, "model": meta["model"], "views": meta["feature"],
               "fitted_on": {k: v for k, v in meta["fitted_on"].items() if k != "split"},
               "heldout_problems": len(meta["fitted_on"]["split"]["heldout_problems"]),
               "view_comparison": {k: {"cv_auroc": v["cv_auroc"], "heldout": v["heldout"]}
                                   for k, v in meta["view_comparison"].items()},
               "learning_curve": meta["learning_curve"]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


# ---------------------------------------------------------------------- cross-fitting


class _StandsInForORM:
    """A verifier that stands in for the trained ORM ``base``: its kind, name and calls are ``base``'s."""

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False
    name: ClassVar[str] = "orm"
    base: TrainedORM

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return self.base.max_calls(candidates)


@dataclass(frozen=True)
class CrossFitORM(_StandsInForORM):
    """Scores like the trained ORM ``base``, except that a problem ``base`` was fitted on is scored by a head fitted
    without it: ``base``'s training problems are dealt into folds, and each fold's problems get the head fitted (same
    views, same ``c``, Platt-calibrated the same way) on the other folds' chains. What a policy fitted on ``base``'s
    own training problems must see: in-sample probabilities are more confident than the ones auto meets."""

    base: TrainedORM
    heads: dict[str, TrainedORM] = field(repr=False)  # problem id -> the head fitted without its fold
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        return self.heads.get(problem.id, self.base).score(problem, candidates, ledger=ledger)


@dataclass(frozen=True)
class FittedOn:
    """What a trained ORM's metadata says it was fitted on: what cross-fitting it again needs."""

    runs: tuple[str, ...]
    train_problems: frozenset[str]
    per_problem: int
    c: float
    seed: int

    @classmethod
    def of(cls, base: TrainedORM) -> FittedOn:
        """ValueError when the metadata does not say it."""
        meta = base.metadata
        try:
            fitted = meta["fitted_on"]
            return cls(tuple(fitted["runs"]), frozenset(fitted["split"]["train_problems"]),
                       fitted["chains"] // fitted["problems"], float(meta["head"]["c"]), int(fitted["split"]["seed"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise ValueError(f"the ORM's metadata does not say what it was fitted on ({e!r}): it cannot be "
                             "cross-fitted") from None


@dataclass
class DeferredCrossFit(_StandsInForORM):
    """``cross_fit_orm(base, cache, folds=folds)``, made on the first score it is asked for: a replay whose scores are
    all cached (``eval.chain_scores.CachedVerifier``) then needs neither the model nor the training chains' features.
    What it was fitted on is checked when it is made (``FittedOn``)."""

    base: TrainedORM
    cache: FeatureCache = field(repr=False)
    folds: int = 4
    fitted_on: FittedOn = field(init=False)
    _made: CrossFitORM | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.fitted_on = FittedOn.of(self.base)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        if self._made is None:
            self._made = cross_fit_orm(self.base, self.cache, folds=self.folds)
        return self._made.score(problem, candidates, ledger=ledger)


def cross_fit_orm(base: TrainedORM, cache: FeatureCache, *, folds: int = 4) -> CrossFitORM:
    """``CrossFitORM`` of ``base``, refitting its head on the chains it was fitted on (read again from the runs its
    metadata names; their features from ``cache``, computed on ``base``'s backend where missing). ValueError when the
    metadata does not say what it was fitted on, or the runs no longer hold those chains."""
    fit = FittedOn.of(base)
    meta, train_ids, per_problem, c, seed = base.metadata, fit.train_problems, fit.per_problem, fit.c, fit.seed
    runs = [chains_from_run(r, max_chains=per_problem) for r in fit.runs]
    chains = [ch for ch in merge_runs(runs, base.backend.info().fingerprint) if ch.problem_id in train_ids]
    if len(chains) != per_problem * len(train_ids):
        raise ValueError(f"the runs {list(fit.runs)} hold {len(chains)} chains of the ORM's {len(train_ids)} training "
                         f"problems, not the {per_problem} per problem it was fitted on")
    views = base.spec.views
    per_view, _ = chain_features(base.backend, chains, views, cache, spec=base.spec)
    x = stack_views(per_view, views)
    y = np.array([ch.correct for ch in chains], dtype=np.float64)
    groups = [ch.problem_id for ch in chains]
    cfg = FitConfig(c_grid=(c,), folds=folds, seed=seed)
    heads: dict[str, TrainedORM] = {}
    for k, test in enumerate(problem_folds(groups, folds, seed)):
        head, info = fit_calibrated(x[~test], y[~test], [g for g, t in zip(groups, test, strict=True) if not t], cfg)
        held = sorted({g for g, t in zip(groups, test, strict=True) if t})
        fold = TrainedORM(backend=base.backend, head=head, spec=base.spec,
                          metadata={"cross_fit": {"fold": k, "folds": folds, "without": held, "platt": info["platt"]},
                                    "model": meta.get("model")})
        heads.update(dict.fromkeys(held, fold))
    return CrossFitORM(base, heads, {"cross_fit_of": meta, "folds": folds, "seed": seed, "c": c,
                                     "problems_refitted": len(heads)})
