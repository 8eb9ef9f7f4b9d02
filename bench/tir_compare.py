"""SC-TIR vs plain self-consistency on the same problems at the same budget k (issue 7), from two eval runs' stores
(no model needed).

Both runs must use the same model, problems and per-path token cap (docs/results/gsm8k/sweep-*-tir.toml copy the
self-consistency sweeps' knobs), so budget k caps both at k x max_tokens generated tokens. Per budget k: each
strategy's accuracy over the problems both runs have, with a 95% percentile bootstrap interval, and the paired
difference SC-TIR - SC with its own interval (the problems resampled jointly, so the shared difficulty cancels);
mean generated tokens and FLOPs per problem. From the SC-TIR jobs' traces (``tool`` and ``paths`` events): the share
of paths that ran code, code runs per path, how the runs ended, sandbox seconds per job, and how paths ended.

    .venv/bin/python bench/tir_compare.py runs/gsm8k-qwen0.5b runs/gsm8k-qwen0.5b-tir \\
        --out bench/results/tir-qwen0.5b.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from thinkscale.eval.metrics import Estimate, bootstrap_ci
from thinkscale.eval.store import StoreError, open_existing
from thinkscale.strategies.events import Tool, parse_trace
from thinkscale.strategies.sc_tir import Paths

SC = "self-consistency"
Key = tuple[str, str, int]  # (model, problem, budget)


def units(run: str, prefix: str) -> dict[Key, dict[str, Any]]:
    """(model, problem, budget) -> the unit of the run's strategy whose spec starts with ``prefix``."""
    store = open_existing(run, read_only=True)
    try:
        rows = store.rows("select model, strategy, problem_id, budget, correct, completion_tokens, flops from units")
    finally:
        store.close()
    out: dict[Key, dict[str, Any]] = {}
    specs = set()
    for r in rows:
        name = r["strategy"].split(":", 1)[0]
        if name != prefix:
            continue
        specs.add(r["strategy"])
        out[(r["model"], r["problem_id"], r["budget"])] = dict(r)
    if not out:
        raise StoreError(f"{run} has no {prefix} units")
    if len(specs) > 1:
        raise StoreError(f"{run} holds several {prefix} configs ({sorted(specs)}); compare one at a time")
    return out


def side(acc: Estimate, units: dict[Key, dict[str, Any]], keys: list[Key]) -> dict[str, Any]:
    """One strategy's row at one budget: accuracy with its interval, mean generated tokens and FLOPs per problem."""
    def mean_of(column: str) -> float:
        return sum(units[key][column] for key in keys) / len(keys)
    return {"accuracy": round(acc.mean, 3), "ci": [round(acc.low, 3), round(acc.high, 3)],
            "completion_tokens": round(mean_of("completion_tokens")), "flops": float(f"{mean_of('flops'):.3g}")}


def tool_stats(run: str) -> dict[str, Any]:
    store = open_existing(run, read_only=True)
    try:
        traces = [parse_trace(json.loads(r["trace"])) for r in store.rows("select trace from jobs")]
    finally:
        store.close()
    paths = with_code = runs = 0
    outcomes: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    sandbox = []
    for trace in traces:
        seconds = 0.0
        for e in trace:
            if isinstance(e, Tool):
                runs += 1
                seconds += e.wall_seconds
                if e.timed_out or e.killed_reason:
                    outcomes[f"killed: {e.killed_reason or 'timeout'}"] += 1
                elif e.exit_code == 0:
                    outcomes["clean"] += 1
                else:
                    outcomes["raised"] += 1
            elif isinstance(e, Paths):
                paths += len(e.code_runs)
                with_code += sum(1 for c in e.code_runs if c > 0)
                ends.update(e.ends)
        sandbox.append(seconds)
    if not paths:
        raise StoreError(f"{run}'s jobs have no 'paths' trace events: not an SC-TIR run")
    return {"jobs": len(traces), "paths": paths, "paths_with_code": round(with_code / paths, 3),
            "code_runs_per_path": round(runs / paths, 3), "code_runs": dict(outcomes),
            "sandbox_seconds_per_job": round(sum(sandbox) / len(sandbox), 3),
            "path_ends": {k: round(v / paths, 3) for k, v in sorted(ends.items())}}


def compare(sc_run: str, tir_run: str) -> dict[str, Any]:
    sc, tir = units(sc_run, SC), units(tir_run, "sc-tir")
    models = {m for m, _, _ in tir}
    if len(models) != 1:
        raise StoreError(f"{tir_run} holds {len(models)} models; compare one at a time")
    budgets = sorted({b for _, _, b in tir})
    rows = []
    for k in budgets:
        keys = sorted(key for key in tir if key[2] == k and key in sc)
        if not keys:
            raise StoreError(f"no problem has both a {SC} and an sc-tir unit at budget {k} for model {models}")
        a = [sc[key]["correct"] for key in keys]
        b = [tir[key]["correct"] for key in keys]
        # the paired difference: the per-problem differences resampled, so both strategies see the same problems
        ea, eb, ed = bootstrap_ci(a), bootstrap_ci(b), bootstrap_ci([y - x for x, y in zip(a, b, strict=True)])
        rows.append({"budget": k, "problems": len(keys), "sc": side(ea, sc, keys), "sc_tir": side(eb, tir, keys),
                     "difference": {"accuracy": round(ed.mean, 3), "ci": [round(ed.low, 3), round(ed.high, 3)]}})
    return {"model": models.pop(), "sc_run": sc_run, "tir_run": tir_run, "budgets": rows, "tools": tool_stats(tir_run)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sc_run", help="the eval run holding self-consistency units")
    ap.add_argument("tir_run", help="the eval run holding sc-tir units (same model and problems)")
    ap.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    try:
        result = compare(args.sc_run, args.tir_run)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{result['model']}: SC ({args.sc_run}) vs SC-TIR ({args.tir_run})")
    print(f"{'k':>3} {'n':>4}  {'SC acc [95% CI]':<21} {'tok':>5}  {'SC-TIR acc [95% CI]':<21} {'tok':>5}  "
          f"{'TIR - SC [95% CI]':<22}")
    for r in result["budgets"]:
        s, t, d = r["sc"], r["sc_tir"], r["difference"]
        print(f"{r['budget']:>3} {r['problems']:>4}  {s['accuracy']:.3f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]    "
              f"{s['completion_tokens']:>5}  {t['accuracy']:.3f} [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}]    "
              f"{t['completion_tokens']:>5}  {d['accuracy']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]")
    print("tools:", json.dumps(result["tools"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
