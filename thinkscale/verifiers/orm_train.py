"""Fit an ORM head here: hidden-state features of graded chains, a logistic head calibrated by Platt scaling, every
choice made on the training problems only and the AUROC reported on held-out problems. The chains come from eval runs
(``thinkscale.policy.orm_fit`` reads them from a run's store and draws new ones with the sweep harness); this module
needs none of that: it takes ``LabelledChain`` records.

Features (``chain_features``). One ``hidden_states`` request per view per chain (``orm.FeatureSpec``), one request per
call so each is charged and cached on its own: ``FeatureCache`` (SQLite) keys a vector by the model fingerprint and
the exact request, so an interrupted extraction resumes where it stopped, and a second fit, another view set, or the
selection bench reading the same chains computes nothing. The chain view comes first: the question view's prompt
starts with the same tokens, so it reuses their KV and costs ~25 tokens more.

Head (``fit_calibrated``). Features standardised, L2 logistic regression (``LogisticHead``, shared with the PRM); the
inverse strength ``c`` is chosen by grouped cross-validation over the training problems (folds never split a
problem: chains of one problem are alike, and splitting them would reward memorising problems), and Platt scaling
(a 1-D logistic fit of the out-of-fold logits) makes the probabilities calibrated; it folds into the head's
coefficients, so the saved head is still a ``LogisticHead``. With ``views="auto"`` each view set is fitted and the
one with the best cross-validated AUROC is kept; every set's held-out AUROC is reported beside it.

Learning curve (``learning_curve``): AUROC on the same held-out problems for heads fitted on the first n training
problems (a seeded order), n = 10, 20, 40, ..., all: whether more training problems would help.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.types import Message, ScoreRequest, Usage
from thinkscale.verifiers.orm import FeatureSpec, View
from thinkscale.verifiers.prm_train import heldout_split
from thinkscale.verifiers.trained_prm import FeatureBackend, LogisticHead, auroc, finite_or_none

log = logging.getLogger(__name__)

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
CURVE_SIZES = (10, 20, 40, 80, 160, 320, 640)


@dataclass(frozen=True)
class LabelledChain:
    """One sampled solution to one problem, graded against the reference by the answer checker."""

    problem_id: str
    index: int  # its place among the problem's chains
    messages: tuple[Message, ...]  # the conversation it answers (the prompt it was generated from)
    text: str
    answer: str | None
    correct: bool


# ---------------------------------------------------------------------- features, cached

class FeatureCache:
    """Hidden-state vectors by (model fingerprint, request), in one SQLite file, with what computing each cost."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, "
                        "vector BLOB NOT NULL, usage TEXT NOT NULL)")

    @staticmethod
    def key(fingerprint: str, request: ScoreRequest) -> str:
        messages = None if request.messages is None else [[m.role, m.content] for m in request.messages]
        blob = json.dumps([fingerprint, messages, request.prompt, request.continuation], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, Usage] | None:
        row = self.db.execute("SELECT dim, vector, usage FROM vectors WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[1], dtype=np.float32).reshape(row[0]).copy(), Usage(**json.loads(row[2]))

    def put(self, key: str, vector: np.ndarray, usage: Usage) -> None:
        v = np.asarray(vector, dtype=np.float32)
        self.db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                        (key, int(v.shape[0]), v.tobytes(), json.dumps(usage.to_dict())))

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def chain_features(backend: FeatureBackend, chains: Sequence[LabelledChain], views: Sequence[View],
                   cache: FeatureCache, *, spec: FeatureSpec | None = None,
                   progress: Callable[[int, int, float], None] | None = None) -> tuple[dict[View, np.ndarray],
                                                                                     dict[View, list[Usage]]]:
    """Each view's vector of every chain (``(len(chains), n_embd)`` per view; the mean for ``steps``) and what each
    cost when it was computed (the cached cost for cached ones). Computes only what ``cache`` lacks, one request per
    call, views in ``View`` order (the chain first: the others reuse its KV); ``progress(done, total, seconds)``
    after each chain that computed something."""
    spec = spec or FeatureSpec()
    fingerprint = backend.info().fingerprint
    order = sorted({View(v) for v in views}, key=list(View).index)
    vecs: dict[View, list[np.ndarray]] = {v: [] for v in order}
    costs: dict[View, list[Usage]] = {v: [] for v in order}
    for i, chain in enumerate(chains):
        t0 = time.perf_counter()
        computed = False
        for view in order:
            got, cost = [], Usage.zero()
            for request in spec.view_requests(view, chain.messages, chain.text):
                key = FeatureCache.key(fingerprint, request)
                hit = cache.get(key)
                if hit is None:
                    hidden = backend.hidden_states([request])
                    hit = (hidden.vectors[0], hidden.usage)
                    cache.put(key, *hit)
                    computed = True
                got.append(hit[0])
                cost = cost + hit[1]
            vecs[view].append(np.asarray(np.mean(got, axis=0, dtype=np.float64), dtype=np.float32))
            costs[view].append(cost)
        if computed and progress is not None:
            progress(i + 1, len(chains), time.perf_counter() - t0)
    return {v: np.stack(x) if x else np.zeros((0, 0), np.float32) for v, x in vecs.items()}, costs


