"""Rescoring a stored run with other selectors (``thinkscale select``), on runs the scripted fake drew: majority
reproduces the store's own self-consistency units, a verifier that prefers the right chains beats it, scores are
computed once per chain, and bad input fails with exit 2."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.eval.conftest import write_table
from tests.verifiers.test_orm import fake, head_on_coord0, marker, orm
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.eval import select as select_mod
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.select import parse_selector, select_run
from thinkscale.verifiers.orm import FeatureSpec, TrainedORM

RIGHT = "First add then multiply"  # write_table's right chain, the only right one of each problem's pool
LIMIT, N = 6, 8


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("select") / "table.json", limit=LIMIT)


@pytest.fixture(scope="module")
def run(table: Path) -> Path:
    """Self-consistency at 2, 4, 8: one 8-chain job per problem, k = 2 and 4 scored from k-subsets. ``max_subsets=5``
    (of C(8, 2) = 28 and C(8, 4) = 70) makes the harness draw the subsets with its per-unit rng, which rescoring
    must draw alike to reproduce the units."""
    out = table.parent / "run"
    run_sweep(SweepConfig(dataset="gsm8k", limit=LIMIT, models=("fake",), backend=f"scripted:{table}",
                          strategies=("self-consistency",), budgets=(2, 4, N), max_subsets=5), out)
    return out


def judge(prompt: str, continuation: str) -> tuple[float, ...]:
    """P(yes)'s logprobs: "Yes" likely after a right chain, "No" after a wrong one: sigmoid(+-2.9) = 0.948 / 0.052."""
    likely = (continuation == "Yes") == (RIGHT in prompt)
    return (-0.1 if likely else -3.0,)


class Factory:
    """Makes the run's model as the scripted fake with ``judge`` scoring, counting how often it is made."""

    def __init__(self, table: Path) -> None:
        self.table, self.made = table, []  # type: ignore[var-annotated]

    def __call__(self, model: str) -> ScriptedBackend:
        self.made.append(scripted_backend(self.table, score_fn=judge))
        return self.made[-1]

    @property
    def score_requests(self) -> int:
        return sum(len(b.score_requests) for b in self.made)


def stored_units(run: Path, k: int) -> list[float]:
    with sqlite3.connect(run / "results.sqlite") as db:
        return [r[0] for r in db.execute("SELECT correct FROM units WHERE strategy = 'self-consistency' AND "
                                         "budget = ? ORDER BY problem_id", (k,))]


def distinct_chains(run: Path) -> int:
    """(problem, text) pairs among the stored chains: the fake's pools repeat texts, and a text is scored once."""
    with sqlite3.connect(run / "results.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT j.problem_id, s.text FROM jobs j JOIN samples s "
                              "USING (job_id))").fetchone()[0])


def test_majority_reproduces_the_stored_self_consistency_units(run: Path) -> None:
    result = select_run(run, [], ks=[2, 4, N], reps=50)
    assert result["selectors"] == ["majority"] and not result["model_loaded"]
    assert result["per_problem"]["problem_ids"] == sorted(result["per_problem"]["problem_ids"])
    for k in (2, 4, N):
        mine = result["per_problem"][str(k)]["majority"]
        assert mine == stored_units(run, k)  # exactly: the same k-subsets, the same estimator
        by_k = result["by_k"][str(k)]
        assert by_k["selectors"]["majority"]["accuracy"] == by_k["stored_self_consistency"]
    assert select_run(run, [], reps=10)["ks"] == [4, N]  # the default: 4, 8, 16 where N = 8 allows
    # the fake's pools make majority wrong or tied on some problems, so the equality above is not 1 == 1
    assert 0 < result["by_k"]["4"]["selectors"]["majority"]["accuracy"] < 1


