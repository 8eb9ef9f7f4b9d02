"""Evaluation metrics. Pure functions of numbers and answers: no store, no model, no plotting.

- ``bootstrap_ci``: accuracy with a percentile bootstrap interval over problems.
- ``pass_at_k``: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code",
  https://arxiv.org/abs/2107.03374, eq. 1): 1 - C(n-c, k) / C(n, k), from n samples of which c are correct.
- ``expected_selection_accuracy``: maj@k / weighted-vote@k / best-of-k from N >= k stored samples, averaged over
  k-subsets (all of them when there are few, else a seeded random sample of them: an unbiased estimate of the same
  mean). Ties count fractionally (1/len(tied) each), the expectation of an rng tie-break.
- ``expected_tiebreak_accuracy``: the same for the plain vote whose ties a verifier's best score breaks.
- ``pareto_frontier``, ``compute_optimal``, ``difficulty_bin``: the scaling views.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from thinkscale.verifiers.aggregate import Selection

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval (``low`` <= ``mean`` <= ``high``) over ``n`` problems."""

    mean: float
    low: float
    high: float
    n: int


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def bootstrap_ci(values: Sequence[float], *, reps: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of per-problem ``values`` (0/1 or expected accuracies in [0, 1], or paired differences of two such) with a
    percentile bootstrap interval: ``reps`` resamples of the problems with replacement, drawn from
    ``random.Random(seed)``."""
    if not values:
        raise ValueError("bootstrap_ci needs at least one value")
    if reps < 1 or not 0 < level < 1:
        raise ValueError(f"reps must be >= 1 and level in (0, 1), got {reps}, {level}")
    m = mean(values)
    n = len(values)
    rng = random.Random(seed)
    means = sorted(math.fsum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    alpha = (1 - level) / 2
    return Estimate(m, _quantile(means, alpha), _quantile(means, 1 - alpha), n)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of already sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n is correct), c of the n being correct.

    Chen et al. 2021, eq. 1, computed as a product to stay exact for large n: 1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def subsets(n: int, k: int, *, max_subsets: int, rng: random.Random) -> np.ndarray:
    """The k-subsets of range(n) to average over, one per row: all C(n, k) when that is at most ``max_subsets``,
    else ``max_subsets`` drawn independently, each uniform over k-subsets (seeded from ``rng``)."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n} k={k}")
    if math.comb(n, k) <= max_subsets:
        return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    gen = np.random.default_rng(rng.getrandbits(64))
    return np.sort(np.argsort(gen.random((max_subsets, n)), axis=1)[:, :k], axis=1)


def selection_value(keys: Sequence[str | None], correct: Sequence[bool], scores: Sequence[float] | None,
                    how: Selection, *, prefer: int | None = None) -> float:
    """Expected correctness of selecting among these candidates with ``how``, ties split evenly; with ``prefer``
    (majority only: the index of one candidate, e.g. auto's greedy chain), a tie for the top that its answer is in
    goes to that answer.

    ``keys``: each candidate's normalised answer (None = no answer: it neither votes nor wins); ``correct``: each
    candidate's grade; ``scores``: one aggregated verifier score each (weighted majority and argmax). Candidates
    with equal keys are graded alike by construction, so an answer is correct iff its first candidate is."""
    how = Selection(how)
    if prefer is not None and how is not Selection.MAJORITY:
        raise ValueError("prefer breaks majority ties only")
    answered = [i for i, k in enumerate(keys) if k is not None]
    if not answered:
        return 0.0
    if how is not Selection.MAJORITY and scores is None:
        raise ValueError(f"{how.value} needs scores")
    if how is Selection.ARGMAX:
        assert scores is not None
        best = max(scores[i] for i in answered)
        tied = [i for i in answered if math.isclose(scores[i], best, rel_tol=1e-9, abs_tol=1e-12)]
        return sum(1.0 for i in tied if correct[i]) / len(tied)
    tally: dict[str, float] = {}
    answer_correct: dict[str, bool] = {}
    for i in answered:
        key = keys[i]
        assert key is not None
        tally[key] = tally.get(key, 0.0) + (1.0 if how is Selection.MAJORITY else float(scores[i]))  # type: ignore[index]
        answer_correct.setdefault(key, bool(correct[i]))
    top = max(tally.values())
    tied_keys = [a for a, v in tally.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)]
    if prefer is not None:
        if keys[prefer] in tied_keys:
            return float(answer_correct[keys[prefer]])  # type: ignore[index]
    return sum(1.0 for a in tied_keys if answer_correct[a]) / len(tied_keys)


