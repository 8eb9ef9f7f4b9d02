"""Where a step search loses its right answers, from eval stores (no model needed): per budget of a tree-search run
(beam, DVTS, MCTS), its accuracy with a 95% percentile bootstrap interval; how often a right *finished* solution
was among the solutions the search finished (the pool its final selection chose from) and anywhere in its tree (kept
or pruned terminal nodes); mean generated tokens, verifier tokens, FLOPs and wall seconds per problem; and, given a
baseline run of the same model and problems, the paired difference with each baseline strategy config.

    .venv/bin/python bench/beam_coverage.py runs/gsm8k-qwen0.5b-beam --baseline runs/gsm8k-qwen0.5b \\
        --compare greedy@1 --compare self-consistency@4

Prints one markdown table row per budget (the columns of docs/results/gsm8k/README.md's beam table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkscale.eval.metrics import Estimate, bootstrap_ci
from thinkscale.eval.store import StoreError, open_existing
from thinkscale.strategies.events import Select, Tree, parse_trace
from thinkscale.types import Event


def _ci(e: Estimate, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    g = "+.2f" if signed else ".2f"
    return f"{e.mean:{f}} [{e.low:{g}}, {e.high:{g}}]"


def found(job_id: int, trace: Sequence[Event], right: dict[int, bool]) -> tuple[bool, bool]:
    """(a right solution among the finished ones the final selection chose from, a right terminal node anywhere in
    the tree). Beam search and DVTS trace that pool (candidate indices) in their ``Select`` event; MCTS, whose
    select names no pool, chooses among every terminal node. Candidates are the tree's nodes after the root, so
    node i is candidate i - 1."""
    tree = next((e for e in trace if isinstance(e, Tree)), None)
    if tree is None:
        raise ValueError(f"job {job_id}'s trace has no tree event: it is no tree search (beam, dvts, mcts)")
    terminal = {n.index - 1 for n in tree.nodes if n.index > 0 and n.terminal is not None}
    pool = next((e.pool for e in trace if isinstance(e, Select) and e.pool), None)
    finished = terminal if pool is None else terminal & set(pool)
    return any(right[i] for i in finished), any(right[i] for i in terminal)


def rows(run: Path, baseline: Path | None, compare: list[str]) -> list[str]:
    store = open_existing(run, read_only=True)
    try:
        units = store.rows("SELECT problem_id, budget, correct, completion_tokens, verifier_tokens, flops, "
                           "wall_seconds, job_id FROM units ORDER BY budget, problem_id")
        samples: dict[int, dict[int, bool]] = {}
        for s in store.rows("SELECT job_id, idx, correct FROM samples"):
            samples.setdefault(s["job_id"], {})[s["idx"]] = bool(s["correct"])
        traces = {j["job_id"]: parse_trace(json.loads(j["trace"]))
                  for j in store.rows("SELECT job_id, trace FROM jobs")}
    finally:
        store.close()
    base: dict[str, dict[str, float]] = {}
    if compare:
        if baseline is None:
            raise ValueError("--compare needs --baseline")
        bstore = open_existing(baseline, read_only=True)
        try:
            for spec in compare:
                strategy, _, budget = spec.rpartition("@")
                if not strategy or not budget.isdigit():
                    raise ValueError(f"--compare {spec!r}: expected STRATEGY@BUDGET, e.g. greedy@1")
                got = {r["problem_id"]: float(r["correct"]) for r in bstore.rows(
                    "SELECT problem_id, correct FROM units WHERE strategy = ? AND budget = ?", (strategy, int(budget)))}
                if not got:
                    raise ValueError(f"--compare {spec!r}: the baseline run {baseline} has no such units")
                base[spec] = got
        finally:
            bstore.close()
    out = []
    for budget in sorted({u["budget"] for u in units}):
        us = [u for u in units if u["budget"] == budget]
        n = len(us)
        hits = [found(u["job_id"], traces[u["job_id"]], samples.get(u["job_id"], {})) for u in us]

        def mean(key: str, us: list[Any] = us, n: int = n) -> float:
            return sum(u[key] or 0.0 for u in us) / n

        cells = [str(budget), _ci(bootstrap_ci([u["correct"] for u in us])), f"{mean('completion_tokens'):.0f}",
                 f"{mean('verifier_tokens'):.0f}", f"{mean('flops'):.1e}", f"{mean('wall_seconds'):.0f}",
                 f"{sum(h[0] for h in hits) / n:.2f}", f"{sum(h[1] for h in hits) / n:.2f}"]
        for spec, got in base.items():
            missing = [u["problem_id"] for u in us if u["problem_id"] not in got]
            if missing:
                raise ValueError(f"the baseline's {spec} has no unit for {len(missing)} problems, e.g. {missing[0]}")
            cells.append(_ci(bootstrap_ci([u["correct"] - got[u["problem_id"]] for u in us]), signed=True))
        out.append(f"| {' | '.join(cells)} |")
        print(f"budget {budget}: {n} problems", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the tree-search eval run folder")
    ap.add_argument("--baseline", type=Path, help="a run of the same model and problems to compare with")
    ap.add_argument("--compare", action="append", default=[], help="STRATEGY@BUDGET of the baseline (repeatable)")
    args = ap.parse_args(argv)
    try:
        print("\n".join(rows(args.run, args.baseline, args.compare)))
    except (StoreError, ValueError, KeyError) as e:
        print(f"beam_coverage: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