def test_a_verifier_that_prefers_right_chains_beats_majority(run: Path, table: Path) -> None:
    """P(yes) scores every right chain 0.948 and every wrong one 0.052. Best-of-k then picks a right chain whenever
    the subset has one, and the weighted vote too (0.948 > 7 x 0.052), so at k = N (one subset: all chains) both
    equal pass@N; the tie-break vote is never below the plain vote; and all beat majority overall."""
    sels = [parse_selector(s) for s in ("best:verifier=pyes", "weighted:verifier=pyes", "tiebreak:verifier=pyes")]
    factory = Factory(table)
    result = select_run(run, sels, ks=[4, N], backend=f"scripted:{table}", backend_factory=factory, reps=50)
    assert result["selectors"] == ["majority", "best:verifier=pyes", "weighted:verifier=pyes",
                                   "tiebreak:verifier=pyes"]
    # Yes and No per distinct chain, once: the three share the scores (pools of 2, 3, 4 texts: 18 of 48 chains)
    assert factory.score_requests == 2 * distinct_chains(run) == 2 * 18
    per = result["per_problem"]
    assert per[str(N)]["best:verifier=pyes"] == per[str(N)]["pass@k"] == per[str(N)]["weighted:verifier=pyes"]
    for k in ("4", str(N)):
        assert all(t >= m for t, m in zip(per[k]["tiebreak:verifier=pyes"], per[k]["majority"], strict=True))
        rows = result["by_k"][k]["selectors"]
        for label in ("best:verifier=pyes", "weighted:verifier=pyes"):
            assert rows[label]["accuracy"] > rows["majority"]["accuracy"]
            assert rows[label]["vs_majority"]["diff"] > 0
            assert rows[label]["cost_per_problem"]["verifier_tokens"] > 0
        assert rows["majority"]["cost_per_problem"]["verifier_tokens"] == 0
        assert "vs_majority" not in rows["majority"]


def test_weighted_power_moves_the_vote_from_majority_to_best_of_k(run: Path, table: Path) -> None:
    """Weights score ** power: a tiny power is the plain vote whose ties go to the answer with the higher-scored
    chains (on the fake's two score levels: the tie-break selector), a large one best-of-k (a right chain, 0.948,
    then outweighs any number of wrong ones, 0.052); the label names the power; power 1 is plain weighting."""
    specs = ("best:verifier=pyes", "weighted:verifier=pyes,power=1e-9", "weighted:verifier=pyes,power=50",
             "weighted:verifier=pyes,power=1", "tiebreak:verifier=pyes")
    sels = [parse_selector(s) for s in specs]
    assert [s.label for s in sels] == ["best:verifier=pyes", "weighted:verifier=pyes,power=1e-09",
                                       "weighted:verifier=pyes,power=50", "weighted:verifier=pyes",
                                       "tiebreak:verifier=pyes"]
    assert [parse_selector(s.label) for s in sels] == sels  # a label is a spec that reads back as its selector
    odd = parse_selector("best:verifier=orm,verifier_path=C:\\\\nets\\\\orm.json")  # a backslash survives too
    assert odd.verifier_path == "C:\\nets\\orm.json" and parse_selector(odd.label) == odd
    result = select_run(run, sels, ks=[2, 4], backend=f"scripted:{table}", backend_factory=Factory(table), reps=50)
    for k in ("2", "4"):
        per = result["per_problem"][k]
        assert per["weighted:verifier=pyes,power=1e-09"] == per["tiebreak:verifier=pyes"]
        assert per["weighted:verifier=pyes,power=50"] == per["best:verifier=pyes"]
        # the fake's pools split votes evenly on some problems: a tiny power is not the plain (tie-splitting) vote
        assert per["majority"] != per["tiebreak:verifier=pyes"] and per["majority"] != per["best:verifier=pyes"]


def test_verifier_scores_are_computed_once_per_chain(run: Path, table: Path, tmp_path: Path) -> None:
    """A rerun with the same cache file makes no model at all and reports the same numbers."""
    sels = [parse_selector("weighted:verifier=pyes")]
    first, again = Factory(table), Factory(table)
    a = select_run(run, sels, cache=tmp_path / "scores.sqlite", backend=f"scripted:{table}", backend_factory=first,
                   reps=50)
    b = select_run(run, sels, cache=tmp_path / "scores.sqlite", backend=f"scripted:{table}", backend_factory=again,
                   reps=50)
    assert len(first.made) == 1 and first.score_requests == 2 * distinct_chains(run)
    assert a["verifier_scores"] == {"computed": distinct_chains(run), "from_cache": N * LIMIT - distinct_chains(run)}
    assert again.made == [] and not b["model_loaded"]
    assert b["verifier_scores"] == {"computed": 0, "from_cache": N * LIMIT}
    assert a["by_k"] == b["by_k"]


