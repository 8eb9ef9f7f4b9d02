"""What deterministic mode costs and what it buys: the same small sweep run twice batched as usual and twice in
deterministic mode (every backend call alone, from an empty KV cache), on 2 workers. Reports each run's wall seconds
and how many stored samples differ between the two runs of each mode.

    .venv/bin/python bench/determinism.py --model smollm2-135m --limit 5 --out bench/results/determinism.json

Take the timing ratio only on a quiet machine (the results file records the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from thinkscale.backends import load_backend
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import run_sweep


def samples(out: Path) -> dict[tuple[Any, ...], str]:
    """(strategy, problem, sample index) -> text of a run's stored samples."""
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT j.strategy, j.problem_id, s.idx, s.text FROM samples s JOIN jobs j USING (job_id)")
        return {(r[0], r[1], r[2]): r[3] for r in rows}


def one(cfg: SweepConfig, out: Path, deterministic: bool) -> tuple[float, dict[tuple[Any, ...], str]]:
    t0 = time.perf_counter()
    run_sweep(cfg, out, workers=2, backend_factory=lambda model: load_backend(model, deterministic=deterministic))
    return time.perf_counter() - t0, samples(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("bench/results/determinism.json"))
    args = ap.parse_args()
    if args.limit < 1 or args.max_tokens < 1:
        print("error: --limit and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    strategies = ("greedy", "self-consistency", "beam:verifier=pyes,max_steps=4")
    load_before = os.getloadavg()
    result: dict[str, Any] = {"command": " ".join(["bench/determinism.py", *sys.argv[1:]]), "model": args.model,
                              "problems": args.limit, "max_tokens": args.max_tokens, "strategies": strategies,
                              "budgets": [4], "workers": 2, "cores": os.cpu_count(),
                              "platform": platform.platform(), "load_average_before": load_before}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, det in (("batched", False), ("deterministic", True)):
            cfg = SweepConfig(dataset="gsm8k", limit=args.limit, models=[args.model], strategies=strategies,
                              budgets=[4], max_tokens=args.max_tokens, deterministic=det)
            (s1, a), (s2, b) = (one(cfg, Path(tmp) / f"{mode}{i}", det) for i in range(2))
            # a search may even store a different number of samples (its tree grew differently): missing ones differ
            differ = sum(a.get(k) != b.get(k) for k in set(a) | set(b))
            result[mode] = {"wall_seconds": [round(s1, 2), round(s2, 2)], "samples": [len(a), len(b)],
                            "samples_that_differ_between_runs": differ}
            print(f"{mode}: {s1:.1f} s, {s2:.1f} s; {differ} of {len(set(a) | set(b))} samples differ between the runs")
    result["load_average_after"] = os.getloadavg()
    b, d = result["batched"], result["deterministic"]
    result["deterministic_over_batched_wall"] = round(sum(d["wall_seconds"]) / sum(b["wall_seconds"]), 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
