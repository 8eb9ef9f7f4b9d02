"""Fitting the ORM from eval runs on the scripted fake: chains drawn by the sweep harness on gsm8k-train, read back
from the store with their grades, features, the saved head with its provenance, an evaluation set refused, and
bench/orm_select.py selecting among the stored chains without regenerating."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import thinkscale.backends
from tests.helpers.bench import load_bench
from tests.verifiers.test_orm import marker
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep
from thinkscale.policy.orm_fit import chains_from_run, draw_chains, merge_runs, train_orm
from thinkscale.verifiers.orm import TrainedORM, View
from thinkscale.verifiers.orm_train import FeatureCache, FitConfig

LIMIT = 12
FAST = FitConfig(c_grid=(1.0,), curve_sizes=(4,), bootstrap_reps=20)  # one c, one curve point: a quick fit


def train_table(path: Path) -> Path:
    """Responses for the first ``LIMIT`` gsm8k-train problems: a right chain (with the fake's feature marker "First
    add") and three wrong ones, so a 4-chain draw has 0 to 4 right chains."""
    ds = load_dataset("gsm8k-train").subset(LIMIT, 0)
    responses = {}
    for p in ds.problems:
        ref = int(p.reference)
        responses[p.problem.messages[-1].content] = [
            f"First add then multiply.\n\nSo the answer is \\boxed{{{ref}}}",
            f"I think it is \\boxed{{{ref + 1}}}", f"Maybe\n\n\\boxed{{{ref + 2}}} works",
            f"Surely \\boxed{{{ref + 1}}}"]
    path.write_text(json.dumps({"responses": responses}))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("orm")
    table = train_table(tmp / "table.json")
    out = tmp / "run"
    run_sweep(SweepConfig(dataset="gsm8k-train", limit=LIMIT, models=("fake",), backend=f"scripted:{table}",
                          strategies=("self-consistency:n_samples=4",), budgets=(4,)), out)
    return out


def test_chains_come_back_with_their_prompt_and_grade(run: Path):
    rc = chains_from_run(run)
    assert (rc.model, rc.dataset, rc.fingerprint) == ("fake", "gsm8k-train", "scripted:1000000")
    assert len(rc.chains) == 4 * LIMIT and len({c.problem_id for c in rc.chains}) == LIMIT
    assert all(c.correct == ("First add" in c.text) for c in rc.chains)  # the store's grades
    first = rc.chains[0]
    assert first.messages[0].role == "system" and first.messages[-1].role == "user"  # the sweep's own prompt


def test_train_orm_saves_a_head_with_its_provenance(run: Path, tmp_path: Path):
    out = tmp_path / "orm.json"
    cache = FeatureCache(tmp_path / "f.sqlite")
    backend = ScriptedBackend(hidden_fn=marker, n_embd=4)
    meta = train_orm(backend, [chains_from_run(run)], out, cache=cache, cfg=FAST,
                     views=[(View.CHAIN,), (View.QUESTION,), (View.CHAIN, View.QUESTION)])
    fitted = meta["fitted_on"]
    assert fitted["model"] == "scripted:1000000" and fitted["chains"] == 4 * LIMIT and fitted["problems"] == LIMIT
    assert len(fitted["split"]["heldout_problems"]) == 3  # a quarter of 12, by problem
    assert meta["heldout_auroc"] == 1.0 and set(meta["view_comparison"]) >= {"chain", "question", "chain+question"}
    assert [p["problems"] for p in meta["learning_curve"]] == [4, 9]
    loaded = TrainedORM.load(out, backend=backend)
    assert loaded.metadata["fitted_on"] == fitted
    made = len(backend.hidden_requests)
    train_orm(backend, [chains_from_run(run)], tmp_path / "again.json", cache=cache, cfg=FAST, views=[(View.CHAIN,)])
    assert len(backend.hidden_requests) == made  # every feature came from the cache


def test_an_evaluation_set_is_never_fitted_on(run: Path):
    rc = chains_from_run(run)
    test_set = type(rc)(rc.run, rc.model, rc.fingerprint, "gsm8k", rc.dataset_sha256, rc.chains)
    with pytest.raises(ValueError, match="an evaluation set"):
        merge_runs([test_set], "scripted:1000000")
    with pytest.raises(ValueError, match="sampled by model scripted:1000000"):
        merge_runs([rc], "llamacpp:other")


def test_orm_select_reproduces_the_stored_vote_and_scores_every_selector(run: Path, tmp_path: Path):
    """The fake's features separate right from wrong chains, so ORM best-of-k is pass@k; majority is the store's
    own self-consistency units."""
    orm = tmp_path / "orm.json"
    cache = tmp_path / "f.sqlite"
    train_orm(ScriptedBackend(hidden_fn=marker, n_embd=4), [chains_from_run(run)], orm, cache=FeatureCache(cache),
              cfg=FAST, views=[(View.CHAIN,)])
    out = tmp_path / "select.json"
    bench = load_bench("orm_select")
    assert bench.main([str(run), "--orm", str(orm), "--cache", str(cache), "--train-run", str(run), "--ks", "2,4",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    stored = dict(sqlite3.connect(run / "results.sqlite").execute(
        "SELECT problem_id, correct FROM units WHERE budget = 4 ORDER BY problem_id").fetchall())
    assert res["per_problem"]["4"]["majority"] == pytest.approx([stored[k] for k in sorted(stored)])
    at4 = res["by_k"]["4"]["selectors"]
    assert at4["orm-best"]["accuracy"] == pytest.approx(at4["pass@k"]["accuracy"])
    assert at4["orm-best"]["vs_majority"]["diff"] >= 0
    assert at4["orm-learned"]["accuracy"] == pytest.approx(at4["pass@k"]["accuracy"])  # a right answer is found
    assert res["orm_auroc_on_these_chains"] == 1.0 and res["alpha"]["chosen"] in bench.ALPHAS
    cost = res["by_k"]["4"]["cost_per_problem"]
    assert cost["verifier_tokens"] > 0 and cost["generated_tokens"] > 0
    assert np.isclose(res["by_k"]["2"]["cost_per_problem"]["verifier_tokens"], cost["verifier_tokens"] / 2)


def test_draw_chains_runs_the_sweep_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The chains are drawn by the sweep harness into a run folder (one self-consistency job per problem at K); a
    second call finds every job stored and generates nothing."""
    table = train_table(tmp_path / "table.json")
    made: list[ScriptedBackend] = []

    def load(model: str, **kw: object) -> ScriptedBackend:
        made.append(scripted_backend(table))
        return made[-1]

    monkeypatch.setattr(thinkscale.backends, "load_backend", load)
    out = tmp_path / "drawn"
    draw_chains(out, model="fake", data="gsm8k-train", problems=4, samples=3)
    rc = chains_from_run(out)
    assert len(rc.chains) == 12 and rc.sampler == "self-consistency:n_samples=3" and made[0].requests
    draw_chains(out, model="fake", data="gsm8k-train", problems=4, samples=3)
    assert all(not b.requests for b in made[1:])


def test_train_orm_command_on_a_stored_run(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = ScriptedBackend(hidden_fn=marker, n_embd=4)
    monkeypatch.setattr(thinkscale.backends, "load_backend", lambda model, **kw: fake)
    out, curve = tmp_path / "orm.json", tmp_path / "curve.json"
    r = CliRunner().invoke(app, ["train", "orm", "--run", str(run), "--out", str(out), "--views", "chain",
                                 "--curve", str(curve)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["heldout_auroc"] == 1.0 and summary["fitted_on"]["chains"] == 4 * LIMIT
    written = json.loads(curve.read_text())
    assert written["command"].startswith("thinkscale train orm --run") and written["learning_curve"]
    assert TrainedORM.load(out, backend=fake).spec.views == (View.CHAIN,)
    bad = CliRunner().invoke(app, ["train", "orm", "--run", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 1 and "is not a run folder" in bad.output
    bad = CliRunner().invoke(app, ["train", "orm", "--run", str(run), "--out", str(out), "--views", "chain+nope"])
    assert bad.exit_code == 2 and "'nope' is not a valid View" in bad.output
    for data, why in (("nope", "unknown dataset; give one of"), ("gsm8k", "an evaluation set")):
        bad = CliRunner().invoke(app, ["train", "orm", "--data", data, "--out", str(out)])
        assert bad.exit_code == 2 and why in bad.output and "gsm8k-train" in bad.output


def _trained_on_the_fake(run: Path, tmp_path: Path) -> tuple[ScriptedBackend, FeatureCache, dict, TrainedORM]:
    """An ORM trained on ``run``'s chains with the fake's hidden states (chain view), its feature cache, metadata."""
    backend = ScriptedBackend(hidden_fn=marker, n_embd=4)
    cache = FeatureCache(tmp_path / "f.sqlite")
    meta = train_orm(backend, [chains_from_run(run)], tmp_path / "orm.json", cache=cache, cfg=FAST,
                     views=[(View.CHAIN,)])
    return backend, cache, meta, TrainedORM.load(tmp_path / "orm.json", backend=backend)


def test_cross_fitting_scores_each_training_problem_with_a_head_fitted_without_it(run: Path, tmp_path: Path):
    """The ORM's 9 training problems are dealt into 3 folds, each scored by a head fitted on the other 6; its 3
    held-out problems keep the shipped head (it never saw them); every feature comes from the cache."""
    from thinkscale.policy.orm_fit import cross_fit_orm
    from thinkscale.types import Candidate, Ledger, Problem

    backend, cache, meta, base = _trained_on_the_fake(run, tmp_path)
    made = len(backend.hidden_requests)
    crossed = cross_fit_orm(base, cache, folds=3)
    assert len(backend.hidden_requests) == made
    train_ids = set(meta["fitted_on"]["split"]["train_problems"])
    held = set(meta["fitted_on"]["split"]["heldout_problems"])
    assert set(crossed.heads) == train_ids and not held & set(crossed.heads)
    folds = {id(h): h for h in crossed.heads.values()}
    assert len(folds) == 3
    without = [set(h.metadata["cross_fit"]["without"]) for h in folds.values()]
    assert set().union(*without) == train_ids and sum(map(len, without)) == len(train_ids)  # a partition
    for pid, head in crossed.heads.items():
        assert pid in head.metadata["cross_fit"]["without"] and head.head is not base.head
    rc = chains_from_run(run)
    chain = next(c for c in rc.chains if c.problem_id in train_ids)
    problem = Problem(chain.problem_id, chain.messages)
    cand = [Candidate(text=chain.text, answer=chain.answer)]
    assert crossed.score(problem, cand, ledger=Ledger()) == crossed.heads[chain.problem_id].score(
        problem, cand, ledger=Ledger())
    other = next(c for c in rc.chains if c.problem_id in held)
    problem = Problem(other.problem_id, other.messages)
    cand = [Candidate(text=other.text, answer=other.answer)]
    assert crossed.score(problem, cand, ledger=Ledger()) == base.score(problem, cand, ledger=Ledger())
    assert crossed.metadata["problems_refitted"] == 9 and crossed.metadata["folds"] == 3


def test_a_deferred_cross_fit_is_made_on_its_first_score(run: Path, tmp_path: Path) -> None:
    """Built without touching the model or the features (a replay whose scores are all cached needs neither); its
    first score makes the cross-fit, and it scores exactly as cross_fit_orm's; bad metadata is refused up front."""
    from thinkscale.policy.orm_fit import DeferredCrossFit, cross_fit_orm
    from thinkscale.types import Candidate, Ledger, Problem

    backend, cache, meta, base = _trained_on_the_fake(run, tmp_path)
    made = len(backend.hidden_requests)
    empty = FeatureCache(tmp_path / "empty.sqlite")
    deferred = DeferredCrossFit(base, empty, 3)
    assert len(backend.hidden_requests) == made and deferred._made is None
    assert deferred.fitted_on.seed == meta["fitted_on"]["split"]["seed"]
    assert deferred.fitted_on.train_problems == set(meta["fitted_on"]["split"]["train_problems"])
    chain = next(c for c in chains_from_run(run).chains if c.problem_id in deferred.fitted_on.train_problems)
    problem, cand = Problem(chain.problem_id, chain.messages), [Candidate(text=chain.text, answer=chain.answer)]
    got = DeferredCrossFit(base, cache, 3).score(problem, cand, ledger=Ledger())
    assert got == cross_fit_orm(base, cache, folds=3).score(problem, cand, ledger=Ledger())
    bare = TrainedORM(backend=backend, head=base.head, spec=base.spec, metadata={})
    with pytest.raises(ValueError, match="does not say what it was fitted on"):
        DeferredCrossFit(bare, cache, 3)
