"""Keep the measurement runs' stores in git, as SQL text, so a sweep that outlasts a machine resumes on the next one.

    .venv/bin/python scripts/stores.py save      # runs/NAME/results.sqlite -> docs/results/stores/NAME.sql
    .venv/bin/python scripts/stores.py restore   # docs/results/stores/NAME.sql -> runs/NAME/results.sqlite (if absent)

Score caches go with them (runs/orm/*-scores.sqlite <-> docs/results/stores/caches/orm/*.sql): the ORM's scores of
the stored chains that the auto replays read (scripts/auto_verifier.sh, scripts/auto_transfer.sh), so those replays
need no model on a new machine.

`save` dumps only committed jobs (safe while a sweep runs) and leaves a dump whose text did not change untouched;
`restore` never replaces a store that exists. scripts/measure.sh restores first; scripts/checkpoint.sh saves and
commits on a timer while it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thinkscale.eval.store import DB_NAME, StoreError, dump_database, dump_sql, load_database, load_sql

ROOT = Path(__file__).resolve().parent.parent
CACHES = ("orm/*-scores.sqlite",)  # under runs/: score caches (thinkscale.eval.chain_scores.ScoreCache files)
SCORES = "SELECT COUNT(*) FROM scores"  # what a score cache's dump counts


def _replace_if_changed(new: Path, dest: Path, what: str) -> None:
    if dest.is_file() and dest.read_bytes() == new.read_bytes():
        new.unlink()
        print(f"{dest.name}: unchanged ({what})")
        return
    new.replace(dest)
    print(f"{dest.name}: {what}")


def save(runs: Path, stores: Path) -> None:
    found = sorted(runs.glob(f"*/{DB_NAME}"))
    if not found:
        raise StoreError(f"no run stores under {runs} (runs/NAME/{DB_NAME}): nothing to save")
    stores.mkdir(parents=True, exist_ok=True)
    for db in found:
        dest = stores / f"{db.parent.name}.sql"
        new = stores / f"{db.parent.name}.sql.new"
        _replace_if_changed(new, dest, f"{dump_sql(db.parent, new)} jobs")
    for pattern in CACHES:
        for db in sorted(runs.glob(pattern)):
            dest = (stores / "caches" / db.relative_to(runs)).with_suffix(".sql")
            dest.parent.mkdir(parents=True, exist_ok=True)
            new = dest.with_name(dest.name + ".new")
            _replace_if_changed(new, dest, f"{dump_database(db, new, count=SCORES)} scores")


def restore(runs: Path, stores: Path) -> None:
    if not stores.is_dir():
        raise StoreError(f"{stores} is not a folder of store dumps")
    dumps = sorted(stores.glob("*.sql"))
    if not dumps:
        print(f"{stores}: no store dumps, nothing to restore")
    for dump in dumps:
        out = runs / dump.stem
        if (out / DB_NAME).exists():
            print(f"{out}: store exists, kept")
            continue
        print(f"{out}: {load_sql(dump, out)} jobs restored from {dump}")
    for dump in sorted((stores / "caches").glob("**/*.sql")):
        db = (runs / dump.relative_to(stores / "caches")).with_suffix(".sqlite")
        if db.exists():
            print(f"{db}: cache exists, kept")
            continue
        print(f"{db}: {load_database(dump, db, count=SCORES)} scores restored from {dump}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["save", "restore"])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder of run folders (default: runs/)")
    ap.add_argument("--stores", type=Path, default=ROOT / "docs/results/stores",
                    help="folder of SQL dumps (default: docs/results/stores/)")
    args = ap.parse_args()
    try:
        (save if args.action == "save" else restore)(args.runs, args.stores)
    except StoreError as e:
        print(f"stores.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
