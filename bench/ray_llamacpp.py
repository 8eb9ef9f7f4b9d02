"""One real sweep on Ray against one process (issue 28): 20 GSM8K problems, greedy, on the default model, run as

- ``scale-local-1x2-w1``: one process, one llama.cpp backend on 2 threads, one job at a time;
- ``scale-ray-2x1``: 2 Ray replicas on a local cluster, each its own llama.cpp backend on 1 thread, one job each;
- ``scale-local-1x2-w2``: one process, one backend on 2 threads, 2 jobs in flight (the backend decodes them together).

Each is a ``thinkscale eval`` run in ``--runs/NAME`` (a stored run is resumed, so finished configurations are not
run again); the summary reads the stores: sweep wall seconds (the sessions' ``wall_seconds``: model load and Ray
start-up excluded), generated tokens, tokens/s, accuracy, and how many answers and chains equal the first
configuration's (greedy decoding on 1 and 2 threads may differ in the last bits of the logits).

    .venv/bin/python bench/ray_llamacpp.py [--runs runs] [--limit 20] [--model qwen2.5-coder-0.5b]

The stores are committed (docs/results/stores/scale-*.sql; ``scripts/stores.py restore`` puts them back in runs/).

Writes bench/results/ray_llamacpp.json with the conditions (load average before and after, cores). Run it on a
quiet machine: the three share the 2 cores one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "results" / "ray_llamacpp.json"
CONFIGS = {
    "scale-local-1x2-w1": [],
    "scale-ray-2x1": ["--executor", "ray", "--replicas", "2", "--cpus-per-replica", "1"],
    "scale-local-1x2-w2": ["--workers", "2"],
}


def summarize(run: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{run / 'results.sqlite'}?mode=ro", uri=True)
    try:
        sessions = db.execute("SELECT command, jobs_done, wall_seconds, backend_seconds FROM sessions "
                              "WHERE jobs_done > 0").fetchall()
        tokens, correct, n = db.execute("SELECT SUM(completion_tokens), SUM(correct), COUNT(*) FROM units").fetchone()
        answers = dict(db.execute("SELECT problem_id, answer FROM units"))
        chains = dict(db.execute("SELECT j.problem_id, s.text FROM samples s JOIN jobs j USING (job_id)"))
    finally:
        db.close()
    wall = sum(s[2] for s in sessions)
    return {"sessions": [{"command": s[0], "jobs": s[1], "wall_seconds": round(s[2], 2),
                          "backend_seconds": round(s[3], 2) if s[3] is not None else None} for s in sessions],
            "jobs": n, "wall_seconds": round(wall, 2), "completion_tokens": int(tokens),
            "tok_per_s": round(tokens / wall, 2), "accuracy": round(correct / n, 3),
            "_answers": answers, "_chains": chains}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--conditions", default="", help="what else ran while the sweeps ran, recorded with the numbers")
    args = ap.parse_args()
    load_before = os.getloadavg()
    exe = Path(sys.executable).with_name("thinkscale")
    common = ["eval", "--dataset", "gsm8k", "--limit", str(args.limit), "--model", args.model, "--strategy", "greedy",
              "--budgets", "1", "--max-tokens", "512", "--quiet"]
    rows: dict[str, dict[str, Any]] = {}
    for name, extra in CONFIGS.items():
        cmd = [str(exe), *common, "--out", str(args.runs / name), *extra]
        subprocess.run(cmd, check=True)
        rows[name] = summarize(args.runs / name)
    first = next(iter(rows.values()))
    for r in rows.values():
        r["answers_equal_first"] = sum(r["_answers"][p] == a for p, a in first["_answers"].items())
        r["chains_equal_first"] = sum(r["_chains"][p] == c for p, c in first["_chains"].items())
    for r in rows.values():
        del r["_answers"], r["_chains"]
    base = rows["scale-local-1x2-w1"]["tok_per_s"]
    result = {
        "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "workload": f"gsm8k, {args.limit} problems (seed 0), greedy, max 512 tokens, {args.model}",
        "conditions": args.conditions,
        "runs": rows,
        "speedup_vs_local_1x2_w1": {k: round(r["tok_per_s"] / base, 3) for k, r in rows.items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {"wall_seconds": r["wall_seconds"], "tok_per_s": r["tok_per_s"], "accuracy": r["accuracy"],
                          "answers_equal_first": r["answers_equal_first"]} for k, r in rows.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
