"""auto's ``verifier`` difficulty: a first wave of the greedy chain alone, judged by a trained ORM (here a head on the
scripted fake's hidden states) before anything else is drawn; its budget; the policy file's checks; fit-policy
replaying it with a given verifier object."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from tests.policy.helpers import hand_run, policy_dict
from tests.strategies.helpers import words
from tests.verifiers.test_orm import head_on_coord0, marker
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.policy.fit import FitOptions, fit_policy
from thinkscale.strategies.auto import Auto
from thinkscale.strategies.auto_features import DifficultyScore
from thinkscale.strategies.auto_policy import PolicyError, SampleAction, StopAction, load_policy
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Candidate, Ledger, Problem, Role, Usage
from thinkscale.verifiers.base import VerifierKind
from thinkscale.verifiers.orm import FeatureSpec, TrainedORM, View

PROBLEM = Problem.from_text("What is 2 plus 3?", system="Be brief.")
RIGHT = "First add 2 and 3. \\boxed{5}"  # the fake's marker: coordinate 0 = +1, the head says 0.982
WRONG = "Surely it is \\boxed{6}"  # -1: 0.018


def orm_file(tmp_path: Path, backend: ScriptedBackend) -> str:
    """A trained ORM file whose head reads coordinate 0 of the chain's hidden state."""
    path = tmp_path / "orm.json"
    TrainedORM(backend=backend, head=head_on_coord0(4), spec=FeatureSpec(views=(View.CHAIN,)),
               metadata={"model": {"fingerprint": backend.info().fingerprint}, "feature_dim": 4}).save(path)
    return str(path)


def verifier_policy(tmp_path: Path, orm: str, **kw: object) -> str:
    doc = policy_dict(choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 5}},
                      edges=(0.5,), wave_size=2, max_tokens=16, greedy_first=True, greedy_breaks_ties=True)
    doc["sampling"]["first_wave"] = 1
    doc["difficulty"] = {"score": "verifier", "edges": [0.5], "bins": ["easy", "hard"], "verifier": "orm",
                         "verifier_path": orm, **kw}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return str(path)


def run_auto(policy: str, backend: ScriptedBackend, budget: Budget | None = None):
    return execute(Auto(budget_tokens=1000, policy=policy), PROBLEM, backend, budget, rng=random.Random(0))


def test_a_judged_right_greedy_chain_stops_at_one_chain(tmp_path: Path) -> None:
    backend = ScriptedBackend([RIGHT], hidden_fn=marker, n_embd=4)
    res = run_auto(verifier_policy(tmp_path, orm_file(tmp_path, backend)), backend)
    assert res.answer == "5" and len(res.candidates) == 1
    assert backend.requests[0].temperature == 0.0 and backend.requests[0].n == 1  # the greedy request alone
    diff = next(e for e in res.trace if type(e).__name__ == "DifficultyEstimate")
    assert diff.score_kind == "verifier" and diff.bin == "easy"
    assert diff.features["verifier_p"] == pytest.approx(0.982, abs=1e-3)
    assert diff.score == pytest.approx(0.018, abs=1e-3)
    assert len(backend.hidden_requests) == 1 and res.ledger.total(Role.VERIFIER).calls == 1  # one judged chain
    assert res.ledger.total(Role.GENERATOR).completion_tokens == 6  # RIGHT's 6 words


def test_a_judged_wrong_greedy_chain_samples_on_in_waves(tmp_path: Path) -> None:
    """The greedy chain (6) is judged wrong: hard, sample to 5 chains in waves of 2 (the same seeded draw as
    self-consistency), 5 wins 4 to 1; the verifier judged the first chain only."""
    backend = ScriptedBackend([WRONG] + [words(3, "5")] * 4, hidden_fn=marker, n_embd=4)
    res = run_auto(verifier_policy(tmp_path, orm_file(tmp_path, backend)), backend)
    assert res.answer == "5" and len(res.candidates) == 5
    assert [r.n for r in backend.requests] == [1, 2, 2] and backend.requests[1].first_sample == 0
    assert backend.requests[2].first_sample == 2
    assert next(e for e in res.trace if type(e).__name__ == "DifficultyEstimate").bin == "hard"
    assert len(backend.hidden_requests) == 1


def test_no_call_left_for_the_verifier_answers_with_the_first_wave(tmp_path: Path) -> None:
    backend = ScriptedBackend([WRONG], hidden_fn=marker, n_embd=4)
    res = run_auto(verifier_policy(tmp_path, orm_file(tmp_path, backend)), backend, Budget(max_calls=1))
    assert res.answer == "6" and res.stop_reason == "budget" and not backend.hidden_requests
    assert "no call for the verifier" in (res.stop_detail or "")


