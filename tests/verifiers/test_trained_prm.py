"""The trained PRM on the scripted fake: Math-Shepherd labels, features, the head, AUROC, files, training."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.types import Candidate, GenRequest, Ledger, Problem, Role
from thinkscale.verifiers import build_verifier
from thinkscale.verifiers.base import VerifierError
from thinkscale.verifiers.prm_train import (
    DEFAULT_DATA_DIR,
    LabelConfig,
    dataset_path,
    label_problem,
    load_rows,
    seeded_subset,
    step_features,
    train_prm,
)
from thinkscale.verifiers.trained_prm import LogisticHead, TrainedPRM, auroc

PROBLEM = Problem.from_text("Say the number 12.", id="p0", reference="12")
SOLUTION = "Step one is 2 + 2 = 4.\n\nStep two is 4 * 3 = 12.\n\nSo the answer is \\boxed{12}."


def fake_policy(solutions: list[str], rollouts: dict[str, list[str]]):
    """Script entries as a function of the request: solutions in order for a fresh prompt; for a continued
    assistant turn, the next rollout listed under the key its last step starts with (one per sample)."""
    queue = list(solutions)
    served: dict[str, int] = {}

    def entry(req: GenRequest, j: int) -> str:
        if not req.continue_final:
            return queue.pop(0)
        last = req.messages[-1].content.strip().split("\n\n")[-1]
        key = next(k for k in rollouts if last.startswith(k))
        i = served.get(key, 0)
        served[key] = i + 1
        return rollouts[key][i]

    return entry


def test_a_step_is_labelled_by_the_fraction_of_rollouts_reaching_the_answer():
    """Step 1: 3 of 4 rollouts box 12 -> 0.75. Step 2: 1 of 4 -> 0.25. The last step is the solution's own answer
    (12: right -> 1.0) and needs no rollout."""
    policy = fake_policy([SOLUTION], {
        "Step one": ["\\boxed{12}", "\\boxed{12}", "so \\boxed{12}", "\\boxed{13}"],
        "Step two": ["\\boxed{11}", "\\boxed{12}", "\\boxed{10}", "\\boxed{9}"],
    })
    fake = ScriptedBackend([policy] * 9)
    ledger = Ledger()
    cfg = LabelConfig(solutions_per_problem=1, rollouts=4, max_rollout_steps=None, system=None)
    steps = label_problem(PROBLEM, fake, cfg, ledger=ledger)
    assert [(s.step, s.label, s.correct, s.rollouts, s.is_final) for s in steps] == [
        (0, 0.75, 3, 4, False), (1, 0.25, 1, 4, False), (2, 1.0, 1, 0, True)]
    assert steps[1].prefix == "Step one is 2 + 2 = 4.\n\nStep two is 4 * 3 = 12."
    assert all(s.final_correct and s.n_steps == 3 for s in steps)
    # two batched generate calls (solutions, then all rollouts), continued from the prefix + blank line
    assert fake.calls == 2 and fake.remaining == 0
    rollout_reqs = fake.requests[1:]
    assert [r.messages[-1].content for r in rollout_reqs] == [
        "Step one is 2 + 2 = 4.\n\n", "Step one is 2 + 2 = 4.\n\nStep two is 4 * 3 = 12.\n\n"]
    assert all(r.continue_final and r.n == 4 for r in rollout_reqs)
    # all charged to the generator: 1 solution + 2 rollout requests; 8 + 8 + 5 solution words, 5 + 4 rollout words
    gen = ledger.total(Role.GENERATOR)
    assert gen.calls == 3 and gen.completion_tokens == 21 + 9 and set(ledger.by_role()) == {Role.GENERATOR}


def test_label_hand_computed_with_the_bare_number_rule():
    """'12 here' has no boxed answer: extraction falls back to the last number of prefix + rollout, which is 12.
    So step 2's label is 2 of 4 = 0.5, not 0.25; this pins that behaviour down."""
    policy = fake_policy([SOLUTION], {
        "Step one": ["\\boxed{12}"] * 3 + ["\\boxed{13}"],
        "Step two": ["\\boxed{11}", "\\boxed{12}", "12 here", "\\boxed{9}"],
    })
    fake = ScriptedBackend([policy] * 9)
    cfg = LabelConfig(solutions_per_problem=1, rollouts=4, max_rollout_steps=None, system=None)
    steps = label_problem(PROBLEM, fake, cfg, ledger=Ledger())
    assert [s.label for s in steps] == [0.75, 0.5, 1.0]


