"""Sweeps on the scripted fake: units, sample reuse, resume, config refusal, grading, the CLI."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.eval.conftest import stop_after
from thinkscale.cli import app
from thinkscale.eval.config import SweepConfig, load_sweep_file
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import Job, Outcome, plan_strategy, record, run_sweep
from thinkscale.eval.store import Store, StoreError, open_existing
from thinkscale.types import Candidate, Ledger, Result, Role, Usage


def cfg_for(table: Path, **kw: object) -> SweepConfig:
    base: dict[str, object] = dict(dataset="gsm8k", limit=6, models=["fake"], backend=f"scripted:{table}",
                                   strategies=["greedy", "self-consistency"], budgets=[1, 2, 4], sample_seeds=[0, 1])
    base.update(kw)
    return SweepConfig(**base)  # type: ignore[arg-type]


def db_rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return list(db.execute(sql))


UNIT_RESULT = ("SELECT model, strategy, budget, problem_id, seed, answer, correct, answer_correct, n_subsets, "
               "estimated_cost, completion_tokens, prompt_tokens FROM units ORDER BY 1, 2, 3, 4, 5")


def test_sweep_stores_every_unit_once_and_reuses_samples(table: Path, tmp_path: Path) -> None:
    """6 problems x 2 seeds. Greedy is not swept (its knob is tokens per chain): 12 jobs, 12 units. Self-consistency
    runs once per problem and seed at 4 samples: 12 jobs, 48 samples, and units at budgets 1, 2, 4: 36."""
    out = tmp_path / "run"
    s = run_sweep(cfg_for(table), out)
    assert (s.jobs_total, s.jobs_run, s.jobs_skipped) == (24, 24, 0)
    assert db_rows(out, "SELECT strategy, COUNT(*) FROM jobs GROUP BY 1") == [("greedy", 12), ("self-consistency", 12)]
    assert db_rows(out, "SELECT strategy, budget, COUNT(*) FROM units GROUP BY 1, 2") == [
        ("greedy", 1, 12), ("self-consistency", 1, 12), ("self-consistency", 2, 12), ("self-consistency", 4, 12)]
    assert db_rows(out, "SELECT COUNT(*) FROM samples") == [(12 + 48,)]
    # the table's first response is right, so greedy (temperature 0) is always right
    assert db_rows(out, "SELECT MIN(correct), MAX(correct) FROM units WHERE strategy = 'greedy'") == [(1.0, 1.0)]
    # a reused budget's tokens are k/N of the job's: per job, budget-1 tokens x 4 == budget-4 tokens
    for b1, b4 in db_rows(out, "SELECT a.completion_tokens, b.completion_tokens FROM units a JOIN units b USING "
                               "(job_id) WHERE a.budget = 1 AND b.budget = 4"):
        assert b1 * 4 == pytest.approx(b4)
    assert db_rows(out, "PRAGMA journal_mode") == [("wal",)]
    again = run_sweep(cfg_for(table), out)
    assert (again.jobs_run, again.jobs_skipped) == (0, 24)
    assert db_rows(out, "SELECT COUNT(*) FROM units") == [(48,)]


def test_sample_reuse_values_by_hand(table: Path) -> None:
    """A self-consistency job with 4 samples answering [5, 5, 7, 9]; the reference of gsm8k_test-0 is 18, so pretend
    7 is right by grading against a problem whose reference is 7. maj@3 over the 4 3-subsets: {5,5,7} -> 5,
    {5,5,9} -> 5, {5,7,9} twice -> 3-way tie, 1/3 each: 2/3 / 4 = 1/6. Tokens 10+20+30+40 = 100, so budget 3 gets
    75; FLOPs per token = 150000 / (50 computed prompt + 100) = 1000, so budget 3 gets 1000 x (50 + 75)."""
    cfg = SweepConfig(dataset="gsm8k", limit=1, models=["m"], backend=f"scripted:{table}",
                      strategies=["self-consistency"], budgets=[1, 3, 4])
    plan = plan_strategy("self-consistency", cfg)
    assert plan.reuse and plan.job_budgets() == (4,)
    ep = load_dataset("gsm8k").problems[0]
    ep = type(ep)(ep.id, ep.problem, "7", ep.task)
    cands = tuple(Candidate(text=f"so \\boxed{{{a}}}", answer=a, completion_tokens=t)
                  for a, t in zip(["5", "5", "7", "9"], [10, 20, 30, 40], strict=True))
    ledger = Ledger()
    ledger.charge(Role.GENERATOR, Usage(prompt_tokens=60, cached_prompt_tokens=10, completion_tokens=100, calls=1,
                                        seconds=2.0, flops=150_000.0))
    result = Result("5", cands, ledger, "done", "self-consistency", chosen_index=0)
    rec = record(Outcome(Job("m", plan, ep, 0, 4), result, wall_seconds=8.0), max_subsets=1000)
    by_budget = {u.budget: u for u in rec.units}
    assert by_budget[3].correct == pytest.approx(1 / 6) and by_budget[3].n_subsets == 4
    assert by_budget[1].correct == pytest.approx(1 / 4)  # maj@1 = fraction of samples right
    assert (by_budget[4].correct, by_budget[4].answer, by_budget[4].estimated_cost) == (0.0, "5", False)
    # all four distinct answers, the right one among them: the run's own tie-break may pick it, the unit's value
    # is the expectation 1/4 at every budget while answer_correct grades what the run answered
    tie = tuple(Candidate(text="", answer=a, completion_tokens=1) for a in ["5", "6", "7", "9"])
    tied = record(Outcome(Job("m", plan, ep, 0, 4),
                          Result("7", tie, ledger, "done", "self-consistency", chosen_index=2),
                          wall_seconds=1.0), max_subsets=1000)
    assert [(u.budget, u.correct, u.answer_correct) for u in tied.units][-1] == (4, 0.25, True)
    assert by_budget[3].completion_tokens == pytest.approx(75)
    assert by_budget[3].flops == pytest.approx(1000 * (50 + 75))
    assert by_budget[3].wall_seconds == pytest.approx(6.0) and by_budget[3].estimated_cost
    assert [s.correct for s in rec.samples] == [False, False, True, False]
    assert by_budget[1].answer == "5" and by_budget[3].answer == "5"  # the first k samples' own vote


def test_the_chosen_sample_is_flagged_by_the_results_chosen_index(table: Path) -> None:
    """The store flags exactly the sample ``Result.chosen_index`` names, and none when nothing was chosen."""
    cfg = SweepConfig(dataset="gsm8k", limit=1, models=["m"], backend=f"scripted:{table}", strategies=["beam"],
                      budgets=[2])
    plan = plan_strategy("beam", cfg)
    ep = load_dataset("gsm8k").problems[0]
    cands = tuple(Candidate(text=t, answer=a, steps=(t,), scores=(sc,), completion_tokens=3)
                  for t, a, sc in [("x", None, 0.2), ("so \\boxed{18}", "18", 0.9), ("so \\boxed{7}", "7", 0.4)])
    for chosen, flags in [(1, [False, True, False]), (None, [False, False, False])]:
        result = Result("18" if chosen else None, cands, Ledger(), "done", "beam", chosen_index=chosen)
        rec = record(Outcome(Job("m", plan, ep, 0, 2), result, wall_seconds=1.0), max_subsets=10)
        assert [s.chosen for s in rec.samples] == flags


@pytest.mark.parametrize("spec", ["beam:verifier=pyes", "dvts:verifier=pyes", "mcts:verifier=pyes"])
def test_tree_searches_store_their_choice_and_rescore_repairs_an_unflagged_one(spec: str, table: Path,
                                                                              tmp_path: Path) -> None:
    """Each tree-search job flags exactly one sample, the one whose answer the job gave. A store written before
    that (no sample flagged) gets the flags back from the jobs' traces by ``rescore``, the units unchanged."""
    from tests.eval.test_sharing import p_yes

    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=[spec], budgets=[2], sample_seeds=[0], limit=3), out,
              backend_factory=lambda model: scripted_backend(table, score_fn=p_yes))
    flagged = "SELECT j.job_id, COUNT(s.idx), MIN(s.answer IS j.answer) FROM jobs j LEFT JOIN samples s " \
              "ON s.job_id = j.job_id AND s.chosen = 1 GROUP BY 1 ORDER BY 1"
    good = db_rows(out, flagged)
    assert len(good) == 3 and all(n == 1 and same == 1 for _, n, same in good), good
    units = db_rows(out, UNIT_RESULT)
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("UPDATE samples SET chosen = 0")
    assert {n for _, n, _ in db_rows(out, flagged)} == {0}
    r = CliRunner().invoke(app, ["rescore", str(out)])
    assert r.exit_code == 0, r.output
    assert db_rows(out, flagged) == good and db_rows(out, UNIT_RESULT) == units


