"""Can a verifier score of the greedy chain decide when auto may stop at greedy? (issue 26 item 5, feasibility.)

On a run with greedy and self-consistency chains, the packaged ORM (``verifier=orm``) scores each problem's greedy
chain (computed once, cached in ``--cache``: the ORM reads the model's hidden states, so this part runs the model).
Then, with no model, a gate is replayed on the stored chains for every threshold t and k: the greedy chain's ORM
probability p >= t -> answer with greedy (its tokens); else -> vote over the greedy chain and the first k sampled
chains, a tie the greedy answer is in going to it (auto's ``greedy_breaks_ties``), the tokens of all k + 1 chains.
Reported per (k, t): accuracy (a tie without the greedy answer split evenly), greedy's accuracy, the share of
problems stopped at greedy, mean generated tokens over greedy's, and auto's tokens over greedy's on the problems
that end with greedy's answer (issue 26's transfer target: <= 1.5x) -- every threshold, not a chosen one: a policy
must choose t on training problems.

    .venv/bin/python bench/orm_gate.py runs/gsm8k-qwen0.5b --cache runs/orm/gate-scores.sqlite \\
        --out bench/results/auto_vs_greedy/orm-gate-gsm8k-test.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.draws import problem_messages
from thinkscale.eval.metrics import selection_value
from thinkscale.eval.select import load_run
from thinkscale.eval.store import open_existing
from thinkscale.policy.judges import replay_judge
from thinkscale.types import Candidate, Ledger, Problem, Role
from thinkscale.verifiers.aggregate import Selection
from thinkscale.verifiers.trained_prm import auroc


def greedy_chains(run: Path, model: str) -> dict[str, tuple[Candidate, bool]]:
    store = open_existing(run, read_only=True)
    try:
        rows = store.rows("SELECT j.problem_id, s.text, s.answer, s.correct, s.completion_tokens, s.finish_reason "
                          "FROM jobs j JOIN samples s USING (job_id) WHERE j.model = ? AND j.strategy = 'greedy' "
                          "AND j.seed = 0", (model,))
    finally:
        store.close()
    if not rows:
        raise SystemExit(f"{run}: no greedy chains of {model}")
    return {r["problem_id"]: (Candidate(text=r["text"], answer=r["answer"], completion_tokens=r["completion_tokens"],
                                        finish_reason=r["finish_reason"]), bool(r["correct"])) for r in rows}


def gate(p: float, t: float, g: tuple[Candidate, bool], sampled: list[tuple[Candidate, bool]]
         ) -> tuple[float, float, bool]:
    """(expected correctness, generated tokens, whether it ends with greedy's answer) on one problem."""
    chain, right = g
    g_tokens = float(chain.completion_tokens or 0)
    if p >= t:
        return float(right), g_tokens, True
    pool = [g, *sampled]
    keys = [normalize_answer(c.answer) for c, _ in pool]
    tokens = g_tokens + sum(float(c.completion_tokens or 0) for c, _ in sampled)
    value = selection_value(keys, [r for _, r in pool], None, Selection.MAJORITY, prefer=0)
    counts = Counter(k for k in keys if k is not None)
    g_key = keys[0]  # greedy's answer ends the run when it is among the tied leaders (nobody answered: it is None)
    same = not counts if g_key is None else counts[g_key] == max(counts.values())
    return value, tokens, same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--ks", default="2,4,8", help="sampled chains added when the gate does not stop")
    ap.add_argument("--cache", type=Path, default=None, help="ScoreCache file of the greedy chains' ORM scores")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads for the ORM (default: all cores)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    stored = load_run(args.run)
    greedy = greedy_chains(args.run, stored.model)
    messages = problem_messages(stored.cfg)
    judge = replay_judge(args.run, "orm", None, cache=args.cache, model=stored.model, threads=args.threads)
    try:
        verifier = judge.verifiers[("orm", None)]
        p: dict[str, float] = {}
        verifier_tokens = 0.0
        for i, d in enumerate(stored.draws):
            chain, _ = greedy[d.problem_id]
            ledger = Ledger()
            (s,) = verifier.score(Problem(d.problem_id, messages[d.problem_id]), [chain], ledger=ledger)
            cost = ledger.total(Role.VERIFIER)
            p[d.problem_id] = s[-1]
            verifier_tokens += float(cost.prompt_tokens or 0) - float(cost.cached_prompt_tokens or 0)
            print(f"scored {i + 1}/{len(stored.draws)}", file=sys.stderr, flush=True)
    finally:
        judge.close()
    pids = [d.problem_id for d in stored.draws]
    g_acc = sum(greedy[pid][1] for pid in pids) / len(pids)
    g_tok = sum(float(greedy[pid][0].completion_tokens or 0) for pid in pids)
    thresholds = sorted({0.0, *(round(x, 4) for x in p.values()), 1.01})
    rows: list[dict[str, Any]] = []
    for k in [int(x) for x in args.ks.split(",")]:
        for t in thresholds:
            vals = [gate(p[d.problem_id], t, greedy[d.problem_id], list(zip(d.chains[:k], d.correct[:k],
                                                                            strict=True))) for d in stored.draws]
            same = [(v[1], float(greedy[d.problem_id][0].completion_tokens or 0))
                    for v, d in zip(vals, stored.draws, strict=True) if v[2]]
            ratio = sum(a for a, _ in same) / sum(b for _, b in same) if same and sum(b for _, b in same) else None
            rows.append({"k": k, "threshold": t, "accuracy": sum(v[0] for v in vals) / len(vals),
                         "stopped_at_greedy": sum(p[pid] >= t for pid in pids) / len(pids),
                         "token_ratio": sum(v[1] for v in vals) / g_tok,
                         "ends_with_greedy_answer": len(same), "token_ratio_at_greedy_answer": ratio,
                         "meets_transfer_target": (sum(v[0] for v in vals) / len(vals) >= g_acc - 1e-12
                                                   and ratio is not None and ratio <= 1.5)})
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "run": str(args.run), "model": stored.model, "problems": len(pids), "greedy_accuracy": g_acc,
        "greedy_mean_tokens": g_tok / len(pids),
        "orm_auroc_greedy_correct": auroc([int(greedy[pid][1]) for pid in pids], [p[pid] for pid in pids]),
        "orm_mean_computed_tokens_per_greedy_chain": verifier_tokens / len(pids),
        "p_greedy": {pid: p[pid] for pid in pids},
        "gate": rows,
        "meets_target_at": [(r["k"], r["threshold"]) for r in rows if r["meets_transfer_target"]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"greedy {g_acc:.3f}; ORM AUROC on greedy chains {result['orm_auroc_greedy_correct']:.3f}")
    for k in sorted({r["k"] for r in rows}):
        best = max((r for r in rows if r["k"] == k and r["meets_transfer_target"]), key=lambda r: r["accuracy"],
                   default=None)
        print(f"k={k}: best accuracy meeting the target: " + ("none" if best is None else
              f"{best['accuracy']:.3f} at t={best['threshold']} (stops {best['stopped_at_greedy']:.0%}, "
              f"{best['token_ratio_at_greedy_answer']:.2f}x at greedy's answer)"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