def test_max_rollout_steps_caps_the_cost_and_the_choice_is_seeded():
    long = "\n\n".join(f"Step {i} says {i}." for i in range(6)) + "\n\n\\boxed{7}"
    def run(seed):
        policy = fake_policy([long], {f"Step {i} says {i}.": ["\\boxed{12}"] * 2 for i in range(6)})
        fake = ScriptedBackend([policy] * 5)
        return label_problem(PROBLEM, fake, LabelConfig(solutions_per_problem=1, rollouts=2, max_rollout_steps=2,
                                                       system=None, seed=seed), ledger=Ledger())

    steps = run(0)
    assert len(steps) == 3 and sum(s.is_final for s in steps) == 1  # 2 rollout steps + the final step
    assert steps[-1].label == 0.0 and not steps[-1].final_correct  # the solution boxed 7, the reference is 12
    assert [s.step for s in run(0)] == [s.step for s in steps]  # the same seed labels the same steps
    assert len({tuple(s.step for s in run(seed)) for seed in range(8)}) > 1  # other seeds pick others


def test_feature_extraction_gives_one_row_per_step_and_charges_the_verifier():
    fake = ScriptedBackend([fake_policy([SOLUTION], {"Step one": ["\\boxed{12}"] * 4,
                                                     "Step two": ["\\boxed{12}"] * 4})] * 9, n_embd=5)
    cfg = LabelConfig(solutions_per_problem=1, rollouts=4, max_rollout_steps=None, system=None)
    steps = label_problem(PROBLEM, fake, cfg, ledger=Ledger())
    ledger = Ledger()
    x = step_features(PROBLEM, steps, fake, ledger=ledger)
    assert x.shape == (3, 5) and x.dtype == np.float32
    assert [r.continuation for r in fake.hidden_requests] == [s.prefix for s in steps]
    assert all(r.messages == PROBLEM.messages for r in fake.hidden_requests)
    assert set(ledger.by_role()) == {Role.VERIFIER} and ledger.total(Role.VERIFIER).calls == 3
    again = step_features(PROBLEM, steps, fake, ledger=Ledger())
    assert np.array_equal(x, again)  # same text, same vector


def test_auroc_matches_sklearn_on_a_fixed_dataset_with_ties():
    from sklearn.metrics import roc_auc_score

    y = [0, 0, 1, 1, 0, 1, 1, 0, 1, 0]
    s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.05, 0.6, 0.7]
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auroc([0, 1], [0.2, 0.9]) == 1.0 and auroc([1, 0], [0.2, 0.9]) == 0.0
    assert auroc([0, 1, 0, 1], [0.5] * 4) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auroc([1, 1], [0.1, 0.2])


def test_logistic_head_fits_soft_labels_and_predicts_in_0_1():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    p = 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))
    head = LogisticHead.fit(x, p, c=10.0)
    pred = head.predict(x)
    assert pred.shape == (200,) and np.all((pred > 0) & (pred < 1))
    assert np.corrcoef(pred, p)[0, 1] > 0.99
    with pytest.raises(ValueError, match="one class"):
        LogisticHead.fit(x, np.zeros(200))
    with pytest.raises(VerifierError, match="3 features"):
        head.predict(np.zeros((1, 4)))


def test_save_and_load_round_trip_keeps_head_and_metadata(tmp_path):
    fake = ScriptedBackend(n_embd=3)
    head = LogisticHead(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5]), np.array([0.3, -0.2, 0.1]), -0.4, 0.1)
    meta = {"model": {"fingerprint": fake.info().fingerprint}, "feature_dim": 3, "heldout_auroc": 0.71}
    TrainedPRM(backend=fake, head=head, metadata=meta, joiner="\n").save(tmp_path / "prm.json")
    loaded = TrainedPRM.load(tmp_path / "prm.json", fake)
    assert loaded.metadata == meta and loaded.joiner == "\n"
    x = np.random.default_rng(1).normal(size=(4, 3))
    assert np.allclose(loaded.head.predict(x), head.predict(x))
    assert json.loads((tmp_path / "prm.json").read_text())["format"] == "thinkscale-prm/1"
    other = ScriptedBackend(n_params=7, n_embd=3)
    with pytest.raises(VerifierError, match="trained on the hidden states of model"):
        TrainedPRM.load(tmp_path / "prm.json", other)
    with pytest.raises(VerifierError, match="expects 3 features"):
        TrainedPRM.load(tmp_path / "prm.json", ScriptedBackend(n_embd=4))
    with pytest.raises(VerifierError, match="train one with"):
        TrainedPRM.load(tmp_path / "missing.json", fake)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(VerifierError, match="not a thinkscale-prm/1 file"):
        TrainedPRM.load(tmp_path / "bad.json", fake)