def test_the_trained_orm_scores_stored_chains_and_its_file_content_keys_the_cache(run: Path, tmp_path: Path) -> None:
    """An ORM head on the fake's marker coordinate (0.982 for a chain holding "First add", the right one; 0.018
    otherwise) picks a right chain whenever there is one: best-of-N equals pass@N. The cache is keyed by the head
    file's content: the same head at another path computes nothing, another head computes every chain again."""
    def factory(model: str) -> ScriptedBackend:
        return ScriptedBackend(hidden_fn=marker, n_embd=4)  # the run's fingerprint: scripted:1000000

    head, copy, other = tmp_path / "orm.json", tmp_path / "copy.json", tmp_path / "other.json"
    orm(ScriptedBackend(hidden_fn=marker, n_embd=4)).save(head)
    copy.write_bytes(head.read_bytes())
    TrainedORM(backend=fake(), head=head_on_coord0(8, weight=2.0), spec=FeatureSpec(),
               metadata={"model": {"fingerprint": "scripted:1000000"}, "feature_dim": 8}).save(other)

    def rescore(path: Path) -> dict[str, Any]:
        return select_run(run, [parse_selector(f"best:verifier=orm,verifier_path={path}")], ks=[N],
                          cache=tmp_path / "scores.sqlite", backend="scripted:x", backend_factory=factory, reps=20)

    first = rescore(head)
    per = first["per_problem"][str(N)]
    assert per[f"best:verifier=orm,verifier_path={head}"] == per["pass@k"]
    assert first["verifier_scores"]["computed"] == distinct_chains(run)
    assert rescore(copy)["verifier_scores"]["computed"] == 0
    assert rescore(other)["verifier_scores"]["computed"] == distinct_chains(run)


def test_cli_prints_the_table_and_writes_json(run: Path, table: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    factory = Factory(table)
    monkeypatch.setattr(select_mod, "default_backend_factory", lambda spec, **_: factory)
    out = tmp_path / "select.json"
    r = CliRunner().invoke(app, ["select", str(run), "--selector", "best:verifier=pyes", "--k", "4", "--backend",
                                 f"scripted:{table}", "--json", str(out), "--reps", "50"])
    assert r.exit_code == 0, r.output
    assert "best:verifier=pyes" in r.output and "majority" in r.output and "pass@k" in r.output
    assert "18 chains scored now, 30 from the cache" in " ".join(r.output.split())
    saved = json.loads(out.read_text())
    assert saved["ks"] == [4] and set(saved["by_k"]["4"]["selectors"]) == {"majority", "best:verifier=pyes"}


@pytest.fixture(scope="module")
def greedy_run(table: Path) -> Path:
    out = table.parent / "greedy"
    run_sweep(SweepConfig(dataset="gsm8k", limit=2, models=("fake",), backend=f"scripted:{table}",
                          strategies=("greedy",)), out)
    return out


ERRORS: list[tuple[list[str], str]] = [
    (["--k", "16"], "stores 8 chains per problem"),
    (["--selector", "vote"], "unknown selector 'vote'"),
    (["--selector", "best"], "needs a verifier"),
    (["--selector", "best:verifier=nope"], "unknown verifier 'nope'"),
    (["--selector", "best:verifier=pyes,size=2"], "unknown knob 'size'"),
    (["--selector", "best:verifier=pyes,power=2"], "power applies to the weighted selector only"),
    (["--selector", "weighted:verifier=pyes,power=0"], "power must be a finite number > 0"),
    (["--selector", "weighted:verifier=pyes,power=two"], "power must be a number"),
    (["--selector", "weighted:verifier=confidence-mean"], "reads the generator's token logprobs"),
    (["--selector", "majority:verifier=pyes"], "majority takes no verifier"),
    (["--selector", "best:verifier=pyes"], "give --backend scripted:TABLE.json"),  # the store keeps the table's hash
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_bad_input_exits_2_naming_it(run: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["select", str(run), *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())


@pytest.mark.parametrize(("where", "message"), [(lambda tmp, greedy: tmp / "nowhere", "is not a run folder"),
                                                (lambda tmp, greedy: greedy, "no self-consistency chains")])
def test_a_folder_without_chains_exits_2(where: Callable[[Path, Path], Path], message: str, tmp_path: Path,
                                         greedy_run: Path) -> None:
    r = CliRunner().invoke(app, ["select", str(where(tmp_path, greedy_run))])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())


@pytest.mark.parametrize(("spec", "message"), [
    ("best:verifier=prm,verifier_path=missing.json", "no trained PRM at missing.json"),
    ("weighted:verifier=orm", "was trained on the hidden states of model"),  # the packaged head: another model
])
def test_a_verifier_that_cannot_be_built_exits_2(run: Path, table: Path, spec: str, message: str) -> None:
    r = CliRunner().invoke(app, ["select", str(run), "--selector", spec, "--backend", f"scripted:{table}"])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())


def test_a_backend_that_cannot_score_exits_1(run: Path, table: Path) -> None:
    """The table's fake has no score function: P(yes) cannot score, which is the work failing (1), not bad input."""
    r = CliRunner().invoke(app, ["select", str(run), "--selector", "best:verifier=pyes", "--backend",
                                 f"scripted:{table}"])
    assert r.exit_code == 1, r.output
    assert "verifier scoring failed" in r.output
