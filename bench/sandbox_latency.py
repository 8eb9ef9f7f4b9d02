"""Latency of one sandbox run, cold (a fresh sandbox per run) and warm (a pooled sandbox: a fork of a supervisor that
already imported numpy and sympy), measured on the host around ``Sandbox.run`` (queueing + run + cleanup).

    .venv/bin/python bench/sandbox_latency.py --runs 20 --out bench/results/sandbox_latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from thinkscale.tools.sandbox import Sandbox

SNIPPETS = {"print": "print(1)", "sympy": "import sympy\nprint(sympy.factorint(2**32 - 1))"}


def measure(pool_size: int, code: str, runs: int) -> dict[str, float]:
    with Sandbox(pool_size=pool_size) as sb:
        if pool_size:
            sb.warm()
            sb.run(code)  # first run after start-up pays page faults in the forked child once
        seconds = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r = sb.run(code)
            seconds.append(time.perf_counter() - t0)
            if r.exit_code != 0:
                raise SystemExit(f"run failed: {r}")
    return {"median_ms": statistics.median(seconds) * 1000, "p90_ms": sorted(seconds)[int(0.9 * (runs - 1))] * 1000,
            "min_ms": min(seconds) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/results/sandbox_latency.json"))
    args = ap.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    out = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                       "loadavg_at_start": load}, "runs": args.runs, "results": {}}
    for name, code in SNIPPETS.items():
        out["results"][name] = {"cold": measure(0, code, args.runs), "warm": measure(1, code, args.runs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
