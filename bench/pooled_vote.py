"""One vote over chains from several sources (issue 26 item 2): chain-of-thought self-consistency and program-aided
chains (SC-TIR, PAL) of the same model on the same problems, each source's chains weighted by how often that
source's chains were right on *train* problems (``--weights-from``; equal weights without it).

Every source is a stored run (``NAME=RUN`` or ``NAME=RUN@SAMPLER`` for a strategy other than self-consistency, e.g.
``tir=runs/gsm8k-qwen0.5b-tir@sc-tir:temperature=0.7``); the runs must hold the same problems. At each mix (k chains
of each source) the value on a problem is the mean over ``--subsets`` seeded draws of k_s chains from each source
(ties split), and it is compared, paired, with the plain vote over each source's chains alone at the same total
number of chains (where that source stores that many) and over the first source's alone at its own k. Chains are
scored by the stored grades; no model runs.

    .venv/bin/python bench/pooled_vote.py --source cot=runs/gsm8k-qwen0.5b \\
        --source "tir=runs/gsm8k-qwen0.5b-tir@sc-tir:temperature=0.7" --mix 8+8,4+4,12+4,16+8 \\
        --out bench/results/selection/pooled-qwen0.5b.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkscale.eval.metrics import bootstrap_ci, mean, selection_value
from thinkscale.eval.select import Draw, StoredRun, load_run
from thinkscale.verifiers.aggregate import Selection


def parse_source(text: str) -> tuple[str, str, str | None]:
    name, eq, rest = text.partition("=")
    if not eq or not name.strip() or not rest.strip():
        raise ValueError(f"--source {text!r}: write NAME=RUN or NAME=RUN@SAMPLER")
    run, at, sampler = rest.partition("@")
    return name.strip(), run.strip(), (sampler.strip() or None) if at else None


def parse_mix(text: str, n_sources: int) -> list[tuple[int, ...]]:
    mixes = []
    for item in text.split(","):
        parts = tuple(int(x) for x in item.split("+"))
        if len(parts) != n_sources or any(k < 0 for k in parts) or sum(parts) < 1:
            raise ValueError(f"--mix {item!r}: give {n_sources} counts >= 0 joined by '+', at least one chain")
        mixes.append(parts)
    return mixes


def source_weight(train: StoredRun) -> float:
    """The share of a source's chains that were right on the training problems."""
    total = sum(len(d.correct) for d in train.draws)
    return sum(sum(d.correct) for d in train.draws) / total


def pooled_value(draws: Sequence[Draw], mix: Sequence[int], weights: Sequence[float], reps: int,
                 rng: random.Random) -> float:
    """Mean over ``reps`` draws of ``mix[s]`` chains from each source of the weighted vote's correctness."""
    draw_keys = [d.keys for d in draws]  # a property that normalises every answer: once, not per draw
    total = 0.0
    for _ in range(reps):
        keys: list[str | None] = []
        ok: list[bool] = []
        w: list[float] = []
        for d, dk, k, ws in zip(draws, draw_keys, mix, weights, strict=True):
            for i in rng.sample(range(len(d.chains)), k):
                keys.append(dk[i])
                ok.append(d.correct[i])
                w.append(ws)
        total += selection_value(keys, ok, w, Selection.WEIGHTED_MAJORITY)
    return total / reps


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", required=True, help="NAME=RUN[@SAMPLER]; the first is the baseline")
    ap.add_argument("--weights-from", action="append", default=[],
                    help="NAME=TRAIN_RUN[@SAMPLER] for every source (chain accuracy on train problems)")
    ap.add_argument("--mix", required=True, help="chains per source, e.g. 8+8,4+4")
    ap.add_argument("--subsets", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        sources = [parse_source(s) for s in args.source]
        names = [n for n, _, _ in sources]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError("give at least two --source with distinct names")
        mixes = parse_mix(args.mix, len(sources))
        runs = {n: load_run(r, sampler=s) for n, r, s in sources}
        given = {n: (r, s) for n, r, s in (parse_source(x) for x in args.weights_from)}
        if given and set(given) != set(names):
            raise ValueError(f"--weights-from must name every source ({', '.join(names)}) or none")
        weights = {n: source_weight(load_run(r, sampler=s)) for n, (r, s) in given.items()} if given else \
            dict.fromkeys(names, 1.0)
        ids = sorted(d.problem_id for d in runs[names[0]].draws)
        by = {n: {d.problem_id: d for d in run.draws} for n, run in runs.items()}
        for n in names:
            if sorted(by[n]) != ids:
                raise ValueError(f"source {n} holds other problems than {names[0]}")
            for m in mixes:
                if m[names.index(n)] > runs[n].n_chains:
                    raise ValueError(f"--mix {m}: source {n} stores {runs[n].n_chains} chains per problem")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = names[0]
    table: dict[str, Any] = {}
    for m in mixes:
        w = [weights[n] for n in names]
        pooled = [pooled_value([by[n][p] for n in names], m, w, args.subsets, random.Random(f"{p}|{m}"))
                  for p in ids]
        row: dict[str, Any] = {"mix": dict(zip(names, m, strict=True))}
        est = bootstrap_ci(pooled)
        row["pooled"] = {"accuracy": est.mean, "ci95": [est.low, est.high]}
        checks = [(n, sum(m)) for n in names] + [(base, m[0])]
        for n, k in dict.fromkeys(checks):
            if not 1 <= k <= runs[n].n_chains:
                continue
            alone = [pooled_value([by[n][p]], [k], [1.0], args.subsets, random.Random(f"{p}|{n}|{k}")) for p in ids]
            d = bootstrap_ci([a - b for a, b in zip(pooled, alone, strict=True)])
            row.setdefault("alone", []).append({"source": n, "k": k, "accuracy": mean(alone),
                                                "pooled_minus_this": d.mean, "ci95": [d.low, d.high],
                                                "excludes_0": d.low > 0 or d.high < 0})
        table["+".join(map(str, m))] = row
        print(f"{row['mix']}: pooled {est.mean:.3f}; " + "; ".join(
            f"{v['source']} alone at {v['k']}: {v['accuracy']:.3f} (pooled - it {v['pooled_minus_this']:+.3f} "
            f"{[round(x, 3) for x in v['ci95']]})" for v in row.get("alone", [])))
    result = {"command": "bench/pooled_vote.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "sources": {n: {"run": r, "sampler": runs[n].sampler, "chains_per_problem": runs[n].n_chains}
                          for n, r, _ in sources},
              "weights": weights, "weights_from": {n: r for n, (r, _) in given.items()} or "equal (no train runs)",
              "problems": len(ids), "subsets": args.subsets, "by_mix": table}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