def expected_selection_accuracy(keys: Sequence[str | None], correct: Sequence[bool], scores: Sequence[float] | None,
                                how: Selection, k: int, *, max_subsets: int = 1000,
                                rng: random.Random | None = None) -> tuple[float, int]:
    """Mean of ``selection_value`` over k-subsets of the N candidates (see ``subsets``): maj@k for ``MAJORITY``,
    best-of-k for ``ARGMAX``. Returns (mean, number of subsets averaged). Vectorised over subsets; equal to
    averaging ``selection_value`` one subset at a time."""
    how = Selection(how)
    n = len(keys)
    if len(correct) != n or (scores is not None and len(scores) != n):
        raise ValueError(f"{n} keys, {len(correct)} grades and {len(scores or ())} scores: lengths differ")
    if how is not Selection.MAJORITY and scores is None:
        raise ValueError(f"{how.value} needs scores")
    idx = subsets(n, k, max_subsets=max_subsets, rng=rng or random.Random(0))
    answered = np.array([key is not None for key in keys])
    ok = np.array([bool(c) for c in correct])
    if how is Selection.ARGMAX:
        sc = np.where(answered, np.asarray(scores, dtype=np.float64), -np.inf)[idx]  # (S, k)
        best = sc.max(axis=1, keepdims=True)
        tied = np.isfinite(sc) & np.isclose(sc, best, rtol=1e-9, atol=1e-12)
        hits = (tied & ok[idx]).sum(axis=1)
        counts = tied.sum(axis=1)
    else:
        answers = _answers_in_subsets(keys, ok, idx)
        if answers is None:
            return 0.0, len(idx)
        lab, label_ok, present = answers
        weight = np.ones(n) if how is Selection.MAJORITY else np.asarray(scores, dtype=np.float64)
        onehot = np.zeros((n, label_ok.size))
        onehot[answered, lab[answered]] = weight[answered]
        tally = onehot[idx].sum(axis=1)  # (S, A)
        tally = np.where(present, tally, -np.inf)
        top = tally.max(axis=1, keepdims=True)
        tied = present & np.isclose(tally, top, rtol=1e-9, atol=1e-12)
        hits = (tied & label_ok).sum(axis=1)
        counts = tied.sum(axis=1)
    values = np.where(counts > 0, hits / np.maximum(counts, 1), 0.0)
    return float(values.mean()), len(idx)