def test_best_of_n_reuses_samples_with_argmax(table: Path, tmp_path: Path) -> None:
    """best-of-n with the confidence verifier (no model call: the fake's logprobs are all -0.1, so every candidate
    ties and the expected value is the fraction of right answered samples, at every k)."""
    out = tmp_path / "bon"
    run_sweep(cfg_for(table, strategies=["best-of-n:verifier=confidence-mean"], sample_seeds=[0]), out)
    rows = db_rows(out, "SELECT problem_id, budget, correct FROM units ORDER BY 1, 2")
    assert len(rows) == 6 * 3
    frac = dict(db_rows(out, "SELECT j.problem_id, AVG(s.correct) FROM samples s JOIN jobs j USING (job_id) "
                             "GROUP BY 1"))
    for pid, _budget, correct in rows:  # the largest budget too: ties are split there as well, not rng-broken
        assert correct == pytest.approx(frac[pid])


def test_stop_event_then_resume_equals_an_uninterrupted_run(table: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    run_sweep(cfg_for(table), full)
    s = run_sweep(cfg_for(table), part, **stop_after(7))
    assert s.interrupted and s.jobs_run == 7
    s = run_sweep(cfg_for(table), part, workers=3)
    assert (s.jobs_run, s.jobs_skipped) == (17, 7)
    assert db_rows(full, UNIT_RESULT) == db_rows(part, UNIT_RESULT)
    assert db_rows(part, "SELECT status, jobs_done FROM sessions ORDER BY session_id") == [
        ("interrupted", 7), ("finished", 17)]


@pytest.mark.parametrize(("change", "field"), [
    ({"budgets": [1, 2, 8]}, "budgets"), ({"strategies": ["greedy"]}, "strategies"), ({"limit": 5}, "limit"),
    ({"sample_seeds": [0]}, "sample_seeds"), ({"max_tokens": 256}, "max_tokens"), ({"models": ["other"]}, "models")])
def test_resume_refuses_a_different_config(table: Path, tmp_path: Path, change: dict, field: str) -> None:
    out = tmp_path / "run"
    run_sweep(cfg_for(table, limit=5) if field != "limit" else cfg_for(table), out)
    base = {"limit": 5} if field != "limit" else {}
    with pytest.raises(StoreError, match=rf"different config(.|\n)*{field}: stored"):
        run_sweep(cfg_for(table, **{**base, **change}), out)


def test_a_config_that_adds_strategies_grows_the_run(table: Path, tmp_path: Path) -> None:
    """Adding a strategy to a run's config resumes it: its finished jobs are kept, the new strategy runs, and the
    result is the run the grown config would have made from scratch; the growth is recorded."""
    full, grown = tmp_path / "full", tmp_path / "grown"
    both = ["greedy", "self-consistency", "best-of-n:verifier=confidence-mean"]
    run_sweep(cfg_for(table, strategies=both), full)
    run_sweep(cfg_for(table, strategies=["greedy", "self-consistency"]), grown)
    s = run_sweep(cfg_for(table, strategies=both), grown)
    assert (s.jobs_run, s.jobs_skipped) == (12, 24)
    assert db_rows(full, UNIT_RESULT) == db_rows(grown, UNIT_RESULT)
    store = open_existing(grown, read_only=True)
    assert [e["spec"] for e in store.config()["strategies"]] == both
    assert [g["added"] for g in store.info()["grown"]] == [["best-of-n:verifier=confidence-mean"]]
    store.close()
    s = run_sweep(cfg_for(table, strategies=list(reversed(both))), grown)  # another order: the same run
    assert (s.jobs_run, s.jobs_skipped) == (0, 36)
    with pytest.raises(StoreError, match="different config(.|\n)*limit: stored"):  # adding while changing more
        run_sweep(cfg_for(table, strategies=[*both, "self-refine"], limit=5), grown)
    with pytest.raises(StoreError, match="different config(.|\n)*strategies: stored"):  # an entry changed
        run_sweep(cfg_for(table, strategies=["greedy", "self-consistency:temperature=0.5",
                                             "best-of-n:verifier=confidence-mean"]), grown)


def test_redo_runs_a_strategys_jobs_again_once_per_code_version(table: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """--redo SPEC deletes SPEC's stored jobs (samples, units, chains with them) and the sweep runs them again; the
    redo is recorded with the code it is for. Refused, deleting nothing: a config whose chains another config's jobs
    were served, alone (adaptive-sc asks for self-consistency's; the two together are fine), a second redo with the
    same code, a spec the sweep does not list (before any folder is made)."""
    out = tmp_path / "run"
    three = ["greedy", "self-consistency", "adaptive-sc"]
    cfg = cfg_for(table, strategies=three, budgets=[4])
    run_sweep(cfg, out)
    before = db_rows(out, UNIT_RESULT)
    redone_jobs = "SELECT job_id, finished_at FROM jobs WHERE strategy != 'greedy'"
    old_jobs = set(db_rows(out, redone_jobs))
    counts = "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM samples), (SELECT COUNT(*) FROM chains)"
    stored = db_rows(out, counts)
    assert db_rows(out, "SELECT COUNT(*) FROM chains c JOIN jobs j USING (job_id) WHERE j.strategy = 'adaptive-sc' AND "
                        "c.source_job IS NOT NULL")[0][0] > 0  # served from self-consistency's jobs

    with pytest.raises(StoreError, match="jobs of 'adaptive-sc' were served chains that jobs of 'self-consistency'"):
        run_sweep(cfg, out, redo=["self-consistency"])
    assert db_rows(out, counts) == stored and set(db_rows(out, redone_jobs)) == old_jobs

    s = run_sweep(cfg, out, redo=["self-consistency", "adaptive-sc"])
    assert (s.jobs_run, s.jobs_skipped) == (24, 12)
    assert db_rows(out, UNIT_RESULT) == before  # the same code gives the same units
    new_jobs = set(db_rows(out, redone_jobs))
    assert len(new_jobs) == 24 and not new_jobs & old_jobs  # run again (finished anew), not kept
    assert db_rows(out, counts) == stored  # no orphaned samples or chains
    store = open_existing(out, read_only=True)
    redone = store.info()["redone"]
    assert [(e["spec"], e["jobs"]) for e in redone] == [("self-consistency", 12), ("adaptive-sc", 12)]
    assert all("git_commit" in e and "versions" in e for e in redone)
    store.close()

    with pytest.raises(StoreError, match="'adaptive-sc' already redone with this code"):
        run_sweep(cfg, out, redo=["adaptive-sc"])
    assert db_rows(out, counts) == stored and set(db_rows(out, redone_jobs)) == new_jobs
    with pytest.raises(ValueError, match="redo names 'self-refine', not a strategy config of this sweep"):
        run_sweep(cfg, tmp_path / "fresh", redo=["self-refine"])
    assert not (tmp_path / "fresh").exists()
    r = CliRunner().invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "6", "--model", "fake", "--backend",
                                 f"scripted:{table}", *(a for spec in three for a in ("--strategy", spec)),
                                 "--budgets", "4", "--sample-seeds", "0,1", "--out", str(out), "--quiet",
                                 "--redo", "greedy"])
    assert r.exit_code == 0, r.output
    assert "12 jobs run, 24 already stored" in r.output
    assert "12 stored jobs of greedy deleted, to be run again (--redo)" in caplog.text


