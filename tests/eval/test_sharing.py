"""Sample sharing: a sweep serves a job's generate requests from chains finished jobs already stored, exactly, and
charges them as they cost when generated."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.eval.conftest import stop_after, write_table
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.eval.analysis import analyze
from thinkscale.eval.chains import ChainIndex, SharingBackend, StoredChain, request_id
from thinkscale.eval.config import SweepConfig, load_sweep_file
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.store import Store, StoreError, open_existing
from thinkscale.types import ConfidenceStop, GenRequest, Message

BON = "best-of-n:verifier=pyes"
# What a unit's result is. Cached prompt tokens (so FLOPs) and seconds depend on what the fake's prefix cache held
# and on time; a served chain is charged as its first generation cost, so they are not compared.
RESULT = ("SELECT model, strategy, budget, problem_id, seed, answer, correct, answer_correct, n_subsets, "
          "completion_tokens, prompt_tokens, verifier_tokens FROM units ORDER BY 1, 2, 3, 4, 5")


def p_yes(prompt: str, continuation: str) -> tuple[float, ...]:
    """A deterministic P(yes) judge: the log-probability of "Yes" depends on the judged text's length."""
    lp = -0.1 * (len(prompt) % 7) if continuation.strip() == "Yes" else -1.0
    return tuple(lp for _ in continuation.split())


class Counting:
    """A backend factory that keeps every scripted backend it builds (to count the model's generate requests)."""

    def __init__(self, table: Path) -> None:
        self.table = table
        self.built: list[ScriptedBackend] = []

    def __call__(self, model: str) -> ScriptedBackend:
        b = scripted_backend(self.table, score_fn=p_yes)
        self.built.append(b)
        return b

    @property
    def requests(self) -> list[GenRequest]:
        return [r for b in self.built for r in b.requests]


def cfg_for(table: Path, **kw: object) -> SweepConfig:
    base: dict[str, object] = dict(dataset="gsm8k", limit=6, models=["fake"], backend=f"scripted:{table}",
                                   strategies=["self-consistency", BON], budgets=[1, 2, 4], sample_seeds=[0, 1])
    base.update(kw)
    return SweepConfig(**base)  # type: ignore[arg-type]


def rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return list(db.execute(sql))


