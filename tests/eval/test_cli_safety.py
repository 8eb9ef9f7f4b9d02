"""Finished results are never lost to a path mistake (issue 31): a read-only run (an archive, a read-only disk) is
reported and exported from a read-only SQLite connection, and ``eval --out`` / ``export -o`` / ``report --out``
on a path that cannot be written are one ``error:`` line with exit 2, not a traceback.

The tests run as root here, where ``chmod a-w`` stops nothing: the commands that must meet a read-only folder run
in a child process under uid 65534 (``setpriv``), for which the mode bits hold; as any other user they hold
already."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.eval.conftest import write_table
from thinkscale.cli import app
from thinkscale.eval.store import DB_NAME, StoreError, open_existing

NOBODY = 65534


def one_line_error(r, code: int = 2) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user can enter (pytest's own tmp_path is private to root), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="thinkscale-ro-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(base)


def finished_run(base: Path) -> Path:
    table = write_table(base / "table.json", limit=3)
    out = base / "run"
    r = CliRunner().invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "3", "--model", "fake", "--backend",
                                 f"scripted:{table}", "--strategy", "greedy", "--strategy", "self-consistency",
                                 "--budgets", "1,2", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def freeze(folder: Path) -> dict[str, str]:
    """``chmod -R a-w`` and a fingerprint of every file, to show that reading changed nothing."""
    for p in sorted(folder.rglob("*"), reverse=True) + [folder]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return fingerprint(folder)


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def as_reader(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """``thinkscale ARGS`` in a child process that cannot write what ``freeze`` made read-only: as uid 65534 when
    this is root, else as this user."""
    cmd = [sys.executable, "-m", "thinkscale.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no unprivileged user to meet the read-only folder")
        cmd = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *cmd]
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "PYTHONDONTWRITEBYTECODE": "1",
           "COLUMNS": "200"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=home)


@pytest.mark.parametrize("read_before", [False, True], ids=["closed-cleanly", "read-before-archiving"])
def test_a_read_only_run_is_exported_and_reported(shared_tmp: Path, read_before: bool):
    """A run closed by its sweep has no write-ahead log (opened ``immutable``); one that was read before it was
    archived keeps the reader's empty log and shared-memory file (opened ``mode=ro`` with a read-only -shm)."""
    run = finished_run(shared_tmp)
    copy = shutil.copytree(run, shared_tmp / "copy")
    expected = CliRunner().invoke(app, ["export", str(copy)]).stdout
    assert len(expected.splitlines()) == 9  # 3 problems x (greedy, and self-consistency at budgets 1 and 2)
    if read_before:
        assert CliRunner().invoke(app, ["export", str(run)]).stdout == expected
    assert (run / f"{DB_NAME}-wal").exists() is read_before
    before = freeze(run)

    exported = as_reader(["export", str(run)], shared_tmp / "home")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == expected
    report_dir = shared_tmp / "home" / "report"
    reported = as_reader(["report", str(run), "--out", str(report_dir), "--reps", "50"], shared_tmp / "home")
    assert reported.returncode == 0, reported.stderr
    assert (report_dir / "report.html").is_file() and "self-consistency" in reported.stdout
    # the default report folder is inside the read-only run: the tables are printed, then one error line says so
    default = as_reader(["report", str(run), "--reps", "50"], shared_tmp / "home")
    assert default.returncode == 1 and "self-consistency" in default.stdout
    assert default.stderr.strip().startswith("error: ") and "give --out DIR" in default.stderr
    assert len(default.stderr.strip().splitlines()) == 1 and "Traceback" not in default.stderr
    assert fingerprint(run) == before  # nothing in the archive was touched or added


def test_a_killed_runs_log_in_a_read_only_folder_is_named_not_skipped(shared_tmp: Path):
    """Commits still in the write-ahead log cannot be read without writing beside it: an error naming the log,
    never a run that silently lacks them."""
    run = finished_run(shared_tmp)
    (run / f"{DB_NAME}-wal").write_bytes(b"\0" * 4096)
    freeze(run)
    r = as_reader(["export", str(run)], shared_tmp / "home")
    assert r.returncode == 2 and r.stdout == ""
    assert "write-ahead log" in r.stderr and "Traceback" not in r.stderr


def test_the_read_only_connection_cannot_write(tmp_path: Path):
    run = finished_run(tmp_path)
    store = open_existing(run, read_only=True)
    try:
        assert store.config()["dataset"] == "gsm8k"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.set_meta("schema_version", "99")
    finally:
        store.close()
    with pytest.raises(StoreError, match="not a run folder"):
        open_existing(tmp_path / "nothing", read_only=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable thinkscale run store"):
        open_existing(tmp_path / "junk", read_only=True)


def test_an_older_store_without_the_chains_table_reads_read_only(tmp_path: Path):
    run = finished_run(tmp_path)
    db = sqlite3.connect(run / DB_NAME)
    db.execute("DROP TABLE chains")
    db.commit()
    db.close()
    r = CliRunner().invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 9
    db = sqlite3.connect(run / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'chains'").fetchone() == (0,)  # not added
    db.close()


# --- paths that cannot be written: one error line, exit 2 -----------------------------------------------------


def eval_args(table: Path, out: Path) -> list[str]:
    return ["eval", "--dataset", "gsm8k", "--limit", "2", "--model", "fake", "--backend", f"scripted:{table}",
            "--strategy", "greedy", "--out", str(out), "--quiet"]


def test_eval_out_on_an_existing_file(table: Path, tmp_path: Path):
    target = tmp_path / "results.csv"
    target.write_text("keep me\n")
    line = one_line_error(CliRunner().invoke(app, eval_args(table, target)))
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "keep me\n"
    line = one_line_error(CliRunner().invoke(app, eval_args(table, target / "run")))
    assert f"{target} is a file" in line


def test_eval_out_on_a_read_only_folder(shared_tmp: Path):
    table = write_table(shared_tmp / "table.json", limit=2)
    folder = shared_tmp / "archive"
    folder.mkdir()
    freeze(folder)
    r = as_reader(eval_args(table, folder), shared_tmp / "home")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and "cannot be written" in lines[0], r.stderr
    assert list(folder.iterdir()) == []


def test_eval_out_where_no_folder_can_be_made(table: Path):
    line = one_line_error(CliRunner().invoke(app, eval_args(table, Path("/proc/nope/run"))))
    assert "/proc/nope/run" in line


@pytest.mark.parametrize("output", ["/proc/nope/x.csv", "DIR"])
def test_export_to_a_path_that_cannot_be_written(tmp_path: Path, output: str):
    run = finished_run(tmp_path)
    target = str(tmp_path) if output == "DIR" else output
    line = one_line_error(CliRunner().invoke(app, ["export", str(run), "--format", "csv", "-o", target]))
    assert f"--output {target}" in line and "cannot write" in line


def test_report_out_that_cannot_be_made(tmp_path: Path):
    run = finished_run(tmp_path)
    (tmp_path / "a-file").write_text("x")
    line = one_line_error(CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "a-file")]))
    assert "a-file" in line and "is a file" in line
    line = one_line_error(CliRunner().invoke(app, ["report", str(run), "--out", "/proc/nope/report"]))
    assert "/proc/nope/report" in line and "cannot be created" in line


def test_export_jsonl_rows_are_plain_json(tmp_path: Path):
    run = finished_run(tmp_path)
    r = CliRunner().invoke(app, ["export", str(run)])
    assert all(isinstance(json.loads(line), dict) for line in r.stdout.splitlines())