def stack_views(per_view: dict[View, np.ndarray], views: Sequence[View]) -> np.ndarray:
    """The feature rows of a view set: the views' vectors side by side, in ``views`` order (as
    ``FeatureSpec.rows`` lays out a scored batch)."""
    return np.concatenate([per_view[View(v)] for v in views], axis=1)


# ---------------------------------------------------------------------- fitting

@dataclass(frozen=True)
class FitConfig:
    """How the head is chosen: ``c_grid`` by ``folds``-fold cross-validation grouped by problem, then Platt scaling
    on the out-of-fold logits. ``heldout_fraction`` of the problems (seeded) are never fitted on."""

    heldout_fraction: float = 0.25
    c_grid: tuple[float, ...] = C_GRID
    folds: int = 4
    seed: int = 0
    curve_sizes: tuple[int, ...] = CURVE_SIZES
    bootstrap_reps: int = 1000  # of the held-out AUROC's interval

    def __post_init__(self) -> None:
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.folds < 2 or not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ValueError("need folds >= 2 and a non-empty grid of c > 0")


def problem_folds(groups: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """Boolean test masks of ``k`` folds that never split a group (problems shuffled with ``seed``, dealt out)."""
    ids = sorted(set(groups))
    random.Random(f"{seed}:folds").shuffle(ids)
    fold_of = {g: i % k for i, g in enumerate(ids)}
    g = np.array([fold_of[x] for x in groups])
    return [g == i for i in range(min(k, len(ids)))]


def _logits(head: LogisticHead, x: np.ndarray) -> np.ndarray:
    return ((x - head.mean) / head.scale) @ head.coef + head.intercept


def _auroc_or_none(y: np.ndarray, s: np.ndarray) -> float | None:
    return finite_or_none(auroc(y, s)) if 0 < y.sum() < len(y) else None


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: Sequence[str], c: float, cfg: FitConfig) -> np.ndarray:
    """Logits of every row from a head fitted on the other folds (a fold with one class only in its complement
    gets that fold's constant prior)."""
    z = np.zeros(len(y))
    for test in problem_folds(groups, cfg.folds, cfg.seed):
        train = ~test
        if 0 < y[train].sum() < train.sum():
            z[test] = _logits(LogisticHead.fit(x[train], y[train], c=c, seed=cfg.seed), x[test])
        else:
            z[test] = 0.0
    return z