def test_best_of_n_after_self_consistency_generates_nothing_and_matches_an_unshared_run(tmp_path: Path) -> None:
    """6 problems x 2 seeds: self-consistency at 4 draws 12 requests; best-of-N at 4 asks for the same seeded
    chains and is served all 48 from the store (0 generate calls, only its P(yes) scoring reaches the model), with
    the same texts and answers. The fake is a function of the sample seed, so every unit equals an unshared run's;
    the served chains are charged their first generation's tokens and seconds."""
    table = write_table(tmp_path / "table.json", limit=6, seconds_per_token=0.0002)
    shared, alone = Counting(table), Counting(table)
    s = run_sweep(cfg_for(table), tmp_path / "shared", backend_factory=shared)
    assert len(shared.requests) == 12 and {r.n for r in shared.requests} == {4}
    assert sum(len(b.score_requests) for b in shared.built) > 0
    out = tmp_path / "shared"
    sc_tokens = rows(out, "SELECT SUM(completion_tokens) FROM jobs WHERE strategy = 'self-consistency'")[0][0]
    assert (s.reused_chains, s.reused_tokens) == (48, sc_tokens)
    texts = rows(out, "SELECT j.strategy, j.problem_id, j.seed, group_concat(s.text || '=' || s.answer, '|') "
                      "FROM samples s JOIN jobs j USING (job_id) GROUP BY 1, 2, 3 ORDER BY 2, 3, 1")
    assert [t[1:] for t in texts if t[0] == BON] == [t[1:] for t in texts if t[0] == "self-consistency"]
    # every best-of-N chain was served from the self-consistency job on its problem and seed, committed before it
    served = rows(out, "SELECT c.job_id, c.source_job, j.problem_id = p.problem_id AND j.seed = p.seed, "
                       "p.strategy FROM chains c JOIN jobs j USING (job_id) JOIN jobs p ON p.job_id = c.source_job")
    assert len(served) == 48 and all(src < job and same and st == "self-consistency" for job, src, same, st in served)
    # the ledger charges them as generated: tokens equal, seconds equal the provider's generation seconds
    assert rows(out, "SELECT DISTINCT a.completion_tokens = b.completion_tokens, a.prompt_tokens = b.prompt_tokens "
                     "FROM jobs a JOIN jobs b USING (problem_id, seed) WHERE a.strategy = 'self-consistency' "
                     "AND b.strategy != a.strategy") == [(1, 1)]
    for sc_seconds, reused, unit_wall, job_wall in rows(
            out, "SELECT a.backend_seconds, (SELECT SUM(seconds) FROM chains c WHERE c.job_id = b.job_id), "
                 "u.wall_seconds, b.wall_seconds FROM jobs a JOIN jobs b USING (problem_id, seed) JOIN units u "
                 "ON u.job_id = b.job_id AND u.budget = 4 WHERE a.strategy = 'self-consistency' "
                 f"AND b.strategy = '{BON}'"):
        assert reused == pytest.approx(sc_seconds) and sc_seconds > 0
        assert unit_wall == pytest.approx(job_wall + reused)  # the unit's time: now + the chains' first generation

    store = open_existing(out)
    try:
        sharing = analyze([store], reps=10).sharing
    finally:
        store.close()
    assert sharing is not None and (sharing.generated, sharing.served, sharing.served_tokens) == (48, 48, sc_tokens)
    assert "48 of 96 chains" in sharing.describe()

    run_sweep(cfg_for(table, share_samples=False), tmp_path / "alone", backend_factory=alone)
    assert len(alone.requests) == 24
    assert rows(out, RESULT) == rows(tmp_path / "alone", RESULT)
    assert rows(tmp_path / "alone", "SELECT COUNT(*) FROM chains WHERE source_job IS NOT NULL") == [(0,)]


def test_a_strategy_listed_first_is_still_served_by_a_larger_draw(table: Path, tmp_path: Path) -> None:
    """A pinned 4-sample self-consistency (runs once, not reused) is listed first, but the swept one (one job at the
    largest budget, 4) is scheduled first, so the pinned one is served whole: 6 generate requests, not 12."""
    count = Counting(table)
    run_sweep(cfg_for(table, strategies=["self-consistency:n_samples=4", "self-consistency"], sample_seeds=[0]),
              tmp_path / "r", backend_factory=count)
    assert len(count.requests) == 6
    assert rows(tmp_path / "r", "SELECT j.strategy, COUNT(*) FROM chains c JOIN jobs j USING (job_id) "
                                "WHERE c.source_job IS NOT NULL GROUP BY 1") == [("self-consistency:n_samples=4", 24)]


def test_logprob_requests_are_never_served_from_stored_chains(table: Path, tmp_path: Path) -> None:
    """The store keeps only logprob summaries: best-of-N with a confidence verifier asks for logprobs, so after
    self-consistency it generates its chains again (12 requests). Listed first, its chains (drawn with logprobs)
    serve self-consistency's requests, which ask for none (6). Both runs' units equal an unshared run's."""
    conf = "best-of-n:verifier=confidence-mean"
    results = []
    for name, strategies, share, expected in (("after", ["self-consistency", conf], True, 12),
                                              ("before", [conf, "self-consistency"], True, 6),
                                              ("alone", ["self-consistency", conf], False, 12)):
        count = Counting(table)
        run_sweep(cfg_for(table, strategies=strategies, sample_seeds=[0], share_samples=share), tmp_path / name,
                  backend_factory=count)
        assert len(count.requests) == expected, name
        if name == "after":
            assert [r.logprobs for r in count.requests] == [False] * 6 + [True] * 6
        results.append(rows(tmp_path / name, RESULT))
    assert results[0] == results[1] == results[2]