def test_trained_prm_scores_every_step_in_one_batch_and_charges_the_verifier(tmp_path):
    def hidden(prompt: str, cont: str) -> list[float]:
        return [cont.count("good") - cont.count("bad"), 0.0]

    fake = ScriptedBackend(n_embd=2, hidden_fn=hidden)
    head = LogisticHead(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 0.0)
    prm = TrainedPRM(backend=fake, head=head)
    ledger = Ledger()
    cands = [Candidate(text="good\n\ngood\n\nbad", answer="1"), Candidate(text="bad", answer="2")]
    scores = prm.score(PROBLEM, cands, ledger=ledger)
    s = 1 / (1 + np.exp(-1.0))
    assert scores == [(pytest.approx(s), pytest.approx(1 / (1 + np.exp(-2.0))), pytest.approx(s)),
                      (pytest.approx(1 - s),)]
    assert [r.continuation for r in fake.hidden_requests] == ["good", "good\n\ngood", "good\n\ngood\n\nbad", "bad"]
    assert set(ledger.by_role()) == {Role.VERIFIER} and ledger.total(Role.VERIFIER).calls == 4
    # and through the registry, from a file
    prm.save(tmp_path / "p.json")
    v = build_verifier("prm", path=tmp_path / "p.json", backend=fake, check_model=False)
    assert v.score(PROBLEM, cands[1:], ledger=Ledger()) == [(pytest.approx(1 - s),)]


def rows(n: int) -> list[dict]:
    return [{"id": f"t-{i}", "problem": f"Say the number {10 + i}.", "answer": str(10 + i)} for i in range(n)]


def good_bad_policy():
    """Solution 0 is 'good' and right, solution 1 'bad' and wrong; rollouts from a bad prefix go wrong."""

    def entry(req: GenRequest, j: int) -> str:
        user = next(m.content for m in req.messages if m.role == "user")
        answer = int(re.search(r"\d+", user).group())  # type: ignore[union-attr]
        if not req.continue_final:
            word, final = ("good", answer) if j == 0 else ("bad", answer + 1)
            return f"A {word} start.\n\nA {word} middle.\n\nSo \\boxed{{{final}}}."
        return f"\\boxed{{{answer + 5 if 'bad' in req.messages[-1].content else answer}}}"

    return entry


