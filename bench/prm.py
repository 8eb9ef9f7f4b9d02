"""Verifiers on GSM8K: a PRM trained here vs majority vote vs P(yes)-weighted vote, on the SAME 8 samples.

1. Train a PRM on ``--train-problems`` seeded GSM8K *train* problems (``thinkscale.verifiers.prm_train``: Math-Shepherd
   rollout labels, the policy's hidden states as features, logistic head, held-out AUROC by problem), or load
   ``--prm FILE``.
2. On ``--test-problems`` seeded GSM8K *test* problems (the same problems for every method), sample ``--n`` solutions
   once per problem with the policy and score those same samples with every verifier. Methods:
   ``majority`` (self-consistency), ``prm_bon_<agg>`` (best-of-N by the PRM's step scores aggregated by
   last/min/product/mean), ``prm_weighted`` (vote weighted by the PRM's min step score), ``pyes_weighted`` (vote
   weighted by the policy's own P(Yes), GenRM-style), ``conf_weighted`` (vote weighted by DeepConf lowest-group
   confidence, free), and ``pass_at_n`` (an oracle: any sample right).
3. Report accuracy, tokens per problem by role (the verifier's tokens appear in the ledger of every method that used
   one), held-out step AUROC, and the measured time per train and test problem with a projection to the full run.

Resumable: labels go to ``<out>/prm.json.steps.jsonl`` and test results to ``<out>/test.jsonl`` as they finish;
rerunning the same command skips what is done. The full experiment (its projected time: see summary.json):

    .venv/bin/python bench/prm.py --model qwen2.5-coder-0.5b --train-problems 200 --rollouts 2 \\
        --test-problems 100 --out bench/results/prm

Writes ``<out>/prm.json`` (the PRM with its metadata), ``<out>/test.jsonl`` and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.answers.extract import extract_for_task
from thinkscale.answers.task import Task
from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.models import resolve
from thinkscale.types import Candidate, GenRequest, Ledger, Problem, Role
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select
from thinkscale.verifiers.confidence import LowestGroupConfidence
from thinkscale.verifiers.llm_judge import PYesVerifier
from thinkscale.verifiers.prm_train import (
    LabelConfig,
    dataset_path,
    file_sha256,
    load_rows,
    row_problem,
    seeded_subset,
    train_prm,
)
from thinkscale.verifiers.task import ReferenceVerifier
from thinkscale.verifiers.trained_prm import TrainedPRM, auroc

TASK = Task.NUMERIC
HEADLINE_AGG = StepAggregation.MIN  # Math-Shepherd ranks solutions by their weakest step


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample_candidates(problem: Problem, backend: LlamaCppBackend, args: argparse.Namespace,
                      ledger: Ledger) -> list[Candidate]:
    rng = random.Random(f"{args.seed}:{problem.id}:sample")
    (c,) = backend.generate([GenRequest(messages=problem.messages, n=args.n, temperature=args.temperature,
                                        top_p=0.95, max_tokens=args.max_tokens, seed=rng.randrange(2**31 - 1),
                                        logprobs=True)])
    ledger.charge(Role.GENERATOR, c.usage)
    return [Candidate(text=s.text, answer=extract_for_task(s.text, TASK), completion_tokens=s.completion_tokens,
                      finish_reason=s.finish_reason, logprobs=s.logprobs) for s in c.samples]


def choose(answers: list[str | None], scores: list[float] | None, how: Selection, pid: str, name: str,
           seed: int, correct: list[bool]) -> dict[str, Any]:
    choice = select(answers, scores, how, rng=random.Random(f"{seed}:{pid}:{name}"))
    return {"index": choice.index, "answer": choice.answer, "tie": choice.tie,
            "correct": choice.index is not None and correct[choice.index]}


def run_problem(problem: Problem, backend: LlamaCppBackend, prm: TrainedPRM, args: argparse.Namespace
                ) -> dict[str, Any]:
    t0 = time.perf_counter()
    gen = Ledger()
    cands = sample_candidates(problem, backend, args, gen)
    t_gen = time.perf_counter() - t0
    prm_ledger, pyes_ledger = Ledger(), Ledger()
    t1 = time.perf_counter()
    prm_steps = prm.score(problem, cands, ledger=prm_ledger)
    t_prm = time.perf_counter() - t1
    t2 = time.perf_counter()
    pyes = [s[0] for s in PYesVerifier(backend).score(problem, cands, ledger=pyes_ledger)]
    t_pyes = time.perf_counter() - t2
    conf = [s[0] for s in LowestGroupConfidence(window=args.conf_window).score(problem, cands, ledger=Ledger())]
    # grading uses the answer key: the eval-only verifier, after every choice was scored without it
    correct = [s[0] == 1.0 for s in ReferenceVerifier(TASK, eval_mode=True).score(problem, cands, ledger=Ledger())]
    answers = [c.answer for c in cands]
    pid, seed = problem.id, args.seed
    methods: dict[str, dict[str, Any]] = {
        "majority": choose(answers, None, Selection.MAJORITY, pid, "majority", seed, correct)}
    for agg in StepAggregation:
        methods[f"prm_bon_{agg.value}"] = choose(answers, [aggregate_steps(s, agg) for s in prm_steps],
                                                 Selection.ARGMAX, pid, f"prm_bon_{agg.value}", seed, correct)
    methods["prm_weighted"] = choose(answers, [aggregate_steps(s, HEADLINE_AGG) for s in prm_steps],
                                     Selection.WEIGHTED_MAJORITY, pid, "prm_weighted", seed, correct)
    methods["pyes_weighted"] = choose(answers, pyes, Selection.WEIGHTED_MAJORITY, pid, "pyes_weighted", seed, correct)
    methods["conf_weighted"] = choose(answers, conf, Selection.WEIGHTED_MAJORITY, pid, "conf_weighted", seed, correct)
    methods["pass_at_n"] = {"correct": any(correct)}

    def ledger_of(*ledgers: Ledger) -> dict[str, Any]:
        merged = Ledger(entries=[e for ledger in ledgers for e in ledger.entries])
        return {str(r): u.to_dict() for r, u in merged.by_role().items()}

    uses = {"majority": (gen,), "prm_weighted": (gen, prm_ledger), "pyes_weighted": (gen, pyes_ledger),
            "conf_weighted": (gen,), "pass_at_n": (gen,),
            **{f"prm_bon_{a.value}": (gen, prm_ledger) for a in StepAggregation}}
    for name, ledgers in uses.items():
        methods[name]["ledger"] = ledger_of(*ledgers)
    return {"id": pid, "reference": problem.reference, "answers": answers, "correct": correct,
            "finish_reason": [c.finish_reason for c in cands],
            "completion_tokens": [c.completion_tokens for c in cands],
            "prm_steps": [list(s) for s in prm_steps], "pyes": pyes, "confidence": conf, "methods": methods,
            "seconds": {"generate": t_gen, "prm": t_prm, "pyes": t_pyes, "total": time.perf_counter() - t0}}


def safe_auroc(labels: list[bool], scores: list[float]) -> float | None:
    return auroc(labels, scores) if 0 < sum(labels) < len(labels) else None


def summarise(records: list[dict[str, Any]], prm_meta: dict[str, Any], args: argparse.Namespace,
              train_rows: int, test_runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    names = list(records[0]["methods"]) if records else []
    acc = {m: sum(r["methods"][m]["correct"] for r in records) / n for m in names} if n else {}

    def mean_tokens(method: str, role: str, key: str) -> float | None:
        vals = [r["methods"][method]["ledger"].get(role, {}).get(key) for r in records]
        return None if not vals or any(v is None for v in vals) else float(np.mean(vals))

    tokens = {m: {f"{role}_{k}": mean_tokens(m, role, k) for role in ("generator", "verifier")
                  for k in ("completion_tokens", "prompt_tokens", "cached_prompt_tokens")} for m in names}
    flat_correct = [c for r in records for c in r["correct"]]
    outcome_auroc = {
        "prm_last": safe_auroc(flat_correct, [s[-1] for r in records for s in r["prm_steps"]]),
        "prm_min": safe_auroc(flat_correct, [min(s) for r in records for s in r["prm_steps"]]),
        "pyes": safe_auroc(flat_correct, [p for r in records for p in r["pyes"]]),
        "confidence": safe_auroc(flat_correct, [p for r in records for p in r["confidence"]]),
    }
    cost = prm_meta.get("labelling_cost", {})
    train_problems = prm_meta.get("data", {}).get("problems") or train_rows
    # wall time per problem with --workers problems in flight (per-problem latencies overlap, so their sum is not it)
    runs = prm_meta.get("labelling_runs", [])
    n_runs = sum(r["problems"] for r in runs)
    per_train = sum(r["wall_seconds"] for r in runs) / n_runs if n_runs else None
    n_test = sum(r["problems"] for r in test_runs)
    per_test = sum(r["wall_seconds"] for r in test_runs) / n_test if n_test else None
    projection = None
    if per_train is not None and per_test is not None:
        projection = {"train_problems": args.project_train, "test_problems": args.project_test,
                      "train_seconds": per_train * args.project_train, "test_seconds": per_test * args.project_test,
                      "seconds": per_train * args.project_train + per_test * args.project_test}
    return {
        "model": prm_meta.get("model", {}).get("name"), "test_problems": n, "n_samples": args.n,
        "accuracy": acc, "mean_tokens_per_problem": tokens,
        "samples_cut_at_max_tokens": (sum(f == "length" for r in records for f in r["finish_reason"])
                                      / sum(len(r["finish_reason"]) for r in records)) if records else None,
        "prm": {"heldout_step_auroc": prm_meta.get("heldout_auroc"), "metrics": prm_meta.get("metrics"),
                "label_stats": prm_meta.get("label_stats", {}).get("all"), "train_problems": train_problems},
        "test_outcome_auroc": outcome_auroc,
        "seconds": {"per_train_problem_wall": per_train, "per_test_problem_wall": per_test,
                    "train_latency_sum": cost.get("seconds"), "test_workers": args.test_workers,
                    "test_phases_mean": {k: float(np.mean([r["seconds"][k] for r in records]))
                                         for k in ("generate", "prm", "pyes")} if records else None},
        "projection": projection,
        "command": " ".join(sys.argv),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--train-data", default="gsm8k_train")
    ap.add_argument("--test-data", default="gsm8k_test")
    ap.add_argument("--train-problems", type=int, default=200)
    ap.add_argument("--rollouts", type=int, default=2)
    ap.add_argument("--solutions", type=int, default=1, help="sampled solutions per training problem")
    ap.add_argument("--rollout-steps", type=int, default=1, help="labelled non-final steps per solution (at most)")
    ap.add_argument("--test-problems", type=int, default=100)
    ap.add_argument("--n", type=int, default=8, help="samples per test problem")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--conf-window", type=int, default=2048)
    ap.add_argument("--heldout", type=float, default=0.25)
    ap.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the PRM head")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=16384)
    ap.add_argument("--train-workers", type=int, default=8, help="training problems labelled at once (their "
                    "samples decode in one batch)")
    ap.add_argument("--test-workers", type=int, default=4, help="test problems in flight at once")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--prm", type=Path, default=None, help="use this trained PRM instead of training one")
    ap.add_argument("--out", type=Path, default=Path("bench/results/prm"))
    ap.add_argument("--project-train", type=int, default=200, help="train problems of the projected full run")
    ap.add_argument("--project-test", type=int, default=100, help="test problems of the projected full run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    train_path, test_path = dataset_path(args.train_data), dataset_path(args.test_data)
    backend = LlamaCppBackend(resolve(args.model, progress=True), n_ctx=args.n_ctx, n_threads=args.threads,
                              name=args.model)
    t_start = time.perf_counter()
    prm_path = args.prm or args.out / "prm.json"
    train_rows = 0
    if args.prm is None:
        rows = seeded_subset(load_rows(train_path), args.train_problems, args.seed)
        train_rows = len(rows)
        cfg = LabelConfig(solutions_per_problem=args.solutions, rollouts=args.rollouts,
                          max_rollout_steps=args.rollout_steps, max_tokens=args.max_tokens,
                          temperature=args.temperature, seed=args.seed)
        log(f"training the PRM on {len(rows)} problems of {train_path}")
        train_prm(backend, rows, prm_path, cfg=cfg, heldout_fraction=args.heldout, c=args.c, workers=args.train_workers,
                  data={"path": str(args.train_data), "sha256": file_sha256(train_path), "subset_seed": args.seed},
                  progress=lambda d, t, pid, s: log(f"  labelled {d}/{t} {pid} in {s:.1f}s"))
    prm = TrainedPRM.load(prm_path, backend)
    log(f"PRM {prm_path}: held-out step AUROC {prm.metadata.get('heldout_auroc')}")

    test_rows = seeded_subset(load_rows(test_path), args.test_problems, args.seed)
    header = {"model": backend.info().fingerprint, "n": args.n, "max_tokens": args.max_tokens,
              "temperature": args.temperature, "seed": args.seed, "test_data": str(args.test_data),  # as given
              # the head decides the scores; the metadata changes with every (resumed) run
              "prm_head_sha256": hashlib.sha256(json.dumps(TrainedPRM.read(prm_path)["head"],
                                                           sort_keys=True).encode()).hexdigest()}
    results_path = args.out / "test.jsonl"
    done: dict[str, dict[str, Any]] = {}
    test_runs: list[dict[str, Any]] = []  # {"run": ...} lines: wall time of each run, across resumed runs
    if results_path.is_file():
        lines = [json.loads(x) for x in results_path.read_text().splitlines() if x.strip()]
        if lines and lines[0].get("header") != header:
            sys.exit(f"{results_path} was written with other settings or another PRM; delete it or use another --out")
        done = {r["id"]: r for r in lines[1:] if "run" not in r}
        test_runs = [r["run"] for r in lines[1:] if "run" in r]
    else:
        results_path.write_text(json.dumps({"header": header}) + "\n")
    problems = [row_problem(row) for row in test_rows]
    todo = [p for p in problems if p.id not in done]
    lock = threading.Lock()
    t_test = time.perf_counter()

    def one(problem: Problem) -> None:
        rec = run_problem(problem, backend, prm, args)
        with lock:
            with open(results_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            done[problem.id] = rec
            m = rec["methods"]
            log(f"  test {len(done)}/{len(problems)} {problem.id}: maj={int(m['majority']['correct'])} "
                f"prm={int(m['prm_bon_' + HEADLINE_AGG.value]['correct'])} "
                f"pyes={int(m['pyes_weighted']['correct'])} in {rec['seconds']['total']:.1f}s")

    with ThreadPoolExecutor(max_workers=args.test_workers) as pool:
        for future in [pool.submit(one, p) for p in todo]:
            future.result()
    if todo:
        run = {"problems": len(todo), "wall_seconds": time.perf_counter() - t_test, "workers": args.test_workers}
        test_runs.append(run)
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"run": run}) + "\n")
    records = [done[p.id] for p in problems]
    summary = summarise(records, prm.metadata, args, train_rows, test_runs)
    summary["wall_seconds_this_run"] = time.perf_counter() - t_start
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("accuracy", "prm", "test_outcome_auroc", "seconds", "projection")},
                     indent=2))
    backend.close()


if __name__ == "__main__":
    main()