def fit_calibrated(x: np.ndarray, y: np.ndarray, groups: Sequence[str], cfg: FitConfig) -> tuple[LogisticHead,
                                                                                                  dict[str, Any]]:
    """The head fitted on all of ``x`` at the ``c`` with the best grouped-CV AUROC, Platt-scaled with the out-of-fold
    logits at that ``c``; and what was measured on the way (CV AUROC per c, the Platt slope and offset)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        raise ValueError(f"all {len(y)} training chains are {'right' if y.sum() else 'wrong'}: a head cannot learn "
                         "from one class; use more problems")
    cv: dict[float, tuple[float | None, np.ndarray]] = {}
    for c in cfg.c_grid:
        z = out_of_fold(x, y, groups, c, cfg)
        cv[c] = (_auroc_or_none(y, z), z)
    best = max(cfg.c_grid, key=lambda c: (cv[c][0] or 0.0, -c))
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(cv[best][1].reshape(-1, 1), y)
    a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    raw = LogisticHead.fit(x, y, c=best, seed=cfg.seed)
    head = LogisticHead(raw.mean, raw.scale, raw.coef * a, raw.intercept * a + b, best)
    info = {"c": best, "cv_auroc_by_c": {str(c): v[0] for c, v in cv.items()}, "cv_auroc": cv[best][0],
            "platt": {"slope": a, "offset": b}, "folds": cfg.folds}
    return head, info


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error over equal-width bins, and the mean prediction vs the base rate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if not len(y):
        return {"n": 0}
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).sum() for b in range(bins)
              if (which == b).any()) / len(y)
    return {"n": len(y), "brier": float(np.mean((p - y) ** 2)), "ece": float(ece), "mean_p": float(p.mean()),
            "positive_rate": float(y.mean())}


def within_problem_auroc(y: np.ndarray, s: np.ndarray, groups: Sequence[str]) -> dict[str, float | int | None]:
    """The mean of each problem's own AUROC over the problems with both right and wrong chains: how well the scores
    rank chains *of one problem*, which is what selecting among them needs (the pooled AUROC also rewards telling
    easy problems from hard ones)."""
    g = np.asarray(groups)
    values = [v for pid in sorted(set(groups)) if (v := _auroc_or_none(y[g == pid], s[g == pid])) is not None]
    return {"within_problem_auroc": float(np.mean(values)) if values else None, "mixed_problems": len(values)}


def problem_bootstrap_auroc(y: np.ndarray, s: np.ndarray, groups: Sequence[str], *, reps: int = 1000,
                            seed: int = 0) -> dict[str, float | None]:
    """AUROC with a 95% percentile interval from resampling *problems* (chains of a problem move together)."""
    point = _auroc_or_none(y, s)
    ids = sorted(set(groups))
    rows = {g: np.flatnonzero(np.asarray(groups) == g) for g in ids}
    rng = random.Random(seed)
    values = []
    for _ in range(reps):
        pick = np.concatenate([rows[ids[rng.randrange(len(ids))]] for _ in ids])
        v = _auroc_or_none(y[pick], s[pick])
        if v is not None:
            values.append(v)
    if point is None or not values:
        return {"auroc": point, "low": None, "high": None}
    lo, hi = np.quantile(values, [0.025, 0.975])
    return {"auroc": point, "low": float(lo), "high": float(hi)}


def learning_curve(x: np.ndarray, y: np.ndarray, groups: Sequence[str], train_ids: Sequence[str],
                   held_ids: Sequence[str], cfg: FitConfig) -> list[dict[str, Any]]:
    """Held-out AUROC (on ``held_ids``' chains, always the same) of heads fitted the same way on the first n of
    ``train_ids`` in a seeded order, for each n in ``cfg.curve_sizes`` below their count, and all of them."""
    order = list(train_ids)
    random.Random(f"{cfg.seed}:curve").shuffle(order)
    g = np.asarray(groups)
    held = np.isin(g, list(held_ids))
    sizes = sorted({n for n in cfg.curve_sizes if n < len(order)} | {len(order)})
    out: list[dict[str, Any]] = []
    for n in sizes:
        rows = np.isin(g, order[:n])
        if not 0 < y[rows].sum() < rows.sum():
            out.append({"problems": n, "chains": int(rows.sum()), "heldout_auroc": None, "note": "one class only"})
            continue
        head, info = fit_calibrated(x[rows], y[rows], list(g[rows]), cfg)
        p = head.predict(x[held])
        out.append({"problems": n, "chains": int(rows.sum()), "c": info["c"], "cv_auroc": info["cv_auroc"],
                    **{f"heldout_{k}": v for k, v in problem_bootstrap_auroc(y[held], p, list(g[held]),
                                                                            reps=cfg.bootstrap_reps).items()},
                    "heldout_within_problem_auroc": within_problem_auroc(y[held], p, list(g[held]))[
                        "within_problem_auroc"], "heldout_brier": calibration(y[held], p)["brier"]})
        log.info("learning curve: %d problems, held-out AUROC %s", n, out[-1]["heldout_auroc"])
    return out


VIEW_SETS: tuple[tuple[View, ...], ...] = ((View.CHAIN,), (View.STEPS,), (View.QUESTION,), (View.CHAIN, View.QUESTION),
                                           (View.STEPS, View.QUESTION), (View.CHAIN, View.STEPS, View.QUESTION))


def split_problems(chains: Sequence[LabelledChain], cfg: FitConfig) -> tuple[list[str], list[str]]:
    """(training problem ids, held-out problem ids), by ``prm_train.heldout_split`` (seeded, by problem)."""
    ids = sorted({c.problem_id for c in chains})
    held = heldout_split(ids, cfg.heldout_fraction, cfg.seed)
    return [i for i in ids if i not in held], sorted(held)


def fit_views(per_view: dict[View, np.ndarray], chains: Sequence[LabelledChain], view_sets: Sequence[tuple[View, ...]],
              cfg: FitConfig) -> tuple[tuple[View, ...], LogisticHead, dict[str, Any]]:
    """Fit a head per view set on the training problems; keep the set with the best cross-validated AUROC (chosen
    without looking at the held-out problems). Returns it, its head, and every set's CV and held-out numbers."""
    train_ids, held_ids = split_problems(chains, cfg)
    y = np.array([c.correct for c in chains], dtype=np.float64)
    groups = [c.problem_id for c in chains]
    tr = np.isin(groups, train_ids)
    held = ~tr
    results: dict[str, Any] = {}
    fitted: dict[tuple[View, ...], LogisticHead] = {}
    for views in view_sets:
        x = stack_views(per_view, views)
        head, info = fit_calibrated(x[tr], y[tr], [g for g, t in zip(groups, tr, strict=True) if t], cfg)
        p = head.predict(x[held])
        name = "+".join(views)
        held_groups = list(np.asarray(groups)[held])
        boot = problem_bootstrap_auroc(y[held], p, held_groups, reps=cfg.bootstrap_reps)
        results[name] = {**info, "heldout": {**boot, **within_problem_auroc(y[held], p, held_groups),
                                             **calibration(y[held], p)}}
        fitted[views] = head
        log.info("views %s: CV AUROC %s, held-out AUROC %s", name, info["cv_auroc"], results[name]["heldout"]["auroc"])
    best = max(view_sets, key=lambda v: results["+".join(v)]["cv_auroc"] or 0.0)
    return best, fitted[best], results
