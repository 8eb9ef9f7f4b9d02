"""auto vs self-consistency at N on the same problems, by replaying an eval run's stored chains (no model needed).

    .venv/bin/thinkscale eval --dataset gsm8k --limit 100 --strategy greedy --strategy self-consistency \\
        --strategy best-of-n:verifier=pyes --budgets 1,2,4,8,16 --out runs/gsm8k-0.5b      # the run (test set)
    .venv/bin/python bench/adaptive.py runs/gsm8k-0.5b --policy policy.json [--budgets 2048,4096,8192]

The policy must be fitted on other data (``thinkscale fit-policy`` on a gsm8k-train run); the output says what it
was fitted on. For each token budget, auto runs on every (problem, sample seed) of the run with the replay backend
(``thinkscale.eval.replay``): its chains are the run's self-consistency chains, its cost the generated tokens of
the chains it used. Prints a table; writes JSON (default bench/results/adaptive.json) and the accuracy-vs-tokens
plot of the run's fixed strategies with auto's points (default next to the JSON). Target (issue 8): auto within 2
accuracy points of SC@N with <= 25% of its generated tokens, on or above the fixed strategies' Pareto frontier.
Exit status 2 when no budget meets the target. When the run has greedy chains, each budget is also checked against
greedy (issue 26's transfer check, for runs on data the policy was not fitted on): accuracy >= greedy's, and at
most 1.5x greedy's generated tokens on the instances where auto ends with greedy's answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thinkscale.eval.plot import accuracy_vs_tokens
from thinkscale.eval.replay import ReplayMissing
from thinkscale.eval.store import StoreError
from thinkscale.policy.evaluate import evaluate_auto
from thinkscale.policy.judges import replay_judge
from thinkscale.strategies.auto_policy import load_policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="eval run folder with self-consistency at its largest budget")
    ap.add_argument("--policy", type=Path, default=None, help="policy file (default: the packaged one)")
    ap.add_argument("--budgets", default=None, help="auto's token budgets, e.g. 2048,4096 (default: the policy's)")
    ap.add_argument("--sampler", default=None, help="the run's self-consistency spec, when it has several")
    ap.add_argument("--out", type=Path, default=Path("bench/results/adaptive.json"))
    ap.add_argument("--plot", type=Path, default=None, help="PNG (default: OUT with .png)")
    ap.add_argument("--score-cache", type=Path, default=None,
                    help="a policy whose difficulty asks a verifier: the ScoreCache of its scores of the run's chains "
                         "(the model is loaded only for chains not in it)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads when the verifier needs the model")
    ap.add_argument("--cross-fit", type=int, default=0,
                    help="replaying the trained ORM's own training problems: score them with heads refitted over this "
                         "many folds without them (as fit-policy --cross-fit)")
    ap.add_argument("--features", type=Path, default=None, help="with --cross-fit: the ORM's feature cache")
    args = ap.parse_args(argv)
    budgets = None if args.budgets is None else [int(x) for x in args.budgets.split(",") if x.strip()]
    judge = None
    try:
        difficulty = load_policy(args.policy).difficulty
        if difficulty.verifier is not None:
            judge = replay_judge(args.run, difficulty.verifier, difficulty.verifier_path, cache=args.score_cache,
                                 cross_fit=args.cross_fit, features=args.features, threads=args.threads)
        result, analysis = evaluate_auto(args.run, args.policy, budgets=budgets, sampler=args.sampler,
                                         verifiers=judge.verifiers if judge else None)
    except (ValueError, StoreError, ReplayMissing) as e:  # PolicyError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if judge is not None:
            judge.close()
    if judge is not None:
        result["verifier_scores"] = judge.description
    sc = result["sc"]
    print(f"{result['dataset']}: {result['problems']} problems ({result['instances']} instances), model "
          f"{result['model']}; policy fitted on {result['policy_fitted_on']['dataset']} "
          f"({result['policy_fitted_on']['problems']} problems)")
    print(f"{'config':>22} {'accuracy':>9} {'tokens':>9} {'vs SC':>7} {'gap pts':>8} {'frontier':>9}  actions")
    print(f"{'SC@' + str(sc['n_samples']):>22} {sc['accuracy']:9.3f} {sc['mean_tokens']:9.1f} {'1.00':>7}")
    for r in result["auto"]:
        ratio = "?" if r["token_ratio_vs_sc"] is None else f"{r['token_ratio_vs_sc']:.2f}"
        front = "on/above" if r["on_or_above_frontier"] else "below"
        print(f"{'auto@' + str(r['budget_tokens']):>22} {r['accuracy']:9.3f} {r['mean_tokens']:9.1f} {ratio:>7} "
              f"{r['accuracy_gap_points']:8.1f} {front:>9}  {r['actions']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot = args.plot or args.out.with_suffix(".png")
    result["plot"] = str(accuracy_vs_tokens(analysis, plot))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    met = result["target"]["met_at_budgets"]
    print(f"target (within {result['target']['within_points']} points, <= "
          f"{result['target']['max_token_ratio']:.0%} tokens): " + (f"met at {met}" if met else "not met"))
    for r in result["auto"]:  # the transfer check (issue 26): auto against greedy on the same problems
        vs = r["versus_greedy"]
        if vs is not None:
            ratio = "-" if vs["token_ratio_at_greedy_answer"] is None else f"{vs['token_ratio_at_greedy_answer']:.2f}x"
            print(f"auto@{r['budget_tokens']} vs greedy {vs['greedy_accuracy']:.3f}: "
                  f"{vs['accuracy_minus_greedy']:+.3f}; {ratio} greedy's tokens on the "
                  f"{vs['instances_with_greedy_answer']} instances ending with greedy's answer (target <= "
                  f"{result['target']['max_token_ratio_at_greedy_answer']}x): "
                  + ("met" if vs["meets_transfer_target"] else "not met"))
    print(f"wrote {args.out} and {plot}")
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())
