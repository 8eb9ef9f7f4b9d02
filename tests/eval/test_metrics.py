"""Metrics against numbers computed by hand (the docstrings show the arithmetic)."""

from __future__ import annotations

import math
import random

import pytest

from thinkscale.eval import metrics
from thinkscale.eval.metrics import Point
from thinkscale.verifiers.aggregate import Selection


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 2, 1 - 3 / 10),        # 1 - C(3,2)/C(5,2)
    (10, 3, 4, 1 - 35 / 210),     # 1 - C(7,4)/C(10,4) = 5/6
    (4, 1, 1, 0.25),              # pass@1 is the fraction correct
    (4, 0, 3, 0.0),
    (4, 3, 2, 1.0),               # n - c = 1 < k: every 2-subset holds a correct sample
    (16, 16, 16, 1.0),
])
def test_pass_at_k_matches_chen_et_al(n: int, c: int, k: int, expected: float) -> None:
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_combinatorial_formula_for_large_n() -> None:
    """The product form must equal 1 - C(n-c,k)/C(n,k) computed exactly with integers."""
    for n, c, k in [(200, 7, 50), (100, 50, 10), (64, 1, 63)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert metrics.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("bad", [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        metrics.pass_at_k(*bad)


def test_majority_value_splits_ties_evenly() -> None:
    assert metrics.selection_value(["a", "a", "b"], [True, True, False], None, Selection.MAJORITY) == 1.0
    assert metrics.selection_value(["a", "b"], [True, False], None, Selection.MAJORITY) == 0.5
    assert metrics.selection_value(["a", "b", "c"], [False, True, False], None, Selection.MAJORITY) == \
        pytest.approx(1 / 3)
    assert metrics.selection_value([None, None], [False, False], None, Selection.MAJORITY) == 0.0
    # None answers do not vote: "b" wins 1-0 over nothing
    assert metrics.selection_value([None, "b", None], [False, True, False], None, Selection.MAJORITY) == 1.0


def test_a_preferred_candidate_takes_a_tie_it_is_in() -> None:
    """prefer=0 (auto's greedy chain): a 2-way tie a/b with a right -> 1.0, with a wrong -> 0.0 (split: 0.5); a tie
    it is not in is still split; no tie: prefer changes nothing; a preferred chain without an answer is no help."""
    maj = Selection.MAJORITY
    assert metrics.selection_value(["a", "b"], [True, False], None, maj, prefer=0) == 1.0
    assert metrics.selection_value(["a", "b"], [False, True], None, maj, prefer=0) == 0.0
    assert metrics.selection_value(["c", "a", "a", "b", "b"], [False, True, True, False, False], None, maj,
                                   prefer=0) == 0.5
    assert metrics.selection_value(["b", "a", "a"], [False, True, True], None, maj, prefer=0) == 1.0
    assert metrics.selection_value([None, "a", "b"], [False, True, False], None, maj, prefer=0) == 0.5
    with pytest.raises(ValueError, match="majority ties only"):
        metrics.selection_value(["a"], [True], [0.5], Selection.ARGMAX, prefer=0)


def test_weighted_and_argmax_values() -> None:
    """Weighted: a has 0.9, b has 0.4 + 0.4 = 0.8, so a (wrong) wins although b has more votes. Argmax: samples 0
    and 2 tie at 0.9 and only sample 0 is right: 1/2."""
    assert metrics.selection_value(["a", "b", "b"], [False, True, True], [0.9, 0.4, 0.4],
                                   Selection.WEIGHTED_MAJORITY) == 0.0
    assert metrics.selection_value(["a", "b", "b"], [False, True, True], None, Selection.MAJORITY) == 1.0
    assert metrics.selection_value(["x", "y", "z"], [True, False, False], [0.9, 0.5, 0.9], Selection.ARGMAX) == 0.5


def test_expected_majority_over_all_subsets() -> None:
    """Answers [a, a, b, c], only b right. 3-subsets: {a,a,b} -> a, {a,a,c} -> a, {a,b,c} twice -> a 3-way tie,
    1/3 each: (0 + 0 + 1/3 + 1/3) / 4 = 1/6. 2-subsets: {a,a} 0, {a,b} twice 1/2, {a,c} twice 0, {b,c} 1/2:
    (0.5 + 0.5 + 0.5) / 6 = 1/4."""
    keys = ["a", "a", "b", "c"]
    correct = [False, False, True, False]
    m3, n3 = metrics.expected_selection_accuracy(keys, correct, None, Selection.MAJORITY, 3)
    assert (m3, n3) == (pytest.approx(1 / 6), 4)
    m2, n2 = metrics.expected_selection_accuracy(keys, correct, None, Selection.MAJORITY, 2)
    assert (m2, n2) == (pytest.approx(1 / 4), 6)


def test_sampled_subsets_estimate_the_same_mean() -> None:
    """With fewer allowed subsets than C(n, k), random subsets are drawn; their mean converges to the exact one."""
    rng = random.Random(1)
    keys = [rng.choice("abcd") for _ in range(16)]
    correct = [k == "a" for k in keys]
    exact, n_exact = metrics.expected_selection_accuracy(keys, correct, None, Selection.MAJORITY, 5,
                                                         max_subsets=10**6)
    est, n_est = metrics.expected_selection_accuracy(keys, correct, None, Selection.MAJORITY, 5, max_subsets=4000,
                                                     rng=random.Random(0))
    assert n_exact == math.comb(16, 5) and n_est == 4000
    assert est == pytest.approx(exact, abs=0.03)


def test_tiebreak_vote_lets_the_best_score_settle_only_ties() -> None:
    """Chains a(0.2) b(0.9) a(0.3) b(0.1) c(0.95), a right. All five: a and b tie on 2 votes (c's 0.95 does not
    count: 1 vote), b's best 0.9 beats a's 0.3 -> 0. The ten 2-subsets: {a,a} -> a; a split pair goes to the better
    score: a wins {a.2,b.1} and {a.3,b.1}, loses {a.2,b.9}, {a.3,b.9} and both {a,c}; the rest hold no a: 3/10.
    The plain vote splits those six mixed pairs instead: (1 + 6 x 1/2) / 10 = 0.4."""
    keys, correct = ["a", "b", "a", "b", "c"], [True, False, True, False, False]
    scores = [0.2, 0.9, 0.3, 0.1, 0.95]
    assert metrics.expected_tiebreak_accuracy(keys, correct, scores, 5) == (0.0, 1)
    assert metrics.expected_tiebreak_accuracy(keys, correct, scores, 2) == (pytest.approx(0.3), 10)
    assert metrics.expected_selection_accuracy(keys, correct, None, Selection.MAJORITY, 2)[0] == pytest.approx(0.4)


def test_tiebreak_splits_equal_best_scores_and_skips_unanswered() -> None:
    """[a, b] tied on votes and on best score (0.5 each): split, 1/2. A subset of unanswered chains scores 0, and
    an unanswered chain's score never wins: [None(0.99), a] -> a."""
    assert metrics.expected_tiebreak_accuracy(["a", "b"], [True, False], [0.5, 0.5], 2) == (0.5, 1)
    assert metrics.expected_tiebreak_accuracy([None, None], [False, False], [0.9, 0.1], 2) == (0.0, 1)
    assert metrics.expected_tiebreak_accuracy([None, "a", "b"], [False, True, False], [0.99, 0.6, 0.4], 3) == (1.0, 1)


def test_tiebreak_equals_a_subset_by_subset_loop() -> None:
    """The vectorised estimator against the rule written out per subset, on the same sampled subsets."""
    rng = random.Random(4)
    for _ in range(20):
        n = rng.randint(2, 12)
        k = rng.randint(1, n)
        keys = [rng.choice(["x", "y", "z", None]) for _ in range(n)]
        correct = [key == "x" for key in keys]
        scores = [rng.choice([0.1, 0.5, 0.9, rng.random()]) for _ in range(n)]
        got, _ = metrics.expected_tiebreak_accuracy(keys, correct, scores, k, max_subsets=50, rng=random.Random(9))
        idx = metrics.subsets(n, k, max_subsets=50, rng=random.Random(9))
        want = []
        for row in idx:
            votes: dict[str, int] = {}
            best: dict[str, float] = {}
            for i in row:
                if keys[i] is not None:
                    votes[keys[i]] = votes.get(keys[i], 0) + 1
                    best[keys[i]] = max(best.get(keys[i], -1.0), scores[i])
            if not votes:
                want.append(0.0)
                continue
            tied = [a for a, v in votes.items() if v == max(votes.values())]
            top = max(best[a] for a in tied)
            winners = [a for a in tied if math.isclose(best[a], top, rel_tol=1e-9, abs_tol=1e-12)]
            want.append(sum(a == "x" for a in winners) / len(winners))
        assert got == pytest.approx(sum(want) / len(want), abs=1e-12)


def test_bootstrap_interval() -> None:
    """All-correct has no spread. For p = 0.5 over 400 problems the normal approximation gives
    0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049; the percentile bootstrap must land close to it."""
    e = metrics.bootstrap_ci([1.0] * 10)
    assert (e.mean, e.low, e.high, e.n) == (1.0, 1.0, 1.0, 10)
    e = metrics.bootstrap_ci([1.0, 0.0] * 200, reps=4000)
    assert e.mean == 0.5
    assert e.low == pytest.approx(0.5 - 0.049, abs=0.008)
    assert e.high == pytest.approx(0.5 + 0.049, abs=0.008)
    assert metrics.bootstrap_ci([1.0, 0.0] * 200, reps=500, seed=3) == metrics.bootstrap_ci([1.0, 0.0] * 200,
                                                                                            reps=500, seed=3)
    with pytest.raises(ValueError):
        metrics.bootstrap_ci([])


def test_pareto_frontier() -> None:
    """(20, 0.4) is beaten by (10, 0.5); (30, 0.6) by (30, 0.7); the rest each buy accuracy with tokens."""
    pts = [Point("a", 1, 10, 0.5), Point("b", 1, 20, 0.4), Point("c", 1, 30, 0.7), Point("d", 1, 30, 0.6),
           Point("e", 1, 5, 0.2)]
    assert [p.label for p in metrics.pareto_frontier(pts)] == ["e", "a", "c"]


def test_compute_optimal_lets_cheaper_configs_compete_at_larger_budgets() -> None:
    acc = {("1", 1, "greedy"): 0.5, ("1", 2, "sc"): 0.4, ("1", 4, "sc"): 0.7,
           ("5", 1, "greedy"): 0.0, ("5", 2, "sc"): 0.1, ("5", 4, "sc"): 0.1}
    table = metrics.compute_optimal(acc)
    assert table[("1", 1)] == ("greedy@1", 0.5)
    assert table[("1", 2)] == ("greedy@1", 0.5)  # sc@2 (0.4) is worse than greedy, which also fits in budget 2
    assert table[("1", 4)] == ("sc@4", 0.7)
    assert table[("5", 4)] == ("sc@2", 0.1)  # a tie goes to the smaller budget


def test_difficulty_bins() -> None:
    assert [metrics.difficulty_bin(p) for p in (1.0, 0.8, 0.79, 0.5, 0.2, 0.19, 0.0)] == \
        ["1", "1", "2", "3", "4", "5", "5"]
    with pytest.raises(ValueError):
        metrics.difficulty_bin(1.5)


@pytest.mark.parametrize("how", list(Selection))
def test_vectorised_subset_mean_equals_the_one_subset_at_a_time_definition(how: Selection) -> None:
    """Random answer sets with None answers, ties and repeated scores: the vectorised mean must equal averaging
    ``selection_value`` over the same subsets."""
    rng = random.Random(7)
    for _ in range(40):
        n = rng.randint(1, 9)
        keys = [rng.choice(["a", "b", "c", None]) for _ in range(n)]
        first: dict[str, bool] = {}
        correct = []
        for key in keys:
            c = first.setdefault(key, rng.random() < 0.4) if key is not None else False
            correct.append(c)
        scores = [rng.choice([0.1, 0.5, 0.5, 0.9]) for _ in range(n)]
        k = rng.randint(1, n)
        got, count = metrics.expected_selection_accuracy(keys, correct, scores, how, k, max_subsets=50,
                                                         rng=random.Random(1))
        idx = metrics.subsets(n, k, max_subsets=50, rng=random.Random(1))
        want = sum(metrics.selection_value([keys[i] for i in row], [correct[i] for i in row],
                                           [scores[i] for i in row], how) for row in idx) / len(idx)
        assert count == len(idx)
        assert got == pytest.approx(want, abs=1e-12), (keys, correct, scores, k)