def test_a_changed_backend_table_is_a_different_run(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_sweep(cfg_for(table), out)
    data = json.loads(table.read_text())
    data["n_params"] = 5
    table.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="backend: stored"):
        run_sweep(cfg_for(table), out)


def test_a_unit_can_never_be_written_twice(table: Path, tmp_path: Path) -> None:
    cfg = cfg_for(table, strategies=["greedy"], sample_seeds=[0], limit=1)
    plan = plan_strategy("greedy", cfg)
    ep = load_dataset("gsm8k").subset(1, 0).problems[0]
    backend = scripted_backend(table)
    from thinkscale.eval.runner import run_job

    rec = record(run_job(Job("fake", plan, ep, 0, 1), backend), 10)
    store = Store(tmp_path / "s")
    store.add_problems("gsm8k", [(ep.id, ep.task.value, ep.reference, ep.level, "text")])
    store.write_job(rec)
    with pytest.raises(sqlite3.IntegrityError):
        store.write_job(rec)
    assert store.rows("SELECT COUNT(*) AS n FROM units")[0]["n"] == 1  # the failed transaction left nothing
    store.close()


def test_strategies_see_no_reference(table: Path, tmp_path: Path) -> None:
    """Every prompt the backend got is exactly the dataset's system + user message; the grader alone has the key."""
    seen = []

    def factory(model: str):  # noqa: ANN202
        b = scripted_backend(table)
        seen.append(b)
        return b

    run_sweep(cfg_for(table, sample_seeds=[0]), tmp_path / "r", backend_factory=factory)
    ds = {p.problem.messages: p for p in load_dataset("gsm8k").subset(6, 0).problems}
    assert seen and all(r.messages in ds for r in seen[0].requests)


