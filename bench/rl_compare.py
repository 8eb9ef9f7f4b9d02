"""A trained model against its base on the same problems (issue 27's "done when"): for each strategy and budget both
eval runs hold, accuracy of each with a 95% bootstrap interval over problems and the paired difference (trained minus
base, bootstrap over per-problem differences, ``thinkscale.eval.metrics.bootstrap_ci``), on the problems both runs
graded; generated tokens per problem too. Nothing runs a model: both runs are read from their stores.

    .venv/bin/python bench/rl_compare.py runs/gsm8k-qwen0.5b runs/gsm8k-grpo-0.5b \\
        --strategy greedy:1 --strategy self-consistency:8 --out bench/results/rl/compare-grpo-0.5b.json

A run's first model is compared unless ``--base-model``/``--trained-model`` names another of its models (one run may
hold both); ``--trained-strategy`` (one per ``--strategy``, in order) compares the trained model under another spec,
e.g. the thinking model's ``greedy:prefill=<think>\\n`` against the base model's plain ``greedy``.
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


def units(run: Path, strategy: str, budget: int,
          model: str | None = None) -> tuple[str, dict[str, tuple[float, float]]]:
    """The run's ``model`` (default its first) and, per problem, (correct, completion tokens) of ``strategy`` at
    ``budget`` (seed 0)."""
    store = open_existing(run, read_only=True)
    try:
        models = store.config()["models"]
        if model is None:
            model = models[0]
        elif model not in models:
            raise SystemExit(f"error: {run} has no model {model!r}; its models: {', '.join(models)}")
        rows = store.rows("SELECT problem_id, correct, completion_tokens FROM units WHERE model = ? AND strategy = ? "
                          "AND budget = ? AND seed = 0", (model, strategy, budget))
    finally:
        store.close()
    if not rows:
        raise SystemExit(f"error: {run} has no {strategy} units at budget {budget}")
    return model, {r["problem_id"]: (float(r["correct"]), float(r["completion_tokens"] or 0.0)) for r in rows}


def compare(base: Path, trained: Path, strategy: str, budget: int, *, trained_strategy: str | None = None,
            base_model: str | None = None, trained_model: str | None = None) -> dict[str, Any]:
    base_model, b = units(base, strategy, budget, base_model)
    trained_model, t = units(trained, trained_strategy or strategy, budget, trained_model)
    shared = sorted(set(b) & set(t))
    diff = bootstrap_ci([t[p][0] - b[p][0] for p in shared])
    acc_b, acc_t = bootstrap_ci([b[p][0] for p in shared]), bootstrap_ci([t[p][0] for p in shared])
    return {"strategy": strategy, "trained_strategy": trained_strategy or strategy, "budget": budget,
            "problems": len(shared),
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
    ap.add_argument("--trained-strategy", action="append", default=[],
                    help="the trained model's spec for the --strategy in the same place (default: the same spec)")
    ap.add_argument("--base-model", help="the base run's model to compare (default: its first)")
    ap.add_argument("--trained-model", help="the trained run's model to compare (default: its first)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if a.trained_strategy and len(a.trained_strategy) != len(a.strategy):
        raise SystemExit(f"error: {len(a.trained_strategy)} --trained-strategy for {len(a.strategy)} --strategy: "
                         "give one for each, in order, or none")
    rows = []
    for i, spec in enumerate(a.strategy):
        name, _, budget = spec.rpartition(":")
        if not name or not budget.isdigit():
            raise SystemExit(f"error: --strategy {spec!r}: give STRATEGY:BUDGET, e.g. greedy:1")
        rows.append(compare(a.base, a.trained, name, int(budget),
                            trained_strategy=a.trained_strategy[i] if a.trained_strategy else None,
                            base_model=a.base_model, trained_model=a.trained_model))
    for r in rows:
        d = r["difference"]
        label = r["strategy"] if r["trained_strategy"] == r["strategy"] else \
            f"{r['strategy']} vs {r['trained_strategy']!r}"
        print(f"{label}@{r['budget']} on {r['problems']} problems: base {r['base']['accuracy']:.3f} -> "
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
