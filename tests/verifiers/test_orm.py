"""The trained outcome verifier on the scripted fake: the feature views' requests, scoring with a head, what it is
charged, files and the model check, the packaged head, fitting (cache, CV, calibration, learning curve)."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from tests.strategies.helpers import PROBLEM
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.run import execute
from thinkscale.strategies.weighted_sc import WeightedSelfConsistency
from thinkscale.types import Budget, Candidate, Ledger, Message, Role, Usage
from thinkscale.verifiers import build_verifier
from thinkscale.verifiers.base import VerifierError
from thinkscale.verifiers.orm import FeatureSpec, TrainedORM, View, step_ends
from thinkscale.verifiers.orm_train import (
    FeatureCache,
    FitConfig,
    LabelledChain,
    chain_features,
    fit_calibrated,
    fit_views,
    learning_curve,
    split_problems,
    stack_views,
)
from thinkscale.verifiers.trained_prm import LogisticHead

RIGHT = "First add 2 and 3.\n\nThen the answer is \\boxed{5}."
WRONG = "Guess wildly.\n\n\n\nMaybe \\boxed{7}."


def marker(prompt: str, continuation: str) -> list[float]:
    """Coordinate 0 says whether the text read so far holds the right chain's first step (+1) or not (-1); the rest
    are seeded noise of the text, so a head must find coordinate 0."""
    text = prompt + continuation
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))
    return [1.0 if "First add" in text else -1.0, *rng.normal(0, 1, 3)]


def fake(**kw: object) -> ScriptedBackend:
    return ScriptedBackend(hidden_fn=marker, n_embd=4, **kw)  # type: ignore[arg-type]


def head_on_coord0(dim: int, weight: float = 4.0) -> LogisticHead:
    """sigmoid(weight * x0): 0.982 for the right chain's +1, 0.018 for the wrong one's -1."""
    coef = np.zeros(dim)
    coef[0] = weight
    return LogisticHead(np.zeros(dim), np.ones(dim), coef, 0.0)


def test_step_ends_cut_the_text_as_generated_and_keep_the_last():
    """RIGHT has one blank line at 18 ("First add 2 and 3." is 18 characters) and ends at its length; the run of
    blank lines in WRONG is one separator (ends at 13 and 32)."""
    assert step_ends(RIGHT) == [18, len(RIGHT)]
    assert step_ends(WRONG) == [13, len(WRONG)]
    assert step_ends("") == [0]
    many = "\n\n".join(f"s{i}" for i in range(40))
    ends = step_ends(many, max_steps=5)
    assert len(ends) == 5 and ends[-1] == len(many) and ends[0] == 2


def test_views_build_the_requests_training_reads():
    msgs = PROBLEM.messages
    spec = FeatureSpec(views=(View.CHAIN, View.STEPS, View.QUESTION))
    chain, step1, step2, question = spec.requests(msgs, RIGHT)
    assert chain.messages == msgs and chain.continuation == RIGHT
    assert (step1.continuation, step2.continuation) == (RIGHT[:18], RIGHT)  # the last step end is the chain itself
    assert question.messages == (*msgs, Message("assistant", RIGHT), Message("user", spec.question))
    assert question.continuation == spec.lead
    assert spec.requests(msgs, "")[0].continuation == " "  # an empty chain still has a request


def test_rows_average_the_step_views_and_keep_view_order():
    """Two texts, views (steps, chain): RIGHT has 2 step ends, WRONG 2; rows are [mean(steps), chain]."""
    spec = FeatureSpec(views=(View.STEPS, View.CHAIN))
    vecs = np.array([[1.0], [3.0], [9.0], [10.0], [20.0], [30.0]])  # RIGHT: s1 s2 chain; WRONG: s1 s2 chain
    assert spec.rows(vecs, [RIGHT, WRONG]).tolist() == [[2.0, 9.0], [15.0, 30.0]]
    with pytest.raises(VerifierError, match="expected 6 hidden states"):
        spec.rows(vecs[:5], [RIGHT, WRONG])


def orm(backend: ScriptedBackend, views: tuple[View, ...] = (View.CHAIN, View.QUESTION)) -> TrainedORM:
    meta = {"model": {"fingerprint": backend.info().fingerprint}, "feature_dim": 4 * len(views)}
    return TrainedORM(backend=backend, head=head_on_coord0(4 * len(views)), spec=FeatureSpec(views=views),
                      metadata=meta)


def test_score_is_the_heads_probability_and_every_call_is_charged_to_the_verifier():
    b = fake()
    v = orm(b)
    ledger = Ledger()
    cands = [Candidate(text=RIGHT, answer="5"), Candidate(text=WRONG, answer="7")]
    scores = v.score(PROBLEM, cands, ledger=ledger)
    assert scores == [pytest.approx((1 / (1 + np.exp(-4.0)),)), pytest.approx((1 / (1 + np.exp(4.0)),))]
    assert len(b.hidden_requests) == v.max_calls(cands) == 4  # chain + question per candidate, one batch
    spent = ledger.total(Role.VERIFIER)
    assert spent.calls == 4 and spent.prompt_tokens and ledger.total(Role.GENERATOR).calls == 0
    assert v.score(PROBLEM, [], ledger=ledger) == []


def test_max_calls_counts_step_requests():
    """views (chain, steps): RIGHT 1 + 2, WRONG 1 + 2."""
    v = orm(fake(), (View.CHAIN, View.STEPS))
    assert v.max_calls([Candidate(text=RIGHT, answer="5"), Candidate(text=WRONG, answer="7")]) == 6


def test_saved_orm_loads_only_on_its_model(tmp_path):
    path = tmp_path / "orm.json"
    orm(fake()).save(path)
    loaded = build_verifier("orm", path=str(path), backend=fake())
    assert isinstance(loaded, TrainedORM) and loaded.spec.views == (View.CHAIN, View.QUESTION)
    with pytest.raises(VerifierError, match="trained on the hidden states of model 'scripted:1000000'"):
        TrainedORM.load(path, backend=fake(n_params=7))
    with pytest.raises(VerifierError, match="expects 8 features per candidate, the backend gives 2 x 3"):
        TrainedORM.load(path, backend=ScriptedBackend(n_embd=3))
    with pytest.raises(VerifierError, match="thinkscale train orm"):
        TrainedORM.load(tmp_path / "missing.json", backend=fake())


def test_weighted_sc_with_the_orm_picks_the_right_minority_answer(tmp_path):
    """Chains: WRONG, WRONG, RIGHT. The vote says 7 (2 to 1); the ORM's weights say 5 (0.982 > 2 x 0.018)."""
    path = tmp_path / "orm.json"
    b = fake()
    orm(b).save(path)
    b.enqueue(WRONG, WRONG, RIGHT)
    result = execute(WeightedSelfConsistency(n_samples=3, verifier="orm", verifier_path=str(path)), PROBLEM, b,
                     Budget(max_calls=7), rng=random.Random(0))
    assert result.answer == "5" and result.stop_reason == "done"
    assert result.ledger.total(Role.VERIFIER).calls == 6