def _answers_in_subsets(keys: Sequence[str | None], ok: np.ndarray, idx: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The distinct answers as columns: each candidate's column (-1: no answer), each answer's grade, and which
    answers each subset (row of ``idx``) has at all. None when no candidate answered."""
    labels = sorted({key for key in keys if key is not None})
    if not labels:
        return None
    col = {a: j for j, a in enumerate(labels)}
    lab = np.array([-1 if key is None else col[key] for key in keys])
    label_ok = np.zeros(len(labels), dtype=bool)
    for key in labels:  # an answer is graded by its first candidate (equal keys are graded alike)
        label_ok[col[key]] = ok[list(keys).index(key)]
    rows = np.arange(len(idx))
    present = np.zeros((len(idx), len(labels)), dtype=bool)
    sub_lab = lab[idx]
    for j in range(idx.shape[1]):
        m = sub_lab[:, j] >= 0
        present[rows[m], sub_lab[m, j]] = True
    return lab, label_ok, present


def expected_tiebreak_accuracy(keys: Sequence[str | None], correct: Sequence[bool], scores: Sequence[float], k: int,
                               *, max_subsets: int = 1000, rng: random.Random | None = None) -> tuple[float, int]:
    """Like ``expected_selection_accuracy`` (same subsets for the same ``rng``) for the plain vote whose ties for the
    most votes go to the tied answer with the best-scored candidate (a tie in that too split evenly): the verifier
    only breaks the vote's ties. Returns (mean, number of subsets averaged)."""
    n = len(keys)
    if len(correct) != n or len(scores) != n:
        raise ValueError(f"{n} keys, {len(correct)} grades and {len(scores)} scores: lengths differ")
    idx = subsets(n, k, max_subsets=max_subsets, rng=rng or random.Random(0))
    answers = _answers_in_subsets(keys, np.array([bool(c) for c in correct]), idx)
    if answers is None:
        return 0.0, len(idx)
    lab, label_ok, present = answers
    answered = lab >= 0
    votes = np.zeros((n, label_ok.size))
    votes[answered, lab[answered]] = 1.0
    best = np.full((n, label_ok.size), -np.inf)
    best[answered, lab[answered]] = np.asarray(scores, dtype=np.float64)[answered]
    tally = np.where(present, votes[idx].sum(axis=1), -np.inf)  # (S, A)
    tied = present & (tally == tally.max(axis=1, keepdims=True))  # whole votes: exact
    top_score = np.where(tied, best[idx].max(axis=1), -np.inf)
    wins = tied & np.isclose(top_score, top_score.max(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)
    counts = wins.sum(axis=1)  # 0 for a subset where no candidate answered
    values = np.where(counts > 0, (wins & label_ok).sum(axis=1) / np.maximum(counts, 1), 0.0)
    return float(values.mean()), len(idx)


@dataclass(frozen=True)
class Point:
    """One strategy config at one budget: ``cost`` on the x-axis (e.g. generated tokens per problem)."""

    label: str
    budget: int
    cost: float
    accuracy: float


def pareto_frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats: none has cost <= and accuracy >= with one of them strictly better.
    Returned by increasing cost (and so increasing accuracy)."""
    ordered = sorted(points, key=lambda p: (p.cost, -p.accuracy, p.label, p.budget))
    out: list[Point] = []
    for p in ordered:
        if not out or p.accuracy > out[-1].accuracy:
            if out and p.cost == out[-1].cost:
                continue  # same cost, lower accuracy than the point already kept (sorted by -accuracy)
            out.append(p)
    return out


def compute_optimal(acc: Mapping[tuple[str, int, str], float]) -> dict[tuple[str, int], tuple[str, float]]:
    """The best strategy config affordable at each (difficulty bin, budget).

    ``acc`` maps (bin, budget, strategy config) to accuracy. At budget b every config run at a budget <= b is a
    candidate (greedy at 1 competes at 8 too). Returns (bin, b) -> (``"strategy@budget"``, accuracy) for every
    budget b in ``acc``; ties go to the smaller budget, then to the label that sorts first."""
    best: dict[tuple[str, int], tuple[str, float]] = {}
    bins = sorted({b for b, _, _ in acc})
    budgets = sorted({bud for _, bud, _ in acc})
    for b in bins:
        entries = sorted((bud, label, a) for (bb, bud, label), a in acc.items() if bb == b)
        for col in budgets:
            for bud, label, a in entries:
                if bud > col:
                    break
                cur = best.get((b, col))
                if cur is None or a > cur[1]:
                    best[(b, col)] = (f"{label}@{bud}", a)
    return best


# Difficulty from the model's own pass rate, as in Snell et al. 2024 (https://arxiv.org/abs/2408.03314), with
# fixed thresholds instead of quantiles: many problems share a pass rate of 0 or 1, and quantiles would split them
# arbitrarily between bins. Bin 1 is the easiest.
PASS_RATE_BINS: tuple[tuple[str, float], ...] = (("1", 0.8), ("2", 0.6), ("3", 0.4), ("4", 0.2), ("5", 0.0))


def difficulty_bin(pass_rate: float) -> str:
    """Bin ``"1"`` (pass rate >= 0.8, easiest) .. ``"5"`` (< 0.2, hardest)."""
    if not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass rate must be in [0, 1], got {pass_rate}")
    for name, low in PASS_RATE_BINS:
        if pass_rate >= low:
            return name
    raise AssertionError("unreachable: the last bin starts at 0")


def per_problem_mean(rows: Sequence[tuple[K, float]]) -> dict[K, float]:
    """Average values that share a key (e.g. several seeds of one problem), so each problem counts once."""
    sums: dict[K, list[float]] = {}
    for key, v in rows:
        sums.setdefault(key, []).append(v)
    return {key: mean(vs) for key, vs in sums.items()}
