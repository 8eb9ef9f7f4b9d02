"""Wall-clock latency of ``thinkscale check`` from the command line: a fresh process per call, as a script would run
it, for the slow cases of issue 31 (hostile math answers, a negative number) and two floors (importing the CLI, and
an in-process numeric verdict). The promise: every case under 2 s on a quiet machine.

    .venv/bin/python bench/check_latency.py --runs 5 --out bench/results/check_latency.json

Each case runs ``--runs`` times; the JSON has every time, the median and the maximum, the exit status and output of
the last run, and the machine's conditions (CPUs, load average before and after, Python). A load average near or
above the CPU count means the numbers include waiting for a core; ``cpu_s`` (user + system time of the command and
every process it waited for: the math-verify worker and its comparison) does not, and is what the wall time comes
down to on a quiet machine, where these steps run one after the other. ``--baseline DIR`` also times the ``thinkscale``
package in DIR (e.g. ``git archive <commit> thinkscale | tar -x -C DIR``), alternating run by run with this checkout
so that both see the same load:

    .venv/bin/python bench/check_latency.py --runs 5 --baseline /tmp/before --baseline-label "before (d57d117)"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES: dict[str, list[str]] = {
    "iterated factorial 10!!!!!!!!!! vs 3628800": ["--task", "math", "10!!!!!!!!!!", "3628800"],
    "\\frac{1}{0} vs 1": ["--task", "math", "\\frac{1}{0}", "1"],
    "10^10^10 vs 1": ["--task", "math", "10^10^10", "1"],
    "factorial(100000) vs 1": ["--task", "math", "factorial(100000)", "1"],
    "integral \\int_0^1 x^2 dx vs 1/3": ["--task", "math", "\\int_0^1 x^2\\,dx", "\\frac{1}{3}"],
    "-3 vs 3, numeric": ["--task", "numeric", "-3", "3"],
    "-3 vs 3, numeric, after --": ["--task", "numeric", "--", "-3", "3"],
    "10^{10^{10^{10}}} vs 1": ["--task", "math", "10^{10^{10^{10}}}", "1"],
    "floor: 18 vs 18, numeric": ["--task", "numeric", "18", "18"],
}


def _shown(arg: str) -> str:
    """A path inside the working folder as a relative one: results files name no machine's folders."""
    path = Path(arg)
    return str(path.relative_to(Path.cwd())) if path.is_absolute() and path.is_relative_to(Path.cwd()) else arg


def _command() -> list[str]:
    script = Path(sys.executable).with_name("thinkscale")
    return [str(script)] if script.exists() else [sys.executable, "-m", "thinkscale.cli"]


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _once(argv: list[str], pythonpath: str | None) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "COLUMNS": "100"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cpu0, t0 = _cpu(), time.perf_counter()
    # not from the checkout's directory: `python -c` would import thinkscale from there before PYTHONPATH
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tempfile.gettempdir())
    return time.perf_counter() - t0, _cpu() - cpu0, proc


def _summary(seconds: list[float], cpu: list[float], proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return {"seconds": [round(s, 3) for s in seconds], "median_s": round(statistics.median(seconds), 3),
            "max_s": round(max(seconds), 3), "cpu_s": [round(c, 3) for c in cpu],
            "median_cpu_s": round(statistics.median(cpu), 3), "exit_status": proc.returncode,
            "stdout": proc.stdout.strip(), "stderr": proc.stderr.strip()[-300:]}


def _time(argv: list[str], runs: int, baseline: str | None) -> dict[str, Any]:
    """``runs`` timings of ``argv`` (and, with ``baseline``, of the same command importing that tree, alternated)."""
    times: dict[str | None, list[float]] = {None: [], baseline: []}
    cpus: dict[str | None, list[float]] = {None: [], baseline: []}
    last: dict[str | None, subprocess.CompletedProcess[str]] = {}
    for _ in range(runs):
        for tree in ([None, baseline] if baseline is not None else [None]):
            seconds, cpu, last[tree] = _once(argv, tree)
            times[tree].append(seconds)
            cpus[tree].append(cpu)
    out = _summary(times[None], cpus[None], last[None])
    if baseline is not None:
        out["baseline"] = _summary(times[baseline], cpus[baseline], last[baseline])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--baseline", help="a directory holding another thinkscale package to time alongside")
    ap.add_argument("--baseline-label", default="baseline")
    ap.add_argument("--out", type=Path, default=Path("bench/results/check_latency.json"))
    args = ap.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    command = _command()
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform(), "loadavg_before": _loadavg()}
    out: dict[str, Any] = {
        "label": args.label, "baseline_label": args.baseline_label if args.baseline else None,
        "command": " ".join([*map(_shown, command), "check", "..."]), "runs": args.runs,
        "machine": machine,
        "promise_s": 2.0,
    }
    results: dict[str, dict[str, Any]] = {
        "floor: import thinkscale.cli": _time([sys.executable, "-c", "import thinkscale.cli"], args.runs,
                                              args.baseline)}
    for name, case in CASES.items():
        r = results[name] = _time([*command, "check", *case], args.runs, args.baseline)
        line = (f"{name:45s} median {r['median_s']:.2f} s (cpu {r['median_cpu_s']:.2f} s)  max {r['max_s']:.2f} s  "
                f"exit {r['exit_status']}")
        if "baseline" in r:
            b = r["baseline"]
            line += f"   | baseline {b['median_s']:.2f} s (cpu {b['median_cpu_s']:.2f} s)  exit {b['exit_status']}"
        print(line, flush=True)
    machine["loadavg_after"] = _loadavg()
    out["results"] = results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