def test_packaged_head_has_its_provenance_and_refuses_another_model():
    payload = TrainedORM.read()
    meta = payload["metadata"]
    assert payload["format"] == "thinkscale-orm/1"
    assert meta["fitted_on"]["model"] == meta["model"]["fingerprint"]
    assert meta["fitted_on"]["problems"] >= 2 and meta["fitted_on"]["chains"] > 0
    assert 0.5 < meta["heldout_auroc"] <= 1 and meta["learning_curve"]
    assert all("gsm8k-train" in d for d in meta["fitted_on"]["data"])  # fitted on training problems only
    with pytest.raises(VerifierError, match="features do not transfer between models"):
        build_verifier("orm", backend=fake())


# ---------------------------------------------------------------------- fitting

def chains(n_problems: int, per_problem: int = 4) -> list[LabelledChain]:
    """Problem i: chain 0 right, the rest wrong (a 1-in-``per_problem`` positive rate)."""
    out = []
    for i in range(n_problems):
        msgs = (Message("user", f"Problem {i}: what is 2 + 3?"),)
        for j in range(per_problem):
            right = j == 0
            out.append(LabelledChain(f"p{i:02d}", j, msgs, RIGHT if right else WRONG.replace("7", str(7 + j)),
                                     "5" if right else str(7 + j), right))
    return out


def test_features_are_cached_so_a_second_pass_computes_nothing(tmp_path):
    data = chains(3)
    b = fake()
    cache = FeatureCache(tmp_path / "f.sqlite")
    first, costs = chain_features(b, data, [View.QUESTION, View.CHAIN], cache)
    made = len(b.hidden_requests)
    assert made == 2 * len(data) and len(cache) == made  # one request per view per chain, one call each
    again, costs2 = chain_features(b, data, [View.CHAIN, View.QUESTION], cache)
    assert len(b.hidden_requests) == made  # all from the cache, with the cost recorded when computed
    assert all(np.array_equal(first[v], again[v]) for v in first) and costs == costs2
    assert all(isinstance(u, Usage) and u.calls == 1 for u in costs[View.CHAIN])
    assert list(first) == [View.CHAIN, View.QUESTION]  # computed chain first: the question reuses its KV
    steps, _ = chain_features(b, data, [View.STEPS], cache)
    # per problem two new step ends (RIGHT's and WRONG's first step: the three wrong chains share theirs); each
    # chain's last step end is the chain itself, cached
    assert len(b.hidden_requests) == made + 2 * 3
    assert steps[View.STEPS].shape == (len(data), 4)


def test_fit_finds_the_informative_view_and_is_calibrated(tmp_path):
    """Coordinate 0 separates right from wrong chains perfectly in every view: held-out AUROC 1; Platt scaling makes
    the mean probability on held-out chains near their positive rate (1/4)."""
    data = chains(16)
    per_view, _ = chain_features(fake(), data, list(View), FeatureCache(tmp_path / "f.sqlite"))
    cfg = FitConfig(folds=4, curve_sizes=(4,), c_grid=(0.1, 1.0), bootstrap_reps=20)
    best, head, results = fit_views(per_view, data, [(View.CHAIN,), (View.STEPS, View.QUESTION)], cfg)
    assert best in ((View.CHAIN,), (View.STEPS, View.QUESTION))
    name = "+".join(best)
    assert results[name]["heldout"]["auroc"] == 1.0 and results[name]["cv_auroc"] == 1.0
    assert results[name]["heldout"]["mean_p"] == pytest.approx(0.25, abs=0.1)
    train_ids, held_ids = split_problems(data, cfg)
    assert len(held_ids) == 4 and not set(train_ids) & set(held_ids)
    y = np.array([c.correct for c in data], dtype=float)
    curve = learning_curve(stack_views(per_view, best), y, [c.problem_id for c in data], train_ids, held_ids, cfg)
    assert [p["problems"] for p in curve] == [4, 12] and all(p["heldout_auroc"] == 1.0 for p in curve)
    assert head.dim == 4 * len(best)


def test_fit_refuses_one_class():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="all 4 training chains are wrong"):
        fit_calibrated(x, np.zeros(4), ["a", "a", "b", "b"], FitConfig())