def test_sharing_backend_serves_a_stored_prefix_and_generates_the_rest(table: Path) -> None:
    """Chains 0..3 of a seeded draw are stored: a request for 6 is served 4 and sends the model one request for
    the last 2 (first_sample=4), and the 6 texts are what a 6-chain draw gives. Holes, greedy continuations and
    logprob requests go to the model whole."""
    msgs = (Message("user", next(iter(json.loads(table.read_text())["responses"]))),)
    req = GenRequest(messages=msgs, n=6, temperature=0.7, top_p=0.95, max_tokens=50, seed=1234)
    direct = scripted_backend(table).generate([req])[0]
    provider = SharingBackend(scripted_backend(table), None)
    provider.generate([GenRequest(messages=msgs, n=4, temperature=0.7, top_p=0.95, max_tokens=50, seed=1234)])
    index: ChainIndex[StoredChain] = ChainIndex()
    for c in provider.rows:
        index.add(c.request_key, c.place, StoredChain(c, 7))

    model = scripted_backend(table)
    sharing = SharingBackend(model, index)
    (got,) = sharing.generate([req])
    assert [(r.n, r.first_sample) for r in model.requests] == [(2, 4)]
    assert [s.text for s in got.samples] == [s.text for s in direct.samples]
    assert got.usage.completion_tokens == direct.usage.completion_tokens and got.usage.calls == 1
    assert [c.source_job for c in sharing.rows] == [7] * 4 + [None] * 2
    assert [c.place for c in sharing.rows] == list(range(6))

    holes: ChainIndex[StoredChain] = ChainIndex()
    for c in provider.rows[1:]:
        holes.add(c.request_key, c.place, StoredChain(c, 7))
    model = scripted_backend(table)
    SharingBackend(model, holes).generate([req])
    assert [(r.n, r.first_sample) for r in model.requests] == [(6, 0)]

    model = scripted_backend(table)
    SharingBackend(model, index).generate([GenRequest(messages=msgs, n=2, temperature=0.7, top_p=0.95,
                                                      max_tokens=50, seed=1234, logprobs=True)])
    assert [(r.n, r.logprobs) for r in model.requests] == [(2, True)]

    greedy = GenRequest(messages=msgs, n=2, temperature=0.0, max_tokens=50)
    g = SharingBackend(scripted_backend(table), None)
    g.generate([GenRequest(messages=msgs, n=1, temperature=0.0, max_tokens=50)])
    one: ChainIndex[StoredChain] = ChainIndex()
    one.add(g.rows[0].request_key, 0, StoredChain(g.rows[0], 3))
    model = scripted_backend(table)
    SharingBackend(model, one).generate([greedy])
    assert [r.n for r in model.requests] == [2]  # no first_sample without a seed: generated whole
    assert request_id(GenRequest(messages=msgs, temperature=0.7)) is None  # unseeded sampling never matches


def test_disabling_is_recorded_and_a_resume_with_the_other_setting_is_refused(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "6", "--model", "fake", "--backend",
                                 f"scripted:{table}", "--strategy", "self-consistency", "--strategy",
                                 "self-consistency:n_samples=4", "--budgets", "1,4", "--no-share-samples",
                                 "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "served from the store" not in r.output
    assert rows(out, "SELECT COUNT(*) FROM chains WHERE source_job IS NOT NULL") == [(0,)]
    store = Store(out)
    assert store.config()["share_samples"] is False
    store.close()
    with pytest.raises(StoreError, match="share_samples: stored false vs now true"):
        run_sweep(cfg_for(table, strategies=["self-consistency", "self-consistency:n_samples=4"], budgets=[1, 4],
                          sample_seeds=[0]), out)


def test_a_run_from_before_sharing_resumes_only_without_it(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "old"
    cfg = cfg_for(table, strategies=["self-consistency"], sample_seeds=[0], share_samples=False)
    run_sweep(cfg, out)
    with sqlite3.connect(out / "results.sqlite") as db:  # the config as such a run recorded it
        config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        del config["share_samples"]
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config, sort_keys=True),))
    with pytest.raises(StoreError, match="before sample sharing existed.*--no-share-samples"):
        run_sweep(cfg.model_copy(update={"share_samples": True}), out)
    assert run_sweep(cfg, out).jobs_skipped == 6


