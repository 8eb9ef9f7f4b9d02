"""Generative selection on a run's stored self-consistency chains (issue 26 item 3), without regenerating them.

For every problem and k, the k-subsets are the harness's own (``thinkscale.eval.select``: ``unit_rng`` and
``metrics.subsets``, as ``thinkscale select`` uses); a list-wise selection call costs one model call per subset, so
only the first ``--subsets`` of them are judged (at k = N there is one). On each judged subset the model sees the
distinct answers with the tail of one chain each (``thinkscale.verifiers.genselect``, the prompt the ``genselect``
strategy sends) and names one; a subset whose chains agree needs no call; a reply naming no option falls back to
the majority vote (ties split). The majority vote on the very same subsets is the paired baseline; the store's
exact majority (all subsets) is reported beside it.

Replies are cached in a JSON-lines file keyed by the request (resumable: a kill loses at most the batch in flight).

    .venv/bin/python bench/genselect_select.py runs/gsm8k-qwen0.5b --subsets 1 --mode direct \\
        --cache runs/genselect/replies-0.5b.jsonl --out bench/results/genselect/select-qwen0.5b-direct.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.eval.draws import problem_messages
from thinkscale.eval.metrics import bootstrap_ci, mean, pass_at_k, selection_value, subsets
from thinkscale.eval.runner import unit_rng
from thinkscale.eval.select import Draw, Selector, SelectorKind, StoredRun, load_run, selector_value
from thinkscale.strategies.genselect import DEFAULT_JUDGE_TOKENS
from thinkscale.types import GenRequest, Problem, Usage
from thinkscale.verifiers import genselect as gs
from thinkscale.verifiers.aggregate import Selection

MAJORITY = Selector(SelectorKind.MAJORITY)


class Replies:
    """The selection replies by request key, appended to a JSON-lines file as they come."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def put(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def request_key(fingerprint: str, req: GenRequest) -> str:
    blob = [fingerprint, [[m.role, m.content] for m in req.messages or ()], req.max_tokens, req.temperature,
            req.continue_final, list(req.stop)]
    return hashlib.sha256(json.dumps(blob, ensure_ascii=False).encode()).hexdigest()


def judged_rows(stored: StoredRun, d: Draw, k: int, n_subsets: int) -> np.ndarray:
    """The first ``n_subsets`` of the harness's k-subsets of the draw's chains (all of them when fewer)."""
    rng = unit_rng(d.seed, d.problem_id, stored.sampler, stored.model, k)
    return subsets(len(d.chains), k, max_subsets=int(stored.cfg["max_subsets"]), rng=rng)[:n_subsets]


def plan(stored: StoredRun, ks: Sequence[int], n_subsets: int, mode: gs.Mode, rationale_chars: int,
         judge_tokens: int) -> list[dict[str, Any]]:
    """Every judged subset: its problem, k, chains, options and (when it has several options) its request."""
    messages = problem_messages(stored.cfg)
    out = []
    for d in stored.draws:
        problem = Problem(d.problem_id, messages[d.problem_id])
        for k in ks:
            for row in judged_rows(stored, d, k, n_subsets):
                pool = [int(i) for i in row]
                opts = gs.options(d.chains, pool)
                req = None
                if 2 <= len(opts) <= gs.MAX_OPTIONS:
                    req = GenRequest(messages=gs.messages(problem, d.chains, opts, mode, rationale_chars),
                                     temperature=0.0, top_p=1.0, max_tokens=judge_tokens, seed=0,
                                     continue_final=mode is gs.Mode.DIRECT,
                                     stop=("\n",) if mode is gs.Mode.DIRECT else ())
                out.append({"draw": d, "k": k, "pool": pool, "options": opts, "request": req})
    return out


def run_requests(items: list[dict[str, Any]], replies: Replies, model: str, fingerprint: str | None,
                 threads: int | None, batch: int) -> None:
    """Ask the model for every request the cache lacks, ``batch`` per call."""
    todo = [it for it in items if it["request"] is not None]
    for it in todo:
        it["key"] = request_key(fingerprint or "", it["request"])
    missing = list({it["key"]: it for it in todo if it["key"] not in replies.rows}.values())
    if not missing:
        return
    from thinkscale.backends import load_backend

    backend = load_backend(model, n_threads=threads, progress=False, n_ctx=8192)
    try:
        if fingerprint is not None and backend.info().fingerprint != fingerprint:
            raise SystemExit(f"error: {model} loads as {backend.info().fingerprint}; the run was sampled by "
                             f"{fingerprint}")
        for i in range(0, len(missing), batch):
            chunk = missing[i:i + batch]
            t0 = time.perf_counter()
            done = backend.generate([it["request"] for it in chunk])
            for it, c in zip(chunk, done, strict=True):
                replies.put({"key": it["key"], "problem_id": it["draw"].problem_id, "k": it["k"],
                             "reply": c.samples[0].text, "usage": c.usage.to_dict()})
            print(f"selection calls {i + len(chunk)}/{len(missing)} ({time.perf_counter() - t0:.1f}s)",
                  file=sys.stderr, flush=True)
    finally:
        backend.close()


