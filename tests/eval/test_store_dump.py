"""A run's store as SQL text (store.dump_sql / load_sql, used by scripts/stores.py to keep sweeps in git): a sweep
stopped midway, dumped, loaded into a fresh folder elsewhere and resumed there ends exactly like an uninterrupted
run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.eval.conftest import stop_after
from tests.eval.test_runner import UNIT_RESULT, cfg_for, db_rows
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.store import StoreError, dump_sql, load_sql


def test_dump_load_resume_equals_an_uninterrupted_run(table: Path, tmp_path: Path) -> None:
    full, part, moved = tmp_path / "full", tmp_path / "part", tmp_path / "elsewhere" / "part"
    run_sweep(cfg_for(table), full)
    assert run_sweep(cfg_for(table), part, **stop_after(5)).jobs_run == 5
    dump = tmp_path / "part.sql"
    assert dump_sql(part, dump) == 5
    assert not list(tmp_path.glob("*.partial"))
    assert load_sql(dump, moved) == 5
    with sqlite3.connect(moved / "results.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db_rows(moved, UNIT_RESULT) == db_rows(part, UNIT_RESULT)
    s = run_sweep(cfg_for(table), moved)
    assert (s.jobs_run, s.jobs_skipped) == (19, 5)
    assert db_rows(full, UNIT_RESULT) == db_rows(moved, UNIT_RESULT)
    # the same dump twice is the same text (so an unchanged run leaves its file as it was)
    again = tmp_path / "again.sql"
    dump_sql(part, again)
    assert again.read_bytes() == dump.read_bytes()


def test_dump_while_a_transaction_is_open_sees_only_committed_jobs(table: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=["greedy"]), run)
    writer = sqlite3.connect(run / "results.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM units")
    writer.execute("DELETE FROM samples")
    writer.execute("DELETE FROM chains")
    writer.execute("DELETE FROM jobs")
    try:
        assert dump_sql(run, tmp_path / "d.sql") == 12
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert load_sql(tmp_path / "d.sql", tmp_path / "copy") == 12


def test_refusals_name_the_problem(table: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no results.sqlite"):
        dump_sql(tmp_path / "nothing", tmp_path / "x.sql")
    run = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=["greedy"]), run)
    dump_sql(run, tmp_path / "d.sql")
    with pytest.raises(StoreError, match="exists; not replacing"):
        load_sql(tmp_path / "d.sql", run)
    bad = tmp_path / "bad.sql"
    bad.write_text("this is not SQL;\n")
    with pytest.raises(StoreError, match="not a thinkscale store dump"):
        load_sql(bad, tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "results.sqlite").exists()


def test_a_chain_with_carriage_returns_round_trips_byte_for_byte(table: Path, tmp_path: Path) -> None:
    """Model text may hold "\\r\\n" (a code block copied from Windows): the dump must not translate it on load, or a
    restored store's chains differ from the ones drawn and its next dump rewrites the file."""
    run = tmp_path / "run"
    run_sweep(cfg_for(table, strategies=["greedy"]), run)
    with sqlite3.connect(run / "results.sqlite") as db:
        db.execute("UPDATE samples SET text = 'x = 4\r\n\r\n# check\rdone' "
                   "WHERE rowid = (SELECT MIN(rowid) FROM samples)")
    dump, moved = tmp_path / "run.sql", tmp_path / "moved"
    dump_sql(run, dump)
    load_sql(dump, moved)
    query = "SELECT text FROM samples ORDER BY rowid"
    with sqlite3.connect(run / "results.sqlite") as a, sqlite3.connect(moved / "results.sqlite") as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
        assert "x = 4\r\n\r\n# check\rdone" in [r[0] for r in b.execute(query)]
    again = tmp_path / "again.sql"
    dump_sql(moved, again)
    assert again.read_bytes() == dump.read_bytes()


def test_a_score_cache_round_trips_through_its_dump(tmp_path: Path) -> None:
    """scripts/stores.py keeps the ORM's score caches in git the same way: what was cached (a chain with "\r\n" in
    its key included) is what the loaded cache serves; a file that exists is not replaced; a bad dump is refused."""
    from thinkscale.eval.chain_scores import ScoreCache
    from thinkscale.eval.store import dump_database, load_database
    from thinkscale.types import Message, Usage

    cache = ScoreCache(tmp_path / "scores.sqlite")
    keys = [ScoreCache.key("orm", (Message("user", "q"),), text) for text in ("a\r\nb", "c")]
    cache.put(keys[0], (0.25,), Usage(prompt_tokens=7))
    cache.put(keys[1], (0.5, 0.75), Usage(prompt_tokens=3, cached_prompt_tokens=2))
    assert dump_database(tmp_path / "scores.sqlite", tmp_path / "s.sql", count="SELECT COUNT(*) FROM scores") == 2
    cache.close()
    assert load_database(tmp_path / "s.sql", tmp_path / "copy" / "scores.sqlite",
                         count="SELECT COUNT(*) FROM scores") == 2
    loaded = ScoreCache(tmp_path / "copy" / "scores.sqlite")
    assert loaded.get(keys[0]) == ((0.25,), Usage(prompt_tokens=7))
    assert loaded.get(keys[1]) == ((0.5, 0.75), Usage(prompt_tokens=3, cached_prompt_tokens=2))
    loaded.close()
    with pytest.raises(StoreError, match="exists; not replacing"):
        load_database(tmp_path / "s.sql", tmp_path / "copy" / "scores.sqlite", count="SELECT 1")
    (tmp_path / "bad.sql").write_text("this is not SQL;\n")
    with pytest.raises(StoreError, match="not an SQL dump"):
        load_database(tmp_path / "bad.sql", tmp_path / "bad.sqlite", count="SELECT 1")
    assert not (tmp_path / "bad.sqlite").exists() and not (tmp_path / "bad.sqlite.partial").exists()