def test_bad_specs_and_budgets_are_named(table: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        run_sweep(cfg_for(table, strategies=["nope"]), tmp_path / "a")
    with pytest.raises(ValueError, match="no knob 'n_sampels'"):
        run_sweep(cfg_for(table, strategies=["self-consistency:n_sampels=3"]), tmp_path / "b")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        run_sweep(cfg_for(table, dataset="nope"), tmp_path / "c")
    # refused before anything is written: no run folder, no lock file left behind
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))
    with pytest.raises(ValueError, match="strictly increasing"):
        cfg_for(table, budgets=[4, 2])
    with pytest.raises(ValueError, match="backend must be"):
        cfg_for(table, backend="vllm")


def test_pinned_budget_knob_runs_once(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "pin"
    run_sweep(cfg_for(table, strategies=["self-consistency:n_samples=3"], sample_seeds=[0]), out)
    assert db_rows(out, "SELECT DISTINCT strategy, budget, n_subsets FROM units") == [
        ("self-consistency:n_samples=3", 3, 1)]


def test_cli_eval_report_export_and_sweep_file(table: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["eval", "--dataset", "gsm8k", "--limit", "6", "--model", "fake", "--backend", f"scripted:{table}",
            "--strategy", "greedy", "--strategy", "self-consistency", "--budgets", "1,2,4", "--sample-seeds", "0,1",
            "--out", str(out), "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "24 jobs run" in r.output
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'dataset = "gsm8k"\nlimit = 6\nmodels = ["fake"]\nbackend = "scripted:{table}"\n'
                     'strategies = ["greedy", "self-consistency"]\nbudgets = [1, 2, 4]\nsample_seeds = [0, 1]\n'
                     'out = "cli"\n')
    assert load_sweep_file(sweep).out == out
    r = runner.invoke(app, ["eval", "--config", str(sweep), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "0 jobs run, 24 already stored" in r.output  # the file describes the same run: it resumes
    r = runner.invoke(app, ["eval", "--config", str(sweep), "--limit", "3"])
    assert r.exit_code == 2 and "do not also give limit" in r.output
    sweep.write_text(sweep.read_text() + "budget = 3\n")
    r = runner.invoke(app, ["eval", "--config", str(sweep)])
    assert r.exit_code == 2 and "budget: Extra inputs are not permitted" in r.output
    r = runner.invoke(app, [*args[:-3], "--budgets", "1,x", "--out", str(out)])
    assert r.exit_code == 2 and "--budgets must be comma-separated integers" in r.output
    r = runner.invoke(app, [*args[:-3], "--budgets", "1,2", "--out", str(out)])
    assert r.exit_code == 2 and "different config" in r.output

    r = runner.invoke(app, ["export", str(out), "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 48
    required = {"problem_id", "dataset", "model", "strategy", "budget", "seed", "answer", "reference", "correct",
                "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "verifier_tokens", "wall_seconds",
                "flops"}
    assert required <= set(rows[0])
    assert len({(x["model"], x["strategy"], x["budget"], x["problem_id"], x["seed"]) for x in rows}) == 48
    csv_path = tmp_path / "u.csv"
    r = runner.invoke(app, ["export", str(out), "--format", "csv", "-o", str(csv_path)])
    assert r.exit_code == 0 and len(csv_path.read_text().splitlines()) == 49
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a run folder" in r.output


def test_two_sweeps_cannot_share_a_run_folder(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = threading.Event()
    release = threading.Event()

    def slow(p: object) -> None:
        first.set()
        release.wait(10)

    t = threading.Thread(target=lambda: run_sweep(cfg_for(table), out, on_progress=slow))
    t.start()
    try:
        assert first.wait(10)
        with pytest.raises(StoreError, match="another `thinkscale eval` is running"):
            run_sweep(cfg_for(table), out)
    finally:
        release.set()
        t.join(30)
    assert db_rows(out, "SELECT COUNT(*) FROM jobs") == [(24,)]  # the first sweep finished undisturbed


def test_a_failing_job_stops_the_sweep_with_one_line_and_keeps_the_rest(table: Path, tmp_path: Path) -> None:
    """The table lacks one problem: the sweep stops there with an error naming it; the jobs before it are stored
    and the session is marked failed."""
    data = json.loads(table.read_text())
    missing = list(data["responses"])[3]
    del data["responses"][missing]
    table.write_text(json.dumps(data))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "6", "--model", "fake", "--backend",
                                 f"scripted:{table}", "--strategy", "greedy", "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "has no responses for the prompt" in r.output
    assert db_rows(out, "SELECT status FROM sessions") == [("failed",)]
    order = [p.problem.messages[-1].content for p in load_dataset("gsm8k").subset(6, 0).problems]
    assert db_rows(out, "SELECT COUNT(*) FROM jobs") == [(order.index(missing),)]  # every job before it


def test_rescore_reproduces_units_and_repairs_grades(table: Path, tmp_path: Path) -> None:
    """Rescoring a fresh run changes nothing; after a sample's grade and a unit are corrupted, it restores both."""
    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=["greedy", "self-consistency", "best-of-n:verifier=confidence-mean"]), out)
    everything = "SELECT * FROM units ORDER BY model, strategy, budget, problem_id, seed"
    before = db_rows(out, everything)
    samples = db_rows(out, "SELECT job_id, idx, correct, verdict FROM samples ORDER BY 1, 2")
    r = CliRunner().invoke(app, ["rescore", str(out)])
    assert r.exit_code == 0 and "rescored 36 jobs" in r.output, r.output
    assert db_rows(out, everything) == before
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("UPDATE samples SET correct = 1 - correct, verdict = 'x'")
        db.execute("UPDATE units SET correct = 0.123")
        db.execute("DELETE FROM units WHERE budget = 2")
    run_sweep_again = CliRunner().invoke(app, ["rescore", str(out)])
    assert run_sweep_again.exit_code == 0
    assert db_rows(out, everything) == before
    assert db_rows(out, "SELECT job_id, idx, correct, verdict FROM samples ORDER BY 1, 2") == samples


def test_strategies_that_sample_alike_see_the_same_chains(table: Path, tmp_path: Path) -> None:
    """Common random numbers: self-consistency and best-of-N with equal sampling knobs get the same seeds, so their
    samples are identical and their difference is the selection alone."""
    out = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=["self-consistency", "best-of-n:verifier=confidence-mean"]), out)
    texts = db_rows(out, "SELECT j.problem_id, j.seed, j.strategy, group_concat(s.text, '|') FROM samples s "
                         "JOIN jobs j USING (job_id) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    by_strategy: dict[str, list[tuple]] = {}
    for pid, seed, strategy, joined in texts:
        by_strategy.setdefault(strategy, []).append((pid, seed, joined))
    assert by_strategy["self-consistency"] == by_strategy["best-of-n:verifier=confidence-mean"]
    assert len({t for _, _, t in by_strategy["self-consistency"]}) > 1  # and they differ between problems/seeds


def test_a_changed_policy_or_prm_file_is_a_different_run(table: Path, tmp_path: Path) -> None:
    """The spec names a file (auto's policy, a PRM's verifier_path): its content is part of the run's identity, so
    resuming after it changed is refused instead of mixing two policies' results under one strategy name."""
    from tests.policy.helpers import write_policy

    path = write_policy(tmp_path / "policy.json", max_tokens=10, caps=(40,),
                        choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 8}})
    cfg = cfg_for(table, strategies=[f"auto:policy={path}"], budgets=[40], sample_seeds=[0], limit=2)
    out = tmp_path / "run"
    assert run_sweep(cfg, out).jobs_run == 2
    assert run_sweep(cfg, out).jobs_skipped == 2  # same file: resumes
    write_policy(tmp_path / "policy.json", max_tokens=10, caps=(40,),
                 choices={"easy": {"kind": "stop"}, "hard": {"kind": "stop"}})
    with pytest.raises(StoreError, match="knob_files: stored"):
        run_sweep(cfg, out)


def test_a_token_budget_knob_is_swept_in_chains_worth(table: Path, tmp_path: Path) -> None:
    """auto's budget_tokens and budget forcing's max_thinking_tokens count tokens: a sweep's budget k gives them
    k x max_tokens (k chains' worth), so they sit beside self-consistency at k samples; the scale is in the run's
    identity, and no run ever spends past it."""
    from tests.policy.helpers import write_policy

    pol = write_policy(tmp_path / "policy.json", wave_size=2, max_tokens=10, edges=(0.25,), caps=(20, 40),
                       choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 4}})
    cfg = cfg_for(table, strategies=["self-consistency", f"auto:policy={pol}", "budget-forcing"], budgets=[2, 4],
                  sample_seeds=[0], max_tokens=10)
    out = tmp_path / "run"
    run_sweep(cfg, out)
    specs = db_rows(out, "SELECT DISTINCT strategy, budget, spec FROM jobs WHERE strategy != 'self-consistency' "
                         "ORDER BY 1, 2")
    assert specs == [(f"auto:policy={pol}", 2, f"auto:policy={pol},budget_tokens=20"),
                     (f"auto:policy={pol}", 4, f"auto:policy={pol},budget_tokens=40"),
                     ("budget-forcing", 2, "budget-forcing:max_thinking_tokens=20"),
                     ("budget-forcing", 4, "budget-forcing:max_thinking_tokens=40")]
    spent = db_rows(out, f"SELECT budget, MAX(completion_tokens) FROM jobs WHERE strategy = 'auto:policy={pol}' "
                         "GROUP BY 1 ORDER BY 1")
    assert [b for b, _ in spent] == [2, 4] and all(0 < t <= 10 * b for b, t in spent)
    ident = json.loads(db_rows(out, "SELECT value FROM meta WHERE key = 'config'")[0][0])
    assert [s.get("budget_scale") for s in ident["strategies"]] == [None, 10, 10]
    with pytest.raises(StoreError, match="max_tokens"):  # another max_tokens is another budget: refused
        run_sweep(SweepConfig(**{**cfg.model_dump(), "max_tokens": 20}), out)


def test_every_budgets_knobs_are_checked_before_any_job_runs() -> None:
    """adaptive-sc with wave_size 2 cannot run at budget 1 (max_samples 1 < wave_size 2): the plan says so, naming
    the knob, instead of the sweep failing after the larger budgets' jobs have run."""
    cfg = SweepConfig(dataset="gsm8k", limit=1, models=["m"], strategies=["adaptive-sc:wave_size=2"],
                      budgets=[1, 2, 4])
    with pytest.raises(ValueError, match="max_samples must be >= wave_size"):
        plan_strategy("adaptive-sc:wave_size=2", cfg)
