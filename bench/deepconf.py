"""DeepConf online on the real model: how many generated tokens stopping low-confidence traces saves, and what the
confidence filter does to the vote.

For each of ``--problems`` GSM8K test problems (the eval harness's subset: ``limit 100, seed 0``, the first ones),
one seeded draw of ``--samples`` chains with logprobs, as ``adaptive-sc`` draws them (T 0.7, top-p 0.95, 512 tokens).
The first ``--wave`` chains are the first wave: their DeepConf lowest-group confidences (window ``--window``) set
the threshold at each ``--percentiles`` value. For every later chain, ``ConfidenceStop.stops`` gives the token at
which the backend would have ended it online (the rule the llama.cpp backend applies per token; the equality of
the two is tests/backends/test_llamacpp.py::test_confidence_stop_ends_a_sample_where_the_rule_says), so one draw gives
the saving for every percentile without drawing again. Reported per percentile: the share of later chains stopped,
the generated tokens they would not have spent (of all chains' tokens), and the accuracy of the plain majority of
all chains vs the confidence-filtered, confidence-weighted vote (the same with or without online stopping).

    .venv/bin/python bench/deepconf.py --problems 10 --out bench/results/deepconf.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from thinkscale.answers.equivalence import check
from thinkscale.answers.extract import extract_for_task, normalize_answer
from thinkscale.answers.task import Verdict
from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.eval.datasets import load_dataset
from thinkscale.models import resolve
from thinkscale.strategies.adaptive_sc import _confidence, _percentile
from thinkscale.types import Candidate, ConfidenceStop, GenRequest


def vote(answers: list[str | None], weights: list[float] | None = None) -> str | None:
    """The answer with the most (weighted) votes; ties go to the first seen (this bench needs no rng)."""
    tally: dict[str, float] = defaultdict(float)
    for i, a in enumerate(answers):
        if a is not None:
            tally[a] += 1.0 if weights is None else weights[i]
    return max(tally, key=lambda a: tally[a]) if tally else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--wave", type=int, default=4)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--percentiles", type=float, nargs="+", default=[10.0, 50.0, 90.0])
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not 1 <= args.wave < args.samples:
        ap.error("--wave must be >= 1 and below --samples (the later chains are the ones stopped online)")
    if not 1 <= args.problems <= 100:
        ap.error(f"--problems must be in 1..100 (the eval harness's 100-problem subset), got {args.problems}")
    if any(not 0.0 <= q < 100.0 for q in args.percentiles):
        ap.error(f"--percentiles must each be in [0, 100) like adaptive-sc's keep_percentile, got {args.percentiles}")
    if args.window < 1 or args.max_tokens < 1:
        ap.error("--window and --max-tokens must be >= 1")

    ds = load_dataset("gsm8k").subset(100, 0)
    problems = ds.problems[: args.problems]
    backend = LlamaCppBackend(resolve(args.model, progress=False))
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for k, ep in enumerate(problems):
        seed = random.Random(f"deepconf|{ep.id}").randrange(2**31)
        req = GenRequest(messages=ep.problem.messages, n=args.samples, temperature=0.7, top_p=0.95,
                         max_tokens=args.max_tokens, seed=seed, logprobs=True)
        (c,) = backend.generate([req])
        answers = [extract_for_task(s.text, ds.task) for s in c.samples]
        keys = [normalize_answer(a) for a in answers]
        cands = [Candidate(text=s.text, answer=a, completion_tokens=s.completion_tokens, logprobs=s.logprobs)
                 for s, a in zip(c.samples, answers, strict=True)]
        confs = [_confidence(x, args.window) for x in cands]
        tokens = [s.completion_tokens or 0 for s in c.samples]

        graded = {kk: check(ds.task, a, ep.reference) is Verdict.EQUIVALENT
                  for a, kk in reversed(list(zip(answers, keys, strict=True))) if kk is not None}

        def correct(key: str | None, graded: dict[str, bool] = graded) -> bool:
            return key is not None and graded[key]

        rec: dict[str, Any] = {"problem_id": ep.id, "seed": seed, "tokens": tokens, "answers": answers,
                               "confidences": confs, "majority_correct": correct(vote(keys)), "by_percentile": {}}
        for q in args.percentiles:
            line = _percentile(confs[: args.wave], q)
            rule = ConfidenceStop(args.window, math.log(line)) if line > 0 else None
            stops = [None] * args.wave + [rule.stops(s.logprobs or ()) if rule else None
                                          for s in c.samples[args.wave:]]
            kept = [conf >= line and at is None for conf, at in zip(confs, stops, strict=True)]
            saved = sum(t - at for t, at in zip(tokens, stops, strict=True) if at is not None)
            filtered = vote([kk if kp else None for kk, kp in zip(keys, kept, strict=True)], confs)
            rec["by_percentile"][str(q)] = {"threshold": line, "stopped_at": stops, "kept": kept,
                                            "tokens_saved": saved, "filtered_correct": correct(filtered)}
        records.append(rec)
        print(f"[{k + 1}/{len(problems)}] {ep.id}: {sum(tokens)} tokens, majority "
              f"{'ok' if rec['majority_correct'] else 'wrong'}, saved "
              + ", ".join(f"p{q:g} {rec['by_percentile'][str(q)]['tokens_saved']}" for q in args.percentiles),
              file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0

    total = sum(sum(r["tokens"]) for r in records)
    later = sum(sum(r["tokens"][args.wave:]) for r in records)
    n_later = len(records) * (args.samples - args.wave)
    summary: dict[str, Any] = {
        "model": args.model, "problems": len(records), "samples": args.samples, "wave": args.wave,
        "window": args.window, "max_tokens": args.max_tokens, "generated_tokens": total,
        "later_wave_tokens": later, "majority_accuracy": sum(r["majority_correct"] for r in records) / len(records),
        "by_percentile": {}, "seconds": round(seconds, 1),
        "command": "python bench/deepconf.py " + " ".join(sys.argv[1:]),
    }
    for q in args.percentiles:
        rows = [r["by_percentile"][str(q)] for r in records]
        saved = sum(x["tokens_saved"] for x in rows)
        summary["by_percentile"][str(q)] = {
            "later_chains_stopped": sum(a is not None for x in rows for a in x["stopped_at"][args.wave:]) / n_later,
            "tokens_saved": saved, "share_of_all_tokens": saved / total if total else 0.0,
            "share_of_later_wave_tokens": saved / later if later else 0.0,
            "filtered_vote_accuracy": sum(x["filtered_correct"] for x in rows) / len(rows),
            "kept_counts": dict(Counter(sum(x["kept"]) for x in rows)),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "problems": records}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
