"""How far can stopping self-consistency early go on one model, judged only by the votes seen so far? An upper bound
for ``auto``'s sample actions, from a run's stored self-consistency chains (no model needed).

Every stored draw of N chains (the run's largest self-consistency budget) is read in sample order, as ``auto`` and
``adaptive-sc`` draw them. A stopping rule sees, after each chain, the vote state: chains drawn, the two largest
vote counts and the number of distinct answers; when it stops (or at N) the plain majority answers (ties split as
the eval store scores self-consistency) and the chains drawn so far are the cost (their stored generated tokens).
Two rule families are fitted *on the run itself* (in-sample, so an optimistic ceiling, not a result):

* ``beta``: stop when Adaptive-Consistency's posterior reaches a threshold, or give up when after ``g`` chains the
  leader holds at most a share ``r`` of them (a grid of threshold x g x r, waves of 1 or 2 chains);
* ``table``: a free stop/continue decision for every vote state, fitted by coordinate ascent on accuracy with mean
  tokens capped at each ``--ratios`` share; also 2-fold cross-validated over problems (fitted on one half, scored
  on the other, both ways), the honest estimate of what such a fitted table does on new problems (its tokens may
  then exceed the cap a little).

For each family: the best accuracy whose mean tokens are within each ``--ratios`` share of SC@N's. Compared with
the issue-8 target (within 2 points of SC@N at <= 25% of its tokens) this says whether any controller driven by
answer agreement alone can meet it on this model.

    .venv/bin/python bench/stopping_ceiling.py runs/gsm8k-qwen0.5b --out bench/results/stopping_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.metrics import selection_value
from thinkscale.eval.replay import load_draws, sampler_plan
from thinkscale.eval.store import StoreError, open_existing
from thinkscale.strategies.adaptive_sc import majority_stays_probability, vote_is_futile
from thinkscale.verifiers.aggregate import Selection

State = tuple[int, int, int, int]  # chains drawn, largest count, second count, distinct answers
# one draw, after each prefix of n chains: (vote state, expected correctness of the majority, tokens so far)
Trajectory = list[tuple[State, float, int]]


def prefix_paths(answers: Sequence[str | None], correct: Sequence[bool], tokens: Sequence[int]) -> Trajectory:
    out: Trajectory = []
    counts: Counter[str] = Counter()
    spent = 0
    for n, (a, t) in enumerate(zip(answers, tokens, strict=True), start=1):
        spent += t
        if a is not None:
            counts[a] += 1
        top = [v for _, v in counts.most_common(2)] + [0, 0]
        acc = selection_value(answers[:n], correct[:n], None, Selection.MAJORITY)
        out.append(((n, top[0], top[1], len(counts)), acc, spent))
    return out


def run_rule(paths: Sequence[Trajectory], stop: Callable[[State], bool], wave: int = 1) -> tuple[float, float]:
    """(mean accuracy, mean tokens) of a rule checked after every ``wave`` chains (and stopping at N)."""
    acc = tok = 0.0
    for p in paths:
        for state, a, t in p:
            n = state[0]
            if n == len(p) or (n % wave == 0 and stop(state)):
                acc += a
                tok += t
                break
    return acc / len(paths), tok / len(paths)


def beta_family(paths: Sequence[Trajectory]) -> list[dict]:
    out = []
    for wave in (1, 2):
        for thr, give_up, share in BETA_GRID:
            a, t = run_rule(paths, beta_rule(thr, give_up, share), wave)
            out.append({"rule": f"wave {wave}, P >= {thr}" + (f", give up at n >= {give_up} with leader <= "
                        f"{share:.0%}" if give_up else ""), "accuracy": a, "mean_tokens": t})
    return out


def beta_rule(thr: float, give_up: int | None, share: float | None) -> Callable[[State], bool]:
    def rule(s: State) -> bool:
        n, v1, v2, _ = s
        if majority_stays_probability({0: v1, 1: v2}) >= thr:
            return True
        return give_up is not None and share is not None and vote_is_futile({0: v1}, n, give_up, share)
    return rule


BETA_GRID = [(thr, g, r) for thr in (0.5, 0.6, 0.7, 0.75, 0.8, 0.875, 0.9, 0.95, 0.97)
             for g in (None, 2, 3, 4, 6, 8) for r in ((0.25, 0.34, 0.5) if g else (None,))]


def fit_table(paths: Sequence[Trajectory], max_share: float, full_tokens: float, rounds: int = 8,
              starts_kept: int = 4) -> dict[State, bool]:
    """Local search over every reachable state's stop/continue flag, maximising accuracy with mean tokens at most
    ``max_share`` of ``full_tokens`` (a move that breaks the cap is never taken), started from each of the
    ``starts_kept`` most accurate ``beta`` rules within the cap (so the table is never worse than that family); the
    best result wins. Moves: flip one
    state; or continue at one state and stop at every state a path reaches from it with one more chain (one chain
    more for the paths that stopped there)."""
    states = sorted({s for p in paths for s, _, _ in p[:-1]})
    following: dict[State, set[State]] = {s: set() for s in states}
    for p in paths:
        for (s, _, _), (t, _, _) in zip(p, p[1:], strict=False):
            if t in following:  # the last state always stops: nothing to set
                following[s].add(t)
    cap = max_share * full_tokens

    def objective(stop: Callable[[State], bool]) -> float:
        a, t = run_rule(paths, stop)
        return a if t <= cap else -1.0 - t  # over the cap: worse than anything within it, less so when closer

    def as_table(rule: Callable[[State], bool], wave: int) -> dict[State, bool]:
        return {s: s[0] % wave == 0 and rule(s) for s in states}

    starts = sorted((as_table(beta_rule(*g), w) for w in (1, 2) for g in BETA_GRID),
                    key=lambda t: objective(lambda s: t.get(s, False)), reverse=True)[:starts_kept]
    fitted = [_ascend(paths, following, objective, start, rounds) for start in starts]
    return max(fitted, key=lambda t: objective(lambda s: t.get(s, False)))


def _ascend(paths: Sequence[Trajectory], following: dict[State, set[State]],
            objective: Callable[[Callable[[State], bool]], float], start: dict[State, bool],
            rounds: int) -> dict[State, bool]:
    table = dict(start)
    states = sorted(table)
    best = objective(lambda s: table.get(s, False))
    for _ in range(rounds):
        changed = False
        for s in states:
            moves = [{s: not table[s]}]
            if table[s]:
                moves.append({s: False, **{t: True for t in following[s]}})
            for move in moves:
                old = {k: table[k] for k in move}
                table.update(move)
                j = objective(lambda s: table.get(s, False))
                if j > best + 1e-12:
                    best, changed = j, True
                    break
                table.update(old)
        if not changed:
            break
    return table


def as_rule(table: dict[State, bool]) -> Callable[[State], bool]:
    """A fitted table as a rule; a state it never saw (only on held-out problems) continues."""
    return lambda s: table.get(s, False)


def table_family(paths: Sequence[Trajectory], full_tokens: float,
                 ratios: Sequence[float]) -> tuple[list[dict], list[dict]]:
    in_sample, held_out = [], []
    halves = (paths[0::2], paths[1::2])
    for r in ratios:
        table = fit_table(paths, r, full_tokens)
        a, t = run_rule(paths, as_rule(table))
        in_sample.append({"rule": f"state table fitted for <= {r:.0%} tokens", "accuracy": a, "mean_tokens": t})
        acc = tok = 0.0
        for fit_on, score_on in ((halves[0], halves[1]), (halves[1], halves[0])):
            tab = fit_table(fit_on, r, full_tokens)
            a, t = run_rule(score_on, as_rule(tab))
            acc += a * len(score_on)
            tok += t * len(score_on)
        held_out.append({"rule": f"state table fitted for <= {r:.0%} tokens, 2-fold", "accuracy": acc / len(paths),
                         "mean_tokens": tok / len(paths)})
    return in_sample, held_out


def best_within(rows: list[dict], max_tokens: float) -> dict | None:
    ok = [r for r in rows if r["mean_tokens"] <= max_tokens]
    return max(ok, key=lambda r: (r["accuracy"], -r["mean_tokens"])) if ok else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="eval run folder with self-consistency at its largest budget")
    ap.add_argument("--sampler", default=None, help="the run's self-consistency spec, when it has several")
    ap.add_argument("--ratios", default="0.25,0.33,0.5", help="token shares of SC@N to report the best rule at")
    ap.add_argument("--out", type=Path, default=Path("bench/results/stopping_ceiling.json"))
    args = ap.parse_args(argv)
    try:
        ratios = [float(x) for x in args.ratios.split(",") if x.strip()]
    except ValueError:
        print(f"error: --ratios must be comma-separated numbers, got {args.ratios!r}", file=sys.stderr)
        return 1
    try:
        store = open_existing(args.run)
        draws = load_draws(store, sampler_plan(store, args.sampler))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not draws:
        print(f"error: {args.run} has no finished self-consistency jobs", file=sys.stderr)
        return 1
    sizes = Counter(len(d.samples) for d in draws)
    if len(sizes) != 1:
        print(f"error: the draws hold different numbers of chains {dict(sizes)}; unfinished jobs?", file=sys.stderr)
        return 1
    paths = []
    for d in draws:
        if any(s.completion_tokens is None for s in d.samples):
            print(f"error: {d.problem_id} seed {d.seed}: a chain without a token count", file=sys.stderr)
            return 1
        paths.append(prefix_paths([normalize_answer(s.answer) for s in d.samples],
                                  [s.correct for s in d.samples], [s.completion_tokens or 0 for s in d.samples]))
    n_chains = len(paths[0])
    full_acc, full_tok = run_rule(paths, lambda s: False)
    fixed = [{"rule": f"SC@{k} (first {k} chains)", "accuracy": a, "mean_tokens": t}
             for k in (1, 2, 4, 8, n_chains) for a, t in [run_rule(paths, lambda s, k=k: s[0] >= k)]]
    beta = beta_family(paths)
    table_in, table_out = table_family(paths, full_tok, ratios)
    families = {"fixed": fixed, "beta (in-sample)": beta, "state table (in-sample)": table_in,
                "state table (2-fold held out)": table_out}
    target = full_acc - 0.02
    print(f"{args.run}: {len(paths)} draws of {n_chains} chains; SC@{n_chains} accuracy {full_acc:.3f}, "
          f"{full_tok:.0f} generated tokens per draw; target: >= {target:.3f} at <= 25% tokens")
    summary = []
    for name, rows in families.items():
        for r in ratios:
            b = best_within(rows, r * full_tok)
            summary.append({"family": name, "max_token_ratio": r, "best": b})
            line = "none" if b is None else (f"{b['accuracy']:.3f} at {b['mean_tokens']:.0f} tokens "
                                             f"({b['mean_tokens'] / full_tok:.2f})  [{b['rule']}]")
            print(f"{name:>30}  <= {r:.2f}: {line}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "draws": len(paths), "chains": n_chains,
                                    "sc_accuracy": full_acc, "sc_mean_tokens": full_tok, "summary": summary,
                                    "families": families}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
