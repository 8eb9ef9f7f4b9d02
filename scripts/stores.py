"""Keep the measurement runs' stores in git, as SQL text, so a sweep that outlasts a machine resumes on the next one.

    .venv/bin/python scripts/stores.py save      # runs/NAME/results.sqlite -> docs/results/stores/NAME.sql
    .venv/bin/python scripts/stores.py restore   # docs/results/stores/NAME.sql -> runs/NAME/results.sqlite (if absent)

Score caches go with them (runs/orm/*-scores.sqlite <-> docs/results/stores/caches/orm/*.sql): the ORM's scores of
the stored chains that the auto replays read (scripts/auto_verifier.sh, scripts/auto_transfer.sh), so those replays
need no model on a new machine.

Training runs (``thinkscale train grpo``, runs/rl/NAME/) are kept on request, not on the timer, because their weights
are binary (a LoRA adapter of the 0.5B is ~35 MB, a resumable checkpoint with its optimizer state ~105 MB):

    .venv/bin/python scripts/stores.py save-rl runs/rl/NAME   # -> docs/results/stores/rl/NAME/
    .venv/bin/python scripts/stores.py restore                # also: docs/results/stores/rl/NAME -> runs/rl/NAME

`save-rl` copies the run's logs and settings and its final adapter, or while it is unfinished its newest checkpoint
(optimizer state included, so `train grpo --resume` goes on exactly); an older checkpoint there is replaced.

`save` dumps only committed jobs (safe while a sweep runs) and leaves a dump whose text did not change untouched;
`restore` never replaces a store that exists. scripts/measure.sh restores first; scripts/checkpoint.sh saves and
commits on a timer while it runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from thinkscale.eval.store import DB_NAME, StoreError, dump_database, dump_sql, load_database, load_sql
from thinkscale.rl.grpo import last_checkpoint

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


RL_FILES = ("settings.json", "metrics.jsonl", "heldout.jsonl", "model.json", "reward.png")  # of a train grpo run
RL_LEFT_OUT = ("tokenizer.json",)  # in an adapter or checkpoint folder


def save_rl(run: Path, stores: Path) -> None:
    """Copy a training run's settings, logs and its final adapter (else its newest finished checkpoint) to
    ``stores/rl/NAME``; written beside and renamed, so a kill leaves the old copy or the new one."""
    if not (run / "settings.json").is_file():
        raise StoreError(f"{run} is not a train grpo run (no settings.json)")
    weights = run / "adapter" if (run / "adapter").is_dir() else \
        last_checkpoint(run / "checkpoints", remove_unfinished=False)  # training may be writing the next one
    if weights is None:
        raise StoreError(f"{run} has neither a final adapter nor a finished checkpoint yet: nothing worth keeping")
    dest = stores / "rl" / run.name
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RL_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, tmp / name)
    # the base model's tokenizer (11 MB for Qwen) is left out: export and resume read it from the base GGUF
    shutil.copytree(weights, tmp / weights.relative_to(run), ignore=shutil.ignore_patterns(*RL_LEFT_OUT))
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.replace(old)
    tmp.replace(dest)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {weights.relative_to(run)} and logs ({size / 2**20:.0f} MiB)")


def restore_rl(runs: Path, stores: Path) -> None:
    for kept in sorted(p for p in (stores / "rl").glob("*") if (p / "settings.json").is_file()):
        run = runs / "rl" / kept.name
        if (run / "settings.json").exists():
            print(f"{run}: run exists, kept")
            continue
        if run.exists() and any(run.iterdir()):
            raise StoreError(f"{run} exists without settings.json: move it away to restore {kept}")
        shutil.copytree(kept, run, dirs_exist_ok=True)
        print(f"{run}: restored from {kept}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["save", "restore", "save-rl"])
    ap.add_argument("run", type=Path, nargs="?", help="save-rl: the train grpo run folder (runs/rl/NAME)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder of run folders (default: runs/)")
    ap.add_argument("--stores", type=Path, default=ROOT / "docs/results/stores",
                    help="folder of SQL dumps (default: docs/results/stores/)")
    args = ap.parse_args()
    try:
        if args.action == "save-rl":
            if args.run is None:
                raise StoreError("save-rl needs the run folder: stores.py save-rl runs/rl/NAME")
            save_rl(args.run, args.stores)
        elif args.run is not None:
            raise StoreError(f"{args.action} takes no run folder (got {args.run})")
        elif args.action == "save":
            save(args.runs, args.stores)
        else:
            restore(args.runs, args.stores)
            restore_rl(args.runs, args.stores)
    except StoreError as e:
        print(f"stores.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