def test_stop_and_resume_with_sharing_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Stopped after 7 jobs (self-consistency part-way), resumed on 3 workers: every unit as in one uninterrupted
    run, and every served chain came from a job committed before the one it served."""
    table = write_table(tmp_path / "table.json", limit=6)
    run_sweep(cfg_for(table), tmp_path / "full", backend_factory=Counting(table))
    part = tmp_path / "part"
    assert run_sweep(cfg_for(table), part, backend_factory=Counting(table), **stop_after(7)).interrupted
    s = run_sweep(cfg_for(table), part, backend_factory=Counting(table), workers=3)
    assert (s.jobs_run, s.jobs_skipped) == (17, 7)
    assert rows(tmp_path / "full", RESULT) == rows(part, RESULT)
    served = rows(part, "SELECT job_id, source_job FROM chains WHERE source_job IS NOT NULL")
    assert served and all(src < job for job, src in served)


def test_a_request_that_may_stop_chains_early_is_neither_served_nor_recorded(table: Path) -> None:
    """A confidence_stop request's chains may end before the draw's do: storing them under the draw's key would
    serve truncated chains to a later plain request."""
    msgs = (Message("user", next(iter(json.loads(table.read_text())["responses"]))),)
    rule = ConfidenceStop(window=2, min_mean_logprob=-5.0)
    req = GenRequest(messages=msgs, n=2, temperature=0.7, max_tokens=50, seed=1234, logprobs=True,
                     confidence_stop=rule)
    assert request_id(req) is None
    sharing = SharingBackend(scripted_backend(table), None)
    sharing.generate([req])
    assert sharing.rows == []


# ------------------------------------------------------------------ chains of other runs (share_chains_from)


def test_another_runs_chains_serve_a_new_run_and_say_where_they_came_from(tmp_path: Path) -> None:
    """Run A draws self-consistency at 4 (12 requests); run B, a new folder with self-consistency and best-of-N and
    A named in share_chains_from, generates nothing: every chain is served from A's store, each row naming A and the
    A job that drew it on the same problem and seed (source_job stays NULL: that column is B's own jobs). B's units
    equal an unshared run's; its meta records A; the report counts the chains as A's."""
    table = write_table(tmp_path / "table.json", limit=6, seconds_per_token=0.0002)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_sweep(cfg_for(table, strategies=["self-consistency"]), a, backend_factory=Counting(table))
    count = Counting(table)
    s = run_sweep(cfg_for(table, share_chains_from=[str(a)]), b, backend_factory=count)
    assert count.requests == [] and s.reused_chains == 96
    served = rows(b, "SELECT c.source_job, c.source_run, c.source_run_job, j.problem_id, j.seed FROM chains c "
                     "JOIN jobs j USING (job_id)")
    assert len(served) == 96 and {(sj, run) for sj, run, *_ in served} == {(None, str(a))}
    with sqlite3.connect(a / "results.sqlite") as db:
        drew = {job: (pid, seed) for job, pid, seed in db.execute("SELECT job_id, problem_id, seed FROM jobs")}
    assert all(drew[rj] == (pid, seed) for _, _, rj, pid, seed in served)
    run_sweep(cfg_for(table, share_samples=False), c, backend_factory=Counting(table))
    assert rows(b, RESULT) == rows(c, RESULT)
    assert json.loads(rows(b, "SELECT value FROM meta WHERE key = 'chain_sources'")[0][0])[str(a)]["jobs"] == 12
    store = open_existing(b, read_only=True)
    try:
        sharing = analyze([store], reps=10).sharing
    finally:
        store.close()
    assert sharing is not None and sharing.other_runs == {str(a): 96} and f"96 from {a}" in sharing.describe()


def test_chains_of_another_model_file_or_folder_are_refused(table: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    run_sweep(cfg_for(table, strategies=["self-consistency"], sample_seeds=[0]), a)
    with sqlite3.connect(a / "results.sqlite") as db:
        db.execute("UPDATE meta SET value = '{\"fingerprint\": \"other\"}' WHERE key = 'model:fake'")
    with pytest.raises(StoreError, match="its 'fake' is .*other.*another model file"):
        run_sweep(cfg_for(table, share_chains_from=[str(a)]), tmp_path / "b")
    with pytest.raises(StoreError, match="share_chains_from: .*nowhere is not a run folder"):
        run_sweep(cfg_for(table, share_chains_from=[str(tmp_path / "nowhere")]), tmp_path / "c")
    with pytest.raises(ValueError, match="the run's own folder"):
        run_sweep(cfg_for(table, share_chains_from=[str(tmp_path / "d")]), tmp_path / "d")
    with pytest.raises(ValueError, match="needs share_samples on"):
        run_sweep(cfg_for(table, share_samples=False, share_chains_from=[str(a)]), tmp_path / "e")
    assert not any((tmp_path / d).exists() for d in "cde")  # refused before a run folder is made (b: once loaded)


def test_a_store_from_before_the_source_run_columns_reads_and_is_brought_up_to_date(table: Path,
                                                                                    tmp_path: Path) -> None:
    """A store whose chains table lacks source_run/source_run_job: read-only it reads them as NULL (a TEMP view);
    opened to write, they are added; either way its chains are the same."""
    out = tmp_path / "old"
    run_sweep(cfg_for(table, strategies=["self-consistency", BON], sample_seeds=[0]), out,
              backend_factory=Counting(table))
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("ALTER TABLE chains DROP COLUMN source_run_job")
        db.execute("ALTER TABLE chains DROP COLUMN source_run")
    ro = open_existing(out, read_only=True)
    try:
        chains = ro.chains()
        assert len(chains) == 48 and all(c.source_run is None and c.source_run_job is None for _, c in chains)
        assert sum(c.served for _, c in chains) == 24 and len(ro.chains(generated=True)) == 24
    finally:
        ro.close()
    assert rows(out, "SELECT COUNT(*) FROM pragma_table_info('chains') WHERE name LIKE 'source_run%'") == [(0,)]
    Store(out).close()
    assert rows(out, "SELECT COUNT(*) FROM pragma_table_info('chains') WHERE name LIKE 'source_run%'") == [(2,)]
    assert run_sweep(cfg_for(table, strategies=["self-consistency", BON], sample_seeds=[0]), out,
                     backend_factory=Counting(table)).jobs_skipped == 12


def test_share_chains_from_in_a_sweep_file_is_relative_to_it_and_the_option_replaces_it(table: Path,
                                                                                       tmp_path: Path) -> None:
    (tmp_path / "sweeps").mkdir()
    sweep = tmp_path / "sweeps" / "s.toml"
    sweep.write_text(f'dataset = "gsm8k"\nlimit = 6\nmodels = ["fake"]\nbackend = "scripted:{table}"\n'
                     'strategies = ["self-consistency"]\nbudgets = [4]\nshare_chains_from = ["../a"]\n')
    assert load_sweep_file(sweep).share_chains_from == (str(tmp_path / "a"),)
    run_sweep(cfg_for(table, strategies=["self-consistency"], budgets=[4], sample_seeds=[0]), tmp_path / "b")
    r = CliRunner().invoke(app, ["eval", "--config", str(sweep), "--share-chains-from", str(tmp_path / "b"),
                                 "--out", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert rows(tmp_path / "c", "SELECT DISTINCT source_run FROM chains") == [(str(tmp_path / "b"),)]