@pytest.mark.parametrize(("difficulty", "message"), [
    ({"score": "verifier"}, "needs verifier"),
    ({"score": "agreement", "verifier": "orm"}, "only read by score 'verifier'"),
    ({"score": "verifier", "verifier": "prm", "verifier_path": "x.json"}, "scores steps"),
    ({"score": "verifier", "verifier": "nosuch"}, "nosuch"),
    ({"score": "verifier", "verifier": "reference"}, "reads the reference answer"),
])
def test_a_bad_verifier_difficulty_is_refused_naming_it(tmp_path: Path, difficulty: dict, message: str) -> None:
    doc = policy_dict(choices={"easy": {"kind": "stop"}, "hard": {"kind": "stop"}})
    doc["difficulty"] = {"edges": [0.5], "bins": ["easy", "hard"], **difficulty}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_a_first_wave_larger_than_an_action_is_refused(tmp_path: Path) -> None:
    doc = policy_dict(choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 2}},
                      wave_size=1)
    doc["sampling"]["first_wave"] = 3
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match="below the first wave's 3 chains"):
        load_policy(path)


class ByLength:
    """A fake outcome verifier: a 5-word chain is judged right (0.9), any other wrong (0.1); counts its calls."""

    name: ClassVar[str] = "orm"
    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False

    def __init__(self) -> None:
        self.scored: list[str] = []

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return len(candidates)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        self.scored += [c.text for c in candidates]
        ledger.charge(Role.VERIFIER, Usage(prompt_tokens=3, cached_prompt_tokens=0, completion_tokens=0,
                                           calls=len(candidates), seconds=0.0, flops=0.0))
        return [(0.9 if len(c.text.split()) == 5 else 0.1,) for c in candidates]


def test_fit_policy_bins_by_the_verifiers_judgement_of_the_greedy_chain(tmp_path: Path) -> None:
    """Two problems judged right (greedy ok in 5 tokens) and two judged wrong (greedy bad in 6 tokens) whose sampled
    chains are all ok. Scores 0.1 and 0.9: bins easy / hard at edge 0.5. At 50 tokens easy stops at greedy's
    5 tokens (1.0); hard samples on: the greedy chain + a wave of 2 right chains = 1.0 at 6 + 20 tokens, where
    stopping would give greedy's wrong answer (0.0)."""
    ok = [("ok", 10)] * 8
    run = hand_run(tmp_path / "run", [ok] * 4, greedy=[("ok", 5), ("bad", 6)] * 2)
    judge = ByLength()
    opts = FitOptions(min_bin_problems=1, budgets=(10, 50), delegate=False, wave_size=2, first_wave=1,
                      greedy_first=True, greedy_breaks_ties=True, difficulty=DifficultyScore.VERIFIER,
                      verifier="orm", verifiers={("orm", None): judge}, verifier_scores="a fake")
    pol = fit_policy([run], opts)
    assert pol.difficulty.score is DifficultyScore.VERIFIER and pol.difficulty.verifier == "orm"
    assert pol.difficulty.edges == [0.5] and pol.sampling.first == 1
    assert pol.fitted_on.verifier_scores == "a fake"
    assert len(set(judge.scored)) == 4 and all(len(t.split()) in (5, 6) for t in judge.scored)  # greedy chains only
    low, high = pol.budgets
    assert isinstance(low.choices["easy"].action, StopAction) and isinstance(low.choices["hard"].action, StopAction)
    assert low.choices["hard"].accuracy == 0.0  # 10 tokens: only the greedy chain fits
    assert isinstance(high.choices["easy"].action, StopAction) and high.choices["easy"].mean_tokens == 5.0
    hard = high.choices["hard"]
    assert isinstance(hard.action, SampleAction) and (hard.accuracy, hard.mean_tokens) == (1.0, 26.0)
    table = {(e.bin, e.max_completion_tokens, e.action) for e in pol.table}
    assert ("hard", 50, "sample:max_samples=3") in table  # the first wave's 1 chain + waves of 2


def test_fit_policy_cli_wants_verifier_and_difficulty_together(tmp_path: Path) -> None:
    run = hand_run(tmp_path / "run", [[("ok", 10)] * 8] * 2, greedy=[("ok", 5)] * 2)
    for extra in (["--verifier", "orm"], ["--difficulty", "verifier"]):
        r = CliRunner().invoke(app, ["fit-policy", str(run), "--out", str(tmp_path / "p.json"), *extra])
        assert r.exit_code == 2 and "--verifier goes with --difficulty verifier" in r.stderr
    r = CliRunner().invoke(app, ["fit-policy", str(run), "--out", str(tmp_path / "p.json"), "--difficulty", "vibes"])
    assert r.exit_code == 2 and "--difficulty must be one of agreement" in r.stderr


def test_a_cached_verifier_scores_each_chain_once_and_charges_what_it_cost() -> None:
    from thinkscale.eval.chain_scores import CachedVerifier, ScoreCache

    inner = ByLength()
    cached = CachedVerifier(inner, "by-length", ScoreCache(None))
    assert (cached.name, cached.kind, cached.uses_reference) == ("orm", VerifierKind.OUTCOME, False)
    chains = [Candidate(text=words(5, "5"), answer="5"), Candidate(text=words(6, "6"), answer="6")]
    first, again = Ledger(), Ledger()
    assert cached.score(PROBLEM, chains, ledger=first) == [(0.9,), (0.1,)]
    assert cached.score(PROBLEM, chains, ledger=again) == [(0.9,), (0.1,)]
    assert len(inner.scored) == 2  # the second time from the cache
    assert first.total(Role.VERIFIER) == again.total(Role.VERIFIER) and again.total(Role.VERIFIER).calls == 2
    assert cached.max_calls(chains) == 2
