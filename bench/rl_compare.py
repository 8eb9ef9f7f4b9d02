"""A trained model against its base on the same problems (issue 27's "done when"): for each strategy and budget both
eval runs hold, accuracy of each with a 95% bootstrap interval over problems and the paired difference (trained minus
base, bootstrap over per-problem differences, ``thinkscale.eval.metrics.bootstrap_ci``), on the problems both runs
graded; generated tokens per problem too. Nothing runs a model: both runs are read from their stores.

    .venv/bin/python bench/rl_compare.py runs/gsm8k-qwen0.5b runs/gsm8k-grpo-0.5b \\
        --strategy greedy:1 --strategy self-consistency:8 --out bench/results/rl/compare-grpo-0.5b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from thinkscale.eval.metrics import bootstrap_ci
from thinkscale.eval.store import open_existing


def units(run: Path, strategy: str, budget: int) -> tuple[str, dict[str, tuple[float, float]]]:
    """The run's model and, per problem, (correct, completion tokens) of ``strategy`` at ``budget`` (seed 0)."""
    store = open_existing(run, read_only=True)
    try:
        model = store.config()["models"][0]
        rows = store.rows("SELECT problem_id, correct, completion_tokens FROM units WHERE model = ? AND strategy = ? "
                          "AND budget = ? AND seed = 0", (model, strategy, budget))
    finally:
        store.close()
    if not rows:
        raise SystemExit(f"error: {run} has no {strategy} units at budget {budget}")
    return model, {r["problem_id"]: (float(r["correct"]), float(r["completion_tokens"] or 0.0)) for r in rows}


def compare(base: Path, trained: Path, strategy: str, budget: int) -> dict[str, Any]:
    base_model, b = units(base, strategy, budget)
    trained_model, t = units(trained, strategy, budget)
    shared = sorted(set(b) & set(t))
    diff = bootstrap_ci([t[p][0] - b[p][0] for p in shared])
    acc_b, acc_t = bootstrap_ci([b[p][0] for p in shared]), bootstrap_ci([t[p][0] for p in shared])
    return {"strategy": strategy, "budget": budget, "problems": len(shared),
            "base": {"model": base_model, "accuracy": acc_b.mean, "ci": [acc_b.low, acc_b.high],
                     "tokens_per_problem": statistics.mean(b[p][1] for p in shared)},
            "trained": {"model": trained_model, "accuracy": acc_t.mean, "ci": [acc_t.low, acc_t.high],
                        "tokens_per_problem": statistics.mean(t[p][1] for p in shared)},
            "difference": {"mean": diff.mean, "ci": [diff.low, diff.high], "excludes_zero": diff.low > 0 or
                           diff.high < 0}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("trained", type=Path)
    ap.add_argument("--strategy", action="append", required=True, help="STRATEGY:BUDGET, e.g. greedy:1")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    rows = []
    for spec in a.strategy:
        name, _, budget = spec.rpartition(":")
        if not name or not budget.isdigit():
            raise SystemExit(f"error: --strategy {spec!r}: give STRATEGY:BUDGET, e.g. greedy:1")
        rows.append(compare(a.base, a.trained, name, int(budget)))
    for r in rows:
        d = r["difference"]
        print(f"{r['strategy']}@{r['budget']} on {r['problems']} problems: base {r['base']['accuracy']:.3f} -> "
              f"trained {r['trained']['accuracy']:.3f}, difference {d['mean']:+.3f} [{d['ci'][0]:+.3f}, "
              f"{d['ci'][1]:+.3f}]; tokens {r['base']['tokens_per_problem']:.0f} -> "
              f"{r['trained']['tokens_per_problem']:.0f}")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["bench/rl_compare.py", *(argv if argv is not None else sys.argv[1:])])
        a.out.write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
