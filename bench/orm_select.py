"""Selection with the trained outcome verifier on a run's stored self-consistency chains, without regenerating.

Every stored draw of N chains (the run's self-consistency jobs at their largest budget) is scored by the ORM (its
hidden-state features are computed once and cached; only scoring runs the model) and each selector is evaluated at
k = 4, 8, 16 the way the eval harness scores subset units (``thinkscale.eval.metrics.expected_selection_accuracy``:
the mean over k-subsets of the N chains, all of them or ``--max-subsets`` seeded ones drawn with the harness's own
per-unit seed, ties split), so ``majority`` reproduces the store's self-consistency units exactly and every selector
is judged on the very same subsets (paired). Selectors, none of which reads the reference answer:

- ``majority``: the plain vote (self-consistency);
- ``orm-best``: the chain the ORM scores highest (best-of-k);
- ``orm-weighted``: the vote with each chain weighted by its ORM probability (RM-weighted voting);
- ``orm-tiebreak``: the plain vote, a tie for the most votes going to the tied answer with the best ORM score;
- ``orm-weighted-tuned``: the vote weighted by p ** alpha, alpha chosen on the *training* run's chains with out-of-
  fold ORM scores (``--train-run``; alpha 0 is the plain vote, a large alpha approaches best-of-k);
- ``orm-learned``: each distinct answer of the k chains scored by a logistic model of its vote share and its chains'
  mean, best and summed ORM probability, fitted per k on the training run's k-subsets (out-of-fold ORM scores), the
  best-scored answer chosen (``--train-run``).

Reported per selector and k: accuracy with a 95% bootstrap interval over problems, the paired difference against
majority (bootstrap over per-problem differences, ``thinkscale.eval.metrics.bootstrap_ci``), pass@k (Chen et al.'s
unbiased estimator, the oracle), and the cost per problem: generated tokens and FLOPs (the store's self-consistency
units at k) plus the verifier's tokens and FLOPs, k/N shares of what the ORM's hidden-state requests took when
computed here (``cold``: no generation KV to reuse, so each chain's tokens are computed again; inside a solve run
on the generator's backend the chain is usually cached and only the views' own tokens are computed, ``warm``).

    .venv/bin/python bench/orm_select.py runs/gsm8k-qwen0.5b --train-run runs/train-0.5b \\
        --cache runs/orm/features-0.5b.sqlite --out bench/results/orm/select-qwen0.5b.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.metrics import (
    bootstrap_ci,
    expected_selection_accuracy,
    expected_tiebreak_accuracy,
    pass_at_k,
    subsets,
)
from thinkscale.eval.store import StoreError, open_existing
from thinkscale.policy.orm_fit import RunChains, chains_from_run
from thinkscale.types import Usage
from thinkscale.verifiers.aggregate import Selection
from thinkscale.verifiers.orm import FeatureSpec, TrainedORM
from thinkscale.verifiers.orm_train import (
    FeatureCache,
    LabelledChain,
    chain_features,
    out_of_fold,
    stack_views,
    within_problem_auroc,
)
from thinkscale.verifiers.trained_prm import LogisticHead, auroc

ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class LazyBackend:
    """The run's model, loaded only when a feature is not in the cache (the cache is keyed by the fingerprint the
    run recorded, so a fully cached run needs no model)."""

    def __init__(self, model: str, fingerprint: str, threads: int | None) -> None:
        self.model, self.fingerprint, self.threads = model, fingerprint, threads
        self.inner: Any = None

    def info(self) -> Any:
        return self._load().info() if self.inner is not None else _Info(self.fingerprint)

    def hidden_states(self, requests: Any) -> Any:
        return self._load().hidden_states(requests)

    def _load(self) -> Any:
        if self.inner is None:
            from thinkscale.backends import load_backend

            # one chain at a time: a small KV cache keeps each one-token request cheap
            self.inner = load_backend(self.model, n_threads=self.threads, progress=False, n_ctx=4096)
            if self.inner.info().fingerprint != self.fingerprint:
                raise StoreError(f"{self.model} loads as {self.inner.info().fingerprint}, the run was sampled by "
                                 f"{self.fingerprint}")
        return self.inner

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


class _Info:
    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint


def scored(run: RunChains, spec: FeatureSpec, backend: Any, cache: FeatureCache) -> tuple[np.ndarray, list[Usage]]:
    """The feature rows of the run's chains (cached) and each chain's verifier cost."""
    def progress(done: int, total: int, seconds: float) -> None:
        print(f"features {done}/{total} ({seconds:.1f}s)", file=sys.stderr, flush=True)

    per_view, costs = chain_features(backend, run.chains, spec.views, cache, spec=spec, progress=progress)
    per_chain = [sum((costs[v][i] for v in spec.views), Usage.zero()) for i in range(len(run.chains))]
    return stack_views(per_view, spec.views), per_chain


def by_problem(chains: Sequence[LabelledChain]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, c in enumerate(chains):
        out.setdefault(c.problem_id, []).append(i)
    return out


def answer_features(keys: Sequence[str | None], p: Sequence[float], row: Sequence[int]
                    ) -> tuple[list[str], np.ndarray]:
    """The distinct answers among the chains ``row`` and, per answer: vote share, mean / best / summed-over-k ORM
    probability of its chains."""
    members: dict[str, list[float]] = {}
    for i in row:
        key = keys[i]
        if key is not None:
            members.setdefault(key, []).append(float(p[i]))
    k = len(row)
    answers = sorted(members)
    feats = np.array([[len(members[a]) / k, np.mean(members[a]), max(members[a]), sum(members[a]) / k]
                      for a in answers]).reshape(len(answers), 4)
    return answers, feats


def combo_value(keys: Sequence[str | None], correct: Sequence[bool], p: Sequence[float], idx: np.ndarray,
                model: tuple[np.ndarray, float]) -> float:
    """Mean over subsets of choosing the answer the learned model scores best (ties split)."""
    w, b = model
    ok = {k: bool(c) for k, c in zip(keys, correct, strict=True) if k is not None}
    total = 0.0
    for row in idx:
        answers, feats = answer_features(keys, p, row)
        if not answers:
            continue
        z = feats @ w + b
        best = [a for a, v in zip(answers, z, strict=True) if math.isclose(v, z.max(), rel_tol=1e-9, abs_tol=1e-12)]
        total += sum(ok[a] for a in best) / len(best)
    return total / len(idx)


def fit_combo(train: RunChains, p: np.ndarray, k: int, per_problem: int = 200) -> tuple[np.ndarray, float]:
    """The answer-scoring model of ``orm-learned`` at k: a logistic regression of "this answer is right" on
    ``answer_features``, over up to ``per_problem`` k-subsets of every training problem."""
    from sklearn.linear_model import LogisticRegression

    xs, ys = [], []
    for pid, members in sorted(by_problem(train.chains).items()):
        if len(members) < k:
            continue
        keys = [normalize_answer(train.chains[i].answer) for i in members]
        ok = {key: train.chains[i].correct for key, i in zip(keys, members, strict=True) if key is not None}
        for row in subsets(len(members), k, max_subsets=per_problem, rng=random.Random(f"combo|{pid}|{k}")):
            answers, feats = answer_features(keys, p[members], row)
            xs.append(feats)
            ys += [ok[a] for a in answers]
    model = LogisticRegression(C=1.0, max_iter=1000).fit(np.vstack(xs), np.array(ys, dtype=int))
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def problem_values(keys: list[str | None], correct: list[bool], p: np.ndarray, k: int, rng_seed: str,
                   alpha: float, max_subsets: int, combo: tuple[np.ndarray, float] | None = None) -> dict[str, float]:
    """Each selector's expected accuracy on one problem's N chains at k, all on the same subsets."""
    def esa(scores: Sequence[float] | None, how: Selection) -> float:
        return expected_selection_accuracy(keys, correct, scores, how, k, max_subsets=max_subsets,
                                           rng=random.Random(rng_seed))[0]

    idx = subsets(len(keys), k, max_subsets=max_subsets, rng=random.Random(rng_seed))
    return {"majority": esa(None, Selection.MAJORITY),
            "orm-best": esa(list(p), Selection.ARGMAX),
            "orm-weighted": esa(list(p), Selection.WEIGHTED_MAJORITY),
            "orm-tiebreak": expected_tiebreak_accuracy(keys, correct, list(p), k, max_subsets=max_subsets,
                                                       rng=random.Random(rng_seed))[0],
            "orm-weighted-tuned": esa(list(np.power(p, alpha)), Selection.WEIGHTED_MAJORITY),
            **({"orm-learned": combo_value(keys, correct, list(p), idx, combo)} if combo is not None else {})}


def evaluate(run: RunChains, p: np.ndarray, ks: Sequence[int], alpha: float, max_subsets: int,
             combos: dict[int, tuple[np.ndarray, float]] | None = None) -> dict[int, dict[str, list[float]]]:
    """Per k, per selector, per problem (sorted ids): expected accuracy; plus ``pass@k``."""
    groups = by_problem(run.chains)
    out: dict[int, dict[str, list[float]]] = {}
    for k in ks:
        rows: dict[str, list[float]] = {}
        for pid in sorted(groups):
            members = groups[pid]
            if len(members) < k:
                raise ValueError(f"{run.run}: problem {pid} has {len(members)} chains, fewer than k={k}")
            keys = [normalize_answer(run.chains[i].answer) for i in members]
            correct = [run.chains[i].correct for i in members]
            seed = f"0|{pid}|{run.sampler}|{run.model}|{k}"  # the harness's per-unit rng (runner._expected)
            combo = (combos or {}).get(k)
            for name, v in problem_values(keys, correct, p[members], k, seed, alpha, max_subsets, combo).items():
                rows.setdefault(name, []).append(v)
            rows.setdefault("pass@k", []).append(pass_at_k(len(members), sum(correct), k))
        out[k] = rows
    return out


def out_of_fold_p(train: RunChains, x: np.ndarray, head_c: float, platt: dict[str, float]) -> np.ndarray:
    """ORM probabilities of the training chains, each from a head fitted without its problem (4 folds by problem,
    the head's c and calibration)."""
    from thinkscale.verifiers.orm_train import FitConfig

    y = np.array([c.correct for c in train.chains], dtype=np.float64)
    z = out_of_fold(x, y, [c.problem_id for c in train.chains], head_c, FitConfig(c_grid=(head_c,)))
    return np.asarray(1.0 / (1.0 + np.exp(-(platt["slope"] * z + platt["offset"]))))


def tune_alpha(train: RunChains, p: np.ndarray, k: int, max_subsets: int) -> tuple[float, dict[str, float]]:
    """The weight exponent with the best weighted-vote accuracy at k on the training run, scored with out-of-fold
    probabilities ``p``: chosen without the test chains."""
    table = {}
    for a in ALPHAS:
        rows = evaluate(train, p, [k], a, max_subsets)[k]["orm-weighted-tuned"]
        table[str(a)] = float(np.mean(rows))
    best = max(ALPHAS, key=lambda a: (round(table[str(a)], 9), -a))
    return best, table


def costs(run: RunChains, per_chain: list[Usage], ks: Sequence[int]) -> dict[int, dict[str, float | None]]:
    """Mean per problem at k: generated tokens and FLOPs (the store's self-consistency units), the verifier's
    tokens spanned, tokens computed cold, tokens its views add beyond the chain (warm), FLOPs (k/N shares)."""
    store = open_existing(run.run, read_only=True)
    try:
        units = {(r["budget"], r["problem_id"]): r for r in store.rows(
            "SELECT budget, problem_id, completion_tokens, flops FROM units WHERE model = ? AND strategy = ? AND "
            "seed = 0", (run.model, run.sampler))}
    finally:
        store.close()
    groups = by_problem(run.chains)
    out: dict[int, dict[str, float | None]] = {}
    for k in ks:
        gen_tok, gen_flops, vt, vc, vf = [], [], [], [], []
        for pid, members in groups.items():
            u = units.get((k, pid))
            share = k / len(members)
            if u is not None:
                gen_tok.append(u["completion_tokens"])
                gen_flops.append(u["flops"])
            tot = sum((per_chain[i] for i in members), Usage.zero())
            vt.append(share * (tot.prompt_tokens or 0))
            vc.append(share * ((tot.prompt_tokens or 0) - (tot.cached_prompt_tokens or 0)))
            vf.append(share * (tot.flops or 0.0))
        out[k] = {"generated_tokens": _mean(gen_tok), "generator_flops": _mean(gen_flops),
                  "verifier_tokens": _mean(vt), "verifier_computed_tokens_cold": _mean(vc),
                  "verifier_flops_cold": _mean(vf)}
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(xs) else None


def summarise(values: dict[int, dict[str, list[float]]], cost: dict[int, dict[str, float | None]]
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, rows in values.items():
        base = rows["majority"]
        table: dict[str, Any] = {}
        for name, v in rows.items():
            est = bootstrap_ci(v)
            entry: dict[str, Any] = {"accuracy": est.mean, "ci95": [est.low, est.high]}
            if name not in ("majority", "pass@k"):
                d = bootstrap_ci([a - b for a, b in zip(v, base, strict=True)])
                entry["vs_majority"] = {"diff": d.mean, "ci95": [d.low, d.high], "excludes_0": d.low > 0 or d.high < 0}
            table[name] = entry
        out[str(k)] = {"problems": len(base), "selectors": table, "cost_per_problem": cost[k]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run folder with self-consistency chains (an evaluation set)")
    ap.add_argument("--orm", type=Path, default=None, help="ORM file (default: the packaged head)")
    ap.add_argument("--train-run", type=Path, default=None, help="the ORM's training run: tunes the weight exponent")
    ap.add_argument("--train-samples", type=int, default=None, help="the first K chains of each training problem")
    ap.add_argument("--ks", default="4,8,16")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache (default: RUN/orm_features.sqlite)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-subsets", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        ks = [int(x) for x in args.ks.split(",") if x.strip()]
        payload = TrainedORM.read(args.orm)
        spec = FeatureSpec.from_dict(payload["features"])
        head = LogisticHead.from_dict(payload["head"])
        meta = payload["metadata"]
        run = chains_from_run(args.run)
        if run.fingerprint != meta["model"]["fingerprint"]:
            raise ValueError(f"{args.run} was sampled by {run.fingerprint}; the ORM was fitted on "
                             f"{meta['model']['fingerprint']}")
    except (ValueError, StoreError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend = LazyBackend(run.model, run.fingerprint, args.threads)
    cache = FeatureCache(args.cache or args.run / "orm_features.sqlite")
    try:
        x, per_chain = scored(run, spec, backend, cache)
        p = head.predict(x)
        alpha, alpha_table, combos = 1.0, None, None
        if args.train_run is not None:
            train = chains_from_run(args.train_run, max_chains=args.train_samples)
            xt, _ = scored(train, spec, backend, cache)
            pt = out_of_fold_p(train, xt, meta["head"]["c"], meta["head"]["platt"])
            n_train = min(len(m) for m in by_problem(train.chains).values())
            alpha, alpha_table = tune_alpha(train, pt, min(max(ks), n_train), args.max_subsets)
            combos = {k: fit_combo(train, pt, min(k, n_train)) for k in ks}
    finally:
        cache.close()
        backend.close()
    y = np.array([c.correct for c in run.chains])
    values = evaluate(run, p, ks, alpha, args.max_subsets, combos)
    result = {
        "command": "bench/orm_select.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "run": str(args.run), "model": run.model, "chains": len(run.chains),
        "orm": {"file": str(args.orm or "packaged"), "views": meta["feature"], "fitted_on": {
            k: v for k, v in meta["fitted_on"].items() if k != "split"}, "heldout_auroc_train": meta["heldout_auroc"]},
        "orm_auroc_on_these_chains": auroc(y, p) if 0 < y.sum() < len(y) else None,
        **within_problem_auroc(y, p, [c.problem_id for c in run.chains]),
        "mean_p": {"right": float(p[y].mean()) if y.any() else None,
                   "wrong": float(p[~y].mean()) if (~y).any() else None},
        "alpha": {"chosen": alpha, "train_accuracy_at_k_by_alpha": alpha_table,
                  "k": min(max(ks), args.train_samples or max(ks))},
        "learned": {str(k): {"coef (vote share, mean p, max p, sum p / k)": list(w), "intercept": b}
                    for k, (w, b) in (combos or {}).items()},
        "by_k": summarise(values, costs(run, per_chain, ks)),
        "per_problem": {str(k): v for k, v in values.items()},
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for k, row in result["by_k"].items():
        print(f"k={k}: " + ", ".join(f"{n} {e['accuracy']:.3f}" for n, e in row["selectors"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
