"""Keep the measurement runs' stores in git, as SQL text, so a sweep that outlasts a machine resumes on the next one.

    .venv/bin/python scripts/stores.py save      # runs/NAME/results.sqlite -> docs/results/stores/NAME.sql
    .venv/bin/python scripts/stores.py restore   # docs/results/stores/NAME.sql -> runs/NAME/results.sqlite (if absent)

`save` dumps only committed jobs (safe while a sweep runs) and leaves a dump whose text did not change untouched;
`restore` never replaces a store that exists. scripts/measure.sh restores first; scripts/checkpoint.sh saves and
commits on a timer while it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thinkscale.eval.store import DB_NAME, StoreError, dump_sql, load_sql

ROOT = Path(__file__).resolve().parent.parent


def save(runs: Path, stores: Path) -> None:
    found = sorted(runs.glob(f"*/{DB_NAME}"))
    if not found:
        raise StoreError(f"no run stores under {runs} (runs/NAME/{DB_NAME}): nothing to save")
    stores.mkdir(parents=True, exist_ok=True)
    for db in found:
        dest = stores / f"{db.parent.name}.sql"
        new = stores / f"{db.parent.name}.sql.new"
        jobs = dump_sql(db.parent, new)
        if dest.is_file() and dest.read_bytes() == new.read_bytes():
            new.unlink()
            print(f"{dest.name}: unchanged ({jobs} jobs)")
            continue
        new.replace(dest)
        print(f"{dest.name}: {jobs} jobs")


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
