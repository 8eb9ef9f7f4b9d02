"""SC-TIR vs plain self-consistency on GSM8K at matched generated-token budgets.

For each model and each of ``--problems`` seeded GSM8K *test* problems (the same problems for every model and method),
run both strategies with the same N, the same per-path completion-token cap and therefore the same completion-token
Budget (N x max_tokens):

- ``sc``: ``SelfConsistency(n_samples=N, max_tokens=M)``, chain-of-thought with a ``\\boxed{}`` answer;
- ``sc_tir``: ``ScTir(n_samples=N, max_tokens=M, max_rounds=R)``, the same system prompt plus the ``coder``
  tool format; code runs in one warm sandbox pool shared by all problems.

Both sample at the same temperature and top-p and are seeded per problem and method. Answers are graded numerically
(``thinkscale.answers.equivalence.check``, task ``numeric``). Reports accuracy, the completion tokens the ledger
actually measured (mean per problem: a matched budget is a limit, spending differs), code runs and their time, and
the measured seconds per problem with a projection to the full run.

Resumable: one JSONL file per model under ``--out``, a line per problem as it finishes; rerunning the same command
skips done problems (a file written with other settings is refused). The full experiment:

    .venv/bin/python bench/tir.py --models qwen2.5-coder-0.5b qwen2.5-coder-1.5b --problems 100 --workers 3 \
        --out bench/results/tir

(as scripts/measure.sh runs it, alone on the machine: llama.cpp uses every core; add ``--threads 1`` only when
other jobs share the cores.)

Validation runs (``bench/results/tir_validate*``, other problems than the full run's: the seeded subset depends on
``--problems``) took 167 s per problem for the 0.5B model (3 problems, 3 in flight) and 346 s for the 1.5B model
(1 problem, while the 0.5B run shared the machine), on 2 cores shared with other benchmarks (load average 4-12):
about 4.7 h + 9.6 h for the full run at that load. ``--threads 1``: with both cores busy elsewhere, llama.cpp's two
threads wait on each other; one thread decoded about 5x faster here.

Writes ``<out>/<model>.jsonl`` and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from thinkscale.answers.equivalence import check
from thinkscale.answers.task import Task, Verdict
from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.models import resolve
from thinkscale.strategies.sc_tir import ScTir
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.tools.sandbox import Limits, Sandbox
from thinkscale.types import Budget, Problem, Result, Role
from thinkscale.verifiers.prm_train import SOLVE_SYSTEM, dataset_path, file_sha256, load_rows, seeded_subset


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def method_record(result: Result, reference: str, seconds: float) -> dict[str, Any]:
    by_role = result.ledger.by_role()
    gen = by_role.get(Role.GENERATOR)
    tool = by_role.get(Role.TOOL)
    return {
        "answer": result.answer,
        "correct": check(Task.NUMERIC, result.answer, reference) is Verdict.EQUIVALENT,
        "stop_reason": result.stop_reason,
        "completion_tokens": None if gen is None else gen.completion_tokens,
        "prompt_tokens": None if gen is None else gen.prompt_tokens,
        "cached_prompt_tokens": None if gen is None else gen.cached_prompt_tokens,
        "backend_calls": 0 if gen is None else gen.calls,
        "code_runs": 0 if tool is None else tool.calls,
        "code_seconds": 0.0 if tool is None else tool.seconds,
        "sample_answers": [c.answer for c in result.candidates],
        "any_correct": any(check(Task.NUMERIC, c.answer, reference) is Verdict.EQUIVALENT for c in result.candidates),
        "seconds": seconds,
        "trace": list(result.trace),
    }


def run_problem(problem: Problem, backend: LlamaCppBackend, sandbox: Sandbox, args: argparse.Namespace
                ) -> dict[str, Any]:
    assert problem.reference is not None
    budget = Budget(max_completion_tokens=args.n * args.max_tokens)
    methods = {
        "sc": SelfConsistency(n_samples=args.n, temperature=args.temperature, top_p=args.top_p,
                              max_tokens=args.max_tokens),
        "sc_tir": ScTir(n_samples=args.n, max_rounds=args.max_rounds, temperature=args.temperature, top_p=args.top_p,
                        max_tokens=args.max_tokens, sandbox=sandbox),
    }
    out: dict[str, Any] = {"id": problem.id, "reference": problem.reference, "methods": {}}
    for name, strategy in methods.items():
        t0 = time.perf_counter()
        result = strategy.run(problem, backend, budget, rng=random.Random(f"{args.seed}:{problem.id}:{name}"))
        out["methods"][name] = method_record(result, problem.reference, time.perf_counter() - t0)
    out["seconds"] = sum(m["seconds"] for m in out["methods"].values())
    return out


def summarise_model(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"problems": len(records)}
    if not records:
        return out
    for name in ("sc", "sc_tir"):
        ms = [r["methods"][name] for r in records]
        toks = [m["completion_tokens"] for m in ms if m["completion_tokens"] is not None]
        out[name] = {
            "accuracy": sum(m["correct"] for m in ms) / len(ms),
            "pass_at_n": sum(m["any_correct"] for m in ms) / len(ms),
            "no_answer": sum(m["answer"] is None for m in ms) / len(ms),
            "mean_completion_tokens": statistics.fmean(toks) if toks else None,
            "mean_code_runs": statistics.fmean(m["code_runs"] for m in ms),
            "mean_code_seconds": statistics.fmean(m["code_seconds"] or 0.0 for m in ms),
            "mean_seconds": statistics.fmean(m["seconds"] for m in ms),
            "budget_stops": sum(m["stop_reason"] == "budget" for m in ms),
        }
    out["seconds_per_problem"] = statistics.fmean(r["seconds"] for r in records)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    ap.add_argument("--data", default="gsm8k_test")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--n", type=int, default=4, help="paths / samples per problem (both methods)")
    ap.add_argument("--max-tokens", type=int, default=512, help="completion tokens per path (both methods)")
    ap.add_argument("--max-rounds", type=int, default=3, help="code runs per SC-TIR path")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--code-timeout", type=float, default=5.0, help="wall and CPU seconds per code run")
    ap.add_argument("--sandbox-workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--workers", type=int, default=2, help="problems in flight at once (their samples decode in "
                    "one batch)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tir"))
    ap.add_argument("--project-problems", type=int, default=100, help="problems per model of the projected full run")
    args = ap.parse_args()
    for name in ("problems", "n", "max_tokens", "max_rounds", "workers", "sandbox_workers"):
        if getattr(args, name) < (0 if name == "max_rounds" else 1):
            sys.exit(f"--{name.replace('_', '-')} must be >= {0 if name == 'max_rounds' else 1}")
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    data_path = dataset_path(args.data)
    rows = seeded_subset(load_rows(data_path), args.problems, args.seed)
    problems = [Problem.from_text(r["problem"], id=str(r["id"]), system=SOLVE_SYSTEM, reference=str(r["answer"]))
                for r in rows]
    limits = Limits(timeout_seconds=args.code_timeout, cpu_seconds=args.code_timeout)
    summary: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "data_sha256": file_sha256(data_path), "models": {}}
    t_all = time.perf_counter()
    with Sandbox(limits, pool_size=args.sandbox_workers) as sandbox:
        sandbox.warm()
        for model in args.models:
            backend = LlamaCppBackend(resolve(model, progress=True), n_ctx=args.n_ctx, n_threads=args.threads,
                                      name=model)
            header = {"model": backend.info().fingerprint, "data": args.data, "seed": args.seed, "n": args.n,
                      "max_tokens": args.max_tokens, "max_rounds": args.max_rounds, "temperature": args.temperature,
                      "top_p": args.top_p, "code_timeout": args.code_timeout}
            path = args.out / f"{model}.jsonl"
            done: dict[str, dict[str, Any]] = {}
            if path.is_file():
                lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                if lines and lines[0].get("header") != header:
                    sys.exit(f"{path} was written with other settings; delete it or use another --out")
                done = {r["id"]: r for r in lines[1:]}
            else:
                path.write_text(json.dumps({"header": header}) + "\n")
            todo = [p for p in problems if p.id not in done]
            log(f"{model}: {len(done)} done, {len(todo)} to run")
            lock = threading.Lock()

            def one(problem: Problem, backend: LlamaCppBackend = backend, path: Path = path,
                    done: dict[str, dict[str, Any]] = done, model: str = model,
                    lock: threading.Lock = lock) -> None:
                rec = run_problem(problem, backend, sandbox, args)
                with lock:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(rec) + "\n")
                    done[problem.id] = rec
                    m = rec["methods"]
                    log(f"  {model} {len(done)}/{len(problems)} {problem.id}: sc={int(m['sc']['correct'])} "
                        f"({m['sc']['completion_tokens']} tok) sc_tir={int(m['sc_tir']['correct'])} "
                        f"({m['sc_tir']['completion_tokens']} tok, {m['sc_tir']['code_runs']} runs) "
                        f"in {rec['seconds']:.1f}s")

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                for future in [pool.submit(one, p) for p in todo]:
                    future.result()
            wall = time.perf_counter() - t0
            backend.close()
            s = summarise_model([done[p.id] for p in problems if p.id in done])
            s["this_run"] = {"problems": len(todo), "wall_seconds": wall,
                             "wall_seconds_per_problem": wall / len(todo) if todo else None}
            if todo:
                s["projected_hours_for_project_problems"] = wall / len(todo) * args.project_problems / 3600
            summary["models"][model] = s
    summary["wall_seconds"] = time.perf_counter() - t_all
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["models"], indent=2))


if __name__ == "__main__":
    main()