def test_train_prm_end_to_end_on_the_fake(tmp_path):
    """8 problems, 2 held out. Features say good minus bad, labels agree: held-out AUROC is 1. The file holds the
    metadata; a rerun resumes from the steps file without sampling again."""
    fake = ScriptedBackend([good_bad_policy()] * 200, n_embd=2,
                           hidden_fn=lambda p, c: [c.count("good") - c.count("bad"), len(c) / 100])
    cfg = LabelConfig(solutions_per_problem=2, rollouts=2, max_rollout_steps=None, seed=3)
    seen = []
    meta = train_prm(fake, rows(8), tmp_path / "prm.json", cfg=cfg, heldout_fraction=0.25, c=1.0,
                     data={"path": "inline"}, progress=lambda d, t, pid, s: seen.append((d, t)))
    assert seen == [(i, 8) for i in range(1, 9)]
    assert meta["heldout_auroc"] == 1.0 and meta["metrics"]["heldout"]["final_auroc"] == 1.0
    split = meta["split"]
    assert len(split["heldout_problems"]) == 2 and len(split["train_problems"]) == 6
    assert not set(split["heldout_problems"]) & set(split["train_problems"])  # split by problem
    assert split["train_steps"] == 6 * 2 * 3 and split["heldout_steps"] == 2 * 2 * 3
    stats = meta["label_stats"]["all"]
    assert stats["steps"] == 48 and stats["final_steps"] == 16 and stats["mean_label"] == 0.5
    assert stats["label_histogram"] == {"0": 24, "1": 24}
    assert meta["feature_dim"] == 2 and meta["model"]["fingerprint"] == fake.info().fingerprint
    assert meta["labelling_cost"]["by_role"]["generator"]["calls"] == 8 * (1 + 4)
    assert meta["labelling_cost"]["by_role"]["verifier"]["calls"] == 48
    prm = TrainedPRM.load(tmp_path / "prm.json", fake)
    good, bad = prm.score(Problem.from_text("Say the number 3."), [
        Candidate(text="A good start.\n\nSo \\boxed{3}.", answer="3"),
        Candidate(text="A bad start.", answer=None)], ledger=Ledger())
    assert min(good) > 0.5 > max(bad)
    # resume: every problem is in the steps file, so nothing is generated again
    calls = fake.calls
    meta2 = train_prm(fake, rows(8), tmp_path / "prm.json", cfg=cfg, heldout_fraction=0.25, c=1.0)
    assert fake.calls == calls and meta2["heldout_auroc"] == 1.0
    assert meta2["labelled_this_run"]["problems"] == 0
    assert [r["problems"] for r in meta2["labelling_runs"]] == [8]  # the first run's wall time is kept
    with pytest.raises(ValueError, match="other settings"):
        train_prm(fake, rows(8), tmp_path / "prm.json", cfg=LabelConfig(rollouts=3))


def test_dataset_path_and_subset(tmp_path, monkeypatch):
    f = tmp_path / "mini.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows(5)))
    assert dataset_path(f) == f
    # no THINKSCALE_DATA_DIR: a name is a dataset shipped in the package
    monkeypatch.delenv("THINKSCALE_DATA_DIR", raising=False)
    shipped = dataset_path("gsm8k_train")
    assert shipped == DEFAULT_DATA_DIR / "gsm8k_train.jsonl" and len(load_rows(shipped)) == 7473
    monkeypatch.setenv("THINKSCALE_DATA_DIR", str(tmp_path))
    assert dataset_path("mini") == f
    with pytest.raises(FileNotFoundError, match="gsm8k_nope.jsonl"):
        dataset_path("gsm8k_nope")
    loaded = load_rows(f)
    a, b = seeded_subset(loaded, 3, 0), seeded_subset(loaded, 3, 0)
    assert a == b and len({r["id"] for r in a}) == 3
    with pytest.raises(ValueError, match="asked for 6"):
        seeded_subset(loaded, 6, 0)


class Locked(ScriptedBackend):
    """The fake made thread-safe (the real backend is), for labelling several problems at once."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        import threading

        self._lock = threading.Lock()

    def generate(self, requests):
        with self._lock:
            return super().generate(requests)

    def hidden_states(self, requests):
        with self._lock:
            return super().hidden_states(requests)


def test_concurrent_labelling_gives_the_same_prm(tmp_path):
    def make():
        return Locked([good_bad_policy()] * 200, n_embd=2,
                      hidden_fn=lambda p, c: [c.count("good") - c.count("bad"), len(c) / 100])

    cfg = LabelConfig(solutions_per_problem=2, rollouts=2, max_rollout_steps=1, seed=5)
    one = train_prm(make(), rows(6), tmp_path / "a.json", cfg=cfg, c=1.0)
    three = train_prm(make(), rows(6), tmp_path / "b.json", cfg=cfg, c=1.0, workers=3)
    assert three["labelled_this_run"]["workers"] == 3 and three["labelled_this_run"]["problems"] == 6
    for key in ("split", "label_stats", "metrics", "heldout_auroc"):
        assert one[key] == three[key], key
    a = json.loads((tmp_path / "a.json").read_text())["head"]
    b = json.loads((tmp_path / "b.json").read_text())["head"]
    assert np.allclose(a["coef"], b["coef"]) and a["intercept"] == pytest.approx(b["intercept"])
    with pytest.raises(ValueError, match="workers"):
        train_prm(make(), rows(6), tmp_path / "c.json", cfg=cfg, workers=0)
