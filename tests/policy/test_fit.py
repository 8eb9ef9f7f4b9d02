"""fit-policy on hand-made runs: bins, the best action per bin and budget by hand, tolerance, refusal of test data,
and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.policy.helpers import hand_run
from thinkscale.cli import app
from thinkscale.policy.fit import FitError, FitOptions, _choose, fit_policy, is_evaluation_set
from thinkscale.strategies.auto_policy import SampleAction, StopAction, load_policy

# 8 chains of 10 tokens each. Easy: all right. Hard: the first wave is split 3 ways (ok, bad, bad2, no answer),
# the second wave is all right.
EASY = [("ok", 10)] * 8
HARD = [("ok", 10), ("bad", 10), ("bad2", 10), (None, 10)] + [("ok", 10)] * 4
OPTS = dict(min_bin_problems=1, budgets=(40, 80), delegate=False)


def test_fit_picks_the_hand_computed_best_action_per_bin_and_budget(tmp_path: Path) -> None:
    """Scores: easy 1 - 4/4 = 0, hard 1 - 1/4 = 0.75: two runs of distinct scores -> bins easy | hard, edge 0.375.
    Budget 40 = the first wave at max_tokens 10 worst case, so nothing can follow it: every action is the first
    wave's vote; easy 1.0, hard a 3-way tie 1/3; all at 40 tokens -> stop (simplest). Budget 80: easy: stop 1.0
    at 40 tokens, sampling to 8 also 1.0 but 80 tokens (thresholds settle at once: P({ok: 4}) = 0.96875, the
    same 40 tokens) -> stop. Hard: stop 1/3 at 40; every sample action continues (P of a 1-1-1 split = 0.5) to 8
    chains {ok: 5, bad: 1, bad2: 1} -> 1.0 at 80 tokens; equal, so the first listed: sample to 8, no threshold."""
    run = hand_run(tmp_path / "run", [EASY, HARD, EASY, HARD, EASY, HARD])
    pol = fit_policy([run], FitOptions(**OPTS))
    assert pol.difficulty.edges == [0.375] and pol.difficulty.bins == ["easy", "hard"]
    low, high = pol.budgets
    assert low.max_completion_tokens == 40 and high.max_completion_tokens == 80
    assert isinstance(low.choices["easy"].action, StopAction) and low.choices["easy"].accuracy == 1.0
    assert isinstance(low.choices["hard"].action, StopAction)
    assert low.choices["hard"].accuracy == pytest.approx(1 / 3) and low.choices["hard"].mean_tokens == 40
    assert isinstance(high.choices["easy"].action, StopAction) and high.choices["easy"].mean_tokens == 40
    hard = high.choices["hard"]
    assert hard.action == SampleAction(max_samples=8, threshold=None)
    assert (hard.accuracy, hard.mean_tokens, hard.n_problems) == (1.0, 80.0, 3)
    assert "bin hard at 80 tokens, 3 fitting problems" in hard.why
    table = {(e.bin, e.max_completion_tokens, e.action): (e.accuracy, e.mean_tokens) for e in pol.table}
    assert table[("hard", 80, "stop")] == (pytest.approx(1 / 3), 40.0)
    assert table[("easy", 80, "sample:max_samples=8")] == (1.0, 80.0)
    assert table[("easy", 80, "sample:max_samples=8,threshold=0.95")] == (1.0, 40.0)
    f = pol.fitted_on
    assert (f.dataset, f.problems, f.instances, f.model, f.test_data, f.samples_per_problem) == (
        "gsm8k-train", 6, 6, "m", False, 8)
    assert f.model_fingerprint == "hand-made" and f.runs == [str(run)]
    assert pol.sampling.max_tokens == 10 and pol.sampling.temperature == 0.7


def test_two_runs_pool_their_instances(tmp_path: Path) -> None:
    """fit-policy on two train runs (as scripts/measure.sh fits on two gsm8k-train subsets) pools their instances:
    run a holds easy, hard, easy and run b hard, easy, hard on the same three problem ids, so the pooled fit sees
    3 easy + 3 hard instances, exactly the single run [easy, hard] x 3 of the first test: the same bins, choices and
    table. 3 problem ids, 6 instances, both runs recorded."""
    a = hand_run(tmp_path / "a", [EASY, HARD, EASY])
    b = hand_run(tmp_path / "b", [HARD, EASY, HARD])
    one = hand_run(tmp_path / "one", [EASY, HARD, EASY, HARD, EASY, HARD])
    pooled, single = fit_policy([a, b], FitOptions(**OPTS)), fit_policy([one], FitOptions(**OPTS))
    assert pooled.difficulty == single.difficulty
    assert [r.choices for r in pooled.budgets] == [r.choices for r in single.budgets]
    assert pooled.table == single.table
    assert (pooled.fitted_on.problems, pooled.fitted_on.instances) == (3, 6)
    assert pooled.fitted_on.runs == [str(a), str(b)]


def test_a_cheaper_stored_strategy_wins_as_a_delegate(tmp_path: Path) -> None:
    """Greedy is right on every problem in 5 tokens. At 80 tokens its worst case (first wave 40 + one 10-token
    chain) fits, so on hard problems 'strategy:greedy' (1.0 at 40 + 5 = 45 tokens) beats sampling (1.0 at 80).
    At 40 tokens it does not fit and is not offered."""
    run = hand_run(tmp_path / "run", [EASY, HARD, EASY, HARD], greedy=[("ok", 5)] * 4)
    pol = fit_policy([run], FitOptions(**{**OPTS, "delegate": True}))
    low, high = pol.budgets
    assert high.choices["hard"].action.label == "strategy:greedy"
    assert (high.choices["hard"].accuracy, high.choices["hard"].mean_tokens) == (1.0, 45.0)
    assert not any(e.action.startswith("strategy:") for e in pol.table if e.max_completion_tokens == 40)


def test_tolerance_sends_a_small_gain_to_the_cheaper_action() -> None:
    actions = {"stop": StopAction(), "sample:max_samples=8": SampleAction(max_samples=8)}
    stats = {"stop": (0.900, 40.0), "sample:max_samples=8": (0.903, 80.0)}
    assert _choose(stats, actions, 0.005, 10, "b", 80).action == StopAction()  # +0.3 points: not worth 40 tokens
    chosen = _choose(stats, actions, 0.001, 10, "b", 80)
    assert chosen.action == SampleAction(max_samples=8) and "most accurate" in chosen.why


def test_a_token_price_trades_accuracy_for_tokens_by_hand() -> None:
    """stop 0.50 at 300 tokens, sample 0.60 at 1300: at 0.05 per 1000 tokens the utilities are 0.485 and 0.535
    (sample); at 0.2 they are 0.44 and 0.34 (stop); at 0.1 they tie at 0.47 and 0.47: the cheaper one."""
    actions = {"stop": StopAction(), "sample:max_samples=8": SampleAction(max_samples=8)}
    stats = {"stop": (0.50, 300.0), "sample:max_samples=8": (0.60, 1300.0)}
    assert _choose(stats, actions, 0.0, 10, "b", 4096, 0.05).action == SampleAction(max_samples=8)
    priced = _choose(stats, actions, 0.0, 10, "b", 4096, 0.2)
    assert priced.action == StopAction() and "best at 0.2 accuracy per 1000 tokens" in priced.why
    assert _choose(stats, actions, 1e-9, 10, "b", 4096, 0.1).action == StopAction()


def test_fitting_on_test_data_is_refused_unless_allowed(tmp_path: Path) -> None:
    run = hand_run(tmp_path / "run", [EASY, HARD], dataset="gsm8k")
    with pytest.raises(FitError, match="'gsm8k', an evaluation set.*--allow-test-data"):
        fit_policy([run], FitOptions(**OPTS))
    pol = fit_policy([run], FitOptions(**OPTS, allow_test_data=True))
    assert pol.fitted_on.test_data and pol.fitted_on.dataset == "gsm8k"


def test_which_datasets_count_as_evaluation_sets() -> None:
    assert is_evaluation_set("gsm8k", ["gsm8k_test-0"]) and is_evaluation_set("math500", ["x"])
    assert is_evaluation_set("mine", ["mine_test-3"]) and is_evaluation_set("my-test-set", ["a"])
    assert not is_evaluation_set("gsm8k-train", ["gsm8k_train-0"]) and not is_evaluation_set("mine", ["a-1"])


def test_fit_policy_cli_writes_a_loadable_policy(tmp_path: Path) -> None:
    run = hand_run(tmp_path / "run", [EASY, HARD, EASY, HARD])
    out = tmp_path / "policy.json"
    r = CliRunner().invoke(app, ["fit-policy", str(run), "--out", str(out), "--budgets", "40,80",
                                 "--min-bin-problems", "1", "--no-delegate"])
    assert r.exit_code == 0, r.stderr
    pol = load_policy(out)
    assert pol.fitted_on.dataset == "gsm8k-train" and [b.max_completion_tokens for b in pol.budgets] == [40, 80]
    assert json.loads(out.read_text())["format"] == "thinkscale-policy/1"
    assert "wrote" in r.stderr
    bad = CliRunner().invoke(app, ["fit-policy", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2 and "not a run folder" in bad.stderr


def test_a_futility_stop_wins_where_more_chains_only_cost(tmp_path: Path) -> None:
    """Waves of 2 chains of 10 tokens. HARD2 (ok, bad, bad, ok, ok, ok, ...) and HOPELESS (bad, bad2, none, none,
    ...) open alike (a 1-1 split: score 0.5, bin hard). After 4 chains HARD2 is {ok: 2, bad: 2} (leader 2 > 0.34 x
    4: go on) and right at 6 chains {ok: 4, bad: 2}; HOPELESS is {bad: 1, bad2: 1} (leader 1 <= 1.36: futile) and
    never right. At 80 tokens, sampling to 6 is 0.5 at (60 + 60) / 2 = 60 tokens without the futility stop and
    0.5 at (60 + 40) / 2 = 50 with it (thresholds settle nothing earlier: P({ok: 4, bad: 2}) = 99/128 < 0.8), so
    the fit picks the futility stop; 8 chains are no more accurate and cost more."""
    hard2 = [("ok", 10), ("bad", 10), ("bad", 10)] + [("ok", 10)] * 5
    hopeless = [("bad", 10), ("bad2", 10), (None, 10), (None, 10)] * 2
    run = hand_run(tmp_path / "run", [EASY, hard2, hopeless] * 2)
    pol = fit_policy([run], FitOptions(**{**OPTS, "wave_size": 2}, give_ups=(None, (4, 0.34))))
    hard = pol.budgets[-1].choices["hard"]
    assert hard.action == SampleAction(max_samples=6, give_up_after=4, give_up_share=0.34)
    assert (hard.accuracy, hard.mean_tokens) == (0.5, 50.0)
    table = {(e.bin, e.max_completion_tokens, e.action): (e.accuracy, e.mean_tokens) for e in pol.table}
    assert table[("hard", 80, "sample:max_samples=6")] == (0.5, 60.0)
    assert table[("hard", 80, "sample:max_samples=6,give_up_after=4,give_up_share=0.34")] == (0.5, 50.0)


def test_a_greedy_first_fit_replays_the_runs_greedy_chain(tmp_path: Path) -> None:
    """greedy_first with waves of 2: the first wave is the greedy chain + sampled chain 0. LATE problems (sampled
    chains bad, then ok...) with a right greedy chain: first wave {ok: 1, bad: 1} (a tie: 0.5); without greedy
    the first wave would be {bad: 1, ok: 1} too, but the greedy chain's 5 tokens replace sampled chain 1's 10,
    so the stop action costs 15 tokens. A run without greedy units cannot be fitted greedy-first."""
    late = [("bad", 10)] + [("ok", 10)] * 7
    run = hand_run(tmp_path / "run", [EASY, late] * 2, greedy=[("ok", 5)] * 4)
    pol = fit_policy([run], FitOptions(**{**OPTS, "wave_size": 2, "delegate": False}, greedy_first=True))
    assert pol.sampling.greedy_first and pol.sampling.wave_size == 2
    table = {(e.bin, e.max_completion_tokens, e.action): (e.accuracy, e.mean_tokens) for e in pol.table}
    assert table[("hard", 40, "stop")] == (0.5, 15.0) and table[("easy", 40, "stop")] == (1.0, 15.0)
    # sampling to 4 chains: greedy ok + sampled bad, ok, ok -> {ok: 3, bad: 1}, graded by the chains auto got
    # (greedy first), not the draw's first four: 1.0 at 5 + 30 tokens
    assert table[("hard", 80, "sample:max_samples=4")] == (1.0, 35.0)
    bare = hand_run(tmp_path / "bare", [EASY, late])
    with pytest.raises(FitError, match="no greedy units"):
        fit_policy([bare], FitOptions(**OPTS, greedy_first=True))


def test_greedy_breaks_ties_grades_a_tied_vote_by_the_greedy_answer(tmp_path: Path) -> None:
    """The LATE problems of the greedy-first test: first wave {ok (greedy), bad}, a tie: split, 0.5; with
    greedy_breaks_ties it goes to the greedy chain's ok: 1.0, at the same 15 tokens. Sampling to 4 ({ok: 3, bad: 1})
    has no tie: 1.0 either way. The policy records the knob; without --greedy-first it is refused."""
    late = [("bad", 10)] + [("ok", 10)] * 7
    run = hand_run(tmp_path / "run", [EASY, late] * 2, greedy=[("ok", 5)] * 4)
    opts = {**OPTS, "wave_size": 2, "delegate": False}
    pol = fit_policy([run], FitOptions(**opts, greedy_first=True, greedy_breaks_ties=True))
    assert pol.sampling.greedy_breaks_ties
    table = {(e.bin, e.max_completion_tokens, e.action): (e.accuracy, e.mean_tokens) for e in pol.table}
    assert table[("hard", 40, "stop")] == (1.0, 15.0)
    assert table[("hard", 80, "sample:max_samples=4")] == (1.0, 35.0)
    with pytest.raises(FitError, match="greedy_breaks_ties needs greedy_first"):
        fit_policy([run], FitOptions(**opts, greedy_breaks_ties=True))