def subset_values(it: dict[str, Any], replies: Replies, mode: gs.Mode) -> dict[str, Any]:
    """On one judged subset: the majority's value (ties split), generative selection's, whether the reply named
    an option (and its letter: A is the most voted answer), how many options it showed, and the call's usage."""
    d: Draw = it["draw"]
    keys, correct = d.keys, d.correct
    pool = it["pool"]
    maj = selection_value([keys[i] for i in pool], [correct[i] for i in pool], None, Selection.MAJORITY)
    opts: list[gs.Option] = it["options"]
    if it["request"] is None:  # the chains agree (or too many answers: the vote decides)
        return {"majority": maj, "genselect": maj, "called": False, "named": None, "usage": Usage.zero()}
    row = replies.rows[it["key"]]
    choice = gs.parse_choice(row["reply"], [o.answer for o in opts], mode)
    value = maj if choice is None else float(correct[opts[choice].shown])
    return {"majority": maj, "genselect": value, "called": True, "named": choice is not None,
            "letter": None if choice is None else gs.LETTERS[choice], "options": len(opts),
            "usage": Usage(**row["usage"])}


def summarise(stored: StoredRun, items: list[dict[str, Any]], replies: Replies, ks: Sequence[int],
              mode: gs.Mode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ks:
        per_problem: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            if it["k"] == k:
                per_problem.setdefault(it["draw"].problem_id, []).append(subset_values(it, replies, mode))
        ids = [d.problem_id for d in stored.draws]
        gen = [mean([v["genselect"] for v in per_problem[p]]) for p in ids]
        maj = [mean([v["majority"] for v in per_problem[p]]) for p in ids]
        exact = [selector_value(d, MAJORITY, None, k, stored) for d in stored.draws]
        flat = [v for p in ids for v in per_problem[p]]
        called = [v for v in flat if v["called"]]
        use = Usage.total(v["usage"] for v in called) if called else Usage.zero()
        diff = bootstrap_ci([a - b for a, b in zip(gen, maj, strict=True)])
        est, mj = bootstrap_ci(gen), bootstrap_ci(maj)
        out[str(k)] = {
            "problems": len(ids), "judged_subsets": len(flat), "selection_calls": len(called),
            "replies_naming_an_option": sum(1 for v in called if v["named"]),
            "letters_named": dict(sorted(Counter(v["letter"] for v in called if v["named"]).items())),
            "mean_options_shown": mean([v["options"] for v in called]) if called else None,
            "genselect": {"accuracy": est.mean, "ci95": [est.low, est.high]},
            "majority_same_subsets": {"accuracy": mj.mean, "ci95": [mj.low, mj.high]},
            "genselect_vs_majority": {"diff": diff.mean, "ci95": [diff.low, diff.high],
                                      "excludes_0": diff.low > 0 or diff.high < 0},
            "majority_all_subsets": mean(exact),
            "pass_at_k": mean([pass_at_k(len(d.chains), sum(d.correct), k) for d in stored.draws]),
            "verifier_per_problem": {"prompt_tokens": (use.prompt_tokens or 0) / len(ids),
                                     "computed_prompt_tokens": (use.computed_prompt_tokens or 0) / len(ids),
                                     "completion_tokens": (use.completion_tokens or 0) / len(ids),
                                     "flops": None if use.flops is None else use.flops / len(ids),
                                     "calls": len(called) / len(ids)},
            "per_problem": {"genselect": gen, "majority": maj}}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--ks", default="4,8,16")
    ap.add_argument("--subsets", type=int, default=1, help="judged k-subsets per problem and k (the harness's first)")
    ap.add_argument("--mode", default="direct", choices=[m.value for m in gs.Mode])
    ap.add_argument("--rationale-chars", type=int, default=600)
    ap.add_argument("--judge-max-tokens", type=int, default=0, help="0: the strategy's default for the mode")
    ap.add_argument("--cache", type=Path, default=None, help="JSON-lines file of replies (resumable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4, help="selection requests per backend call")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.subsets < 1 or args.rationale_chars < 1 or args.judge_max_tokens < 0 or args.batch < 1:
        ap.error("--subsets, --rationale-chars and --batch must be >= 1, --judge-max-tokens >= 0")
    mode = gs.Mode(args.mode)
    stored = load_run(args.run)
    ks = [int(x) for x in args.ks.split(",") if x.strip()]
    if any(not 1 <= k <= stored.n_chains for k in ks):
        ap.error(f"--ks: the run stores {stored.n_chains} chains per problem")
    judge = args.judge_max_tokens or DEFAULT_JUDGE_TOKENS[mode]
    items = plan(stored, ks, args.subsets, mode, args.rationale_chars, judge)
    replies = Replies(args.cache)
    run_requests(items, replies, stored.model, stored.fingerprint, args.threads, args.batch)
    result = {"command": "bench/genselect_select.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "run": str(args.run), "model": stored.model, "sampler": stored.sampler,
              "chains_per_problem": stored.n_chains, "mode": mode.value, "rationale_chars": args.rationale_chars,
              "judge_max_tokens": judge, "subsets_judged_per_problem": args.subsets,
              "by_k": summarise(stored, items, replies, ks, mode)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k, row in result["by_k"].items():
        print(f"k={k}: genselect {row['genselect']['accuracy']:.3f} vs majority (same subsets) "
              f"{row['majority_same_subsets']['accuracy']:.3f}, diff {row['genselect_vs_majority']['diff']:+.3f} "
              f"{row['genselect_vs_majority']['ci95']}; calls {row['selection_calls']}, named "
              f"{row['replies_naming_an_option']}; pass@k {row['pass_at_k']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
