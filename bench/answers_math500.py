"""Answer extraction + equivalence on the reference solutions: each should score as correct.

For every MATH-500 problem, extract the final answer of the reference ``solution`` and ``check(Task.MATH, ...)`` it
against the ``answer`` field; print the rate and every failure (id, extracted vs reference). Three harder views of
the same data follow, because the full pipeline's exact-string fast path decides most of these pairs on its own:

- symbolic only: math-verify (in the worker) alone on (reference, extracted), with no fast path;
- re-rendered: the reference rewritten the way models write it (``\\dfrac`` -> ``\\frac``, no ``\\left``/``\\right``,
  no spacing commands, ``^{\\circ}``, wrapped in ``$...$``), through the full pipeline;
- negative control: each reference against the next problem's reference (different strings), counting how often
  that is called equivalent (should be ~0: the checker must not say yes to everything).

Then GSM8K test (``#### n`` solutions, ``Task.NUMERIC``; should be 100%) and per-verdict latency of the worker.

    .venv/bin/python bench/answers_math500.py [--data DIR] [--out bench/results/answers_math500.json]

``--data`` is a folder holding ``math500.jsonl`` and ``gsm8k_test.jsonl``; by default the copies shipped in the
package (``thinkscale/eval/data``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from thinkscale.answers import SymbolicChecker, Task, Verdict, check, extract_for_task
from thinkscale.answers.normalize import canonical_latex
from thinkscale.eval.datasets import data_dir


def rerender(answer: str) -> str:
    """The reference as a model might write it: same meaning, different spelling."""
    s = answer.replace("\\dfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\[!,;]", "", s).replace("^\\circ", "^{\\circ}")
    # \frac{a}{b} -> (a)/(b), so only sympy can tell; not in mixed numbers (1\frac{4}{5} is 9/5, 1(4)/(5) is 4/5)
    s = re.sub(r"(?<![\d\s])(\s*)\\frac\{([^{}]+)\}\{([^{}]+)\}", r"\1(\2)/(\3)", s)
    return f"${s}$"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rate(ok: int, n: int) -> str:
    return f"{ok}/{n} = {100 * ok / n:.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=data_dir(),
                    help="folder with math500.jsonl and gsm8k_test.jsonl (default: the shipped datasets)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    rows = load(args.data / "math500.jsonl")
    report: dict[str, Any] = {}

    with SymbolicChecker() as checker:
        t0 = time.perf_counter()
        checker.start()
        report["worker_start_s"] = round(time.perf_counter() - t0, 3)

        failures = []
        t0 = time.perf_counter()
        for r in rows:
            extracted = extract_for_task(r["solution"], Task.MATH)
            verdict = check(Task.MATH, extracted, r["answer"], checker=checker)
            if verdict is not Verdict.EQUIVALENT:
                failures.append({"id": r["id"], "extracted": extracted, "reference": r["answer"],
                                 "verdict": str(verdict)})
        report["pipeline_s"] = round(time.perf_counter() - t0, 3)
        ok = len(rows) - len(failures)
        report["math500_solutions"] = {"ok": ok, "n": len(rows), "failures": failures}
        print(f"MATH-500 reference solutions, extract + check: {rate(ok, len(rows))}  ({report['pipeline_s']} s)")
        for f in failures:
            print(f"  FAIL {f['id']}: extracted {f['extracted']!r} vs reference {f['reference']!r} -> {f['verdict']}")

        latencies: list[tuple[float, str]] = []
        sym_failures = []
        for r in rows:
            extracted = extract_for_task(r["solution"], Task.MATH) or ""
            t = time.perf_counter()
            v = checker.verdict(r["answer"], extracted)
            latencies.append((time.perf_counter() - t, r["answer"]))
            if v != "equivalent":
                sym_failures.append({"id": r["id"], "extracted": extracted, "reference": r["answer"], "verdict": v})
        ok = len(rows) - len(sym_failures)
        report["math500_symbolic_only"] = {"ok": ok, "n": len(rows), "failures": sym_failures}
        print(f"MATH-500, math-verify alone (no fast path): {rate(ok, len(rows))}")
        for f in sym_failures:
            print(f"  FAIL {f['id']}: {f['extracted']!r} vs {f['reference']!r} -> {f['verdict']}")

        re_failures = []
        for r in rows:
            shown = rerender(r["answer"])
            v = check(Task.MATH, shown, r["answer"], checker=checker)
            sym = checker.verdict(r["answer"], shown.strip("$"))
            if v is not Verdict.EQUIVALENT or sym != "equivalent":
                re_failures.append({"id": r["id"], "rendered": shown, "reference": r["answer"], "verdict": str(v),
                                    "symbolic_only": sym})
        ok = len(rows) - len(re_failures)
        report["math500_rerendered"] = {"ok": ok, "n": len(rows), "failures": re_failures}
        print(f"MATH-500, reference re-rendered (\\dfrac, \\left, spacing, \\frac{{a}}{{b}} -> (a)/(b), $...$), "
              f"full pipeline and math-verify alone both equivalent: {rate(ok, len(rows))}")
        for f in re_failures:
            print(f"  FAIL {f['id']}: {f['rendered']!r} vs {f['reference']!r} -> {f['verdict']}, "
                  f"math-verify alone {f['symbolic_only']}")

        false_yes = []
        pairs = 0
        for r, nxt in zip(rows, rows[1:] + rows[:1], strict=True):
            if canonical_latex(r["answer"]) == canonical_latex(nxt["answer"]):
                continue  # the same answer to two problems: "equivalent" is right
            pairs += 1
            v = check(Task.MATH, nxt["answer"], r["answer"], checker=checker)
            if v is not Verdict.NOT_EQUIVALENT:
                false_yes.append({"id": r["id"], "other": nxt["answer"], "reference": r["answer"], "verdict": str(v)})
        report["math500_negative_control"] = {"pairs": pairs, "not_rejected": false_yes}
        print(f"MATH-500 negative control (reference vs the next problem's): {len(false_yes)} of {pairs} "
              f"different pairs not rejected")
        for f in false_yes:
            print(f"  {f['id']}: {f['other']!r} vs {f['reference']!r} -> {f['verdict']}")

    gsm = load(args.data / "gsm8k_test.jsonl")
    gsm_failures = []
    for r in gsm:
        extracted = extract_for_task(r["solution"], Task.NUMERIC)
        if check(Task.NUMERIC, extracted, r["answer"]) is not Verdict.EQUIVALENT:
            gsm_failures.append({"id": r["id"], "extracted": extracted, "reference": r["answer"]})
    ok = len(gsm) - len(gsm_failures)
    report["gsm8k_test_solutions"] = {"ok": ok, "n": len(gsm), "failures": gsm_failures}
    print(f"GSM8K test reference solutions (#### n), numeric: {rate(ok, len(gsm))}")
    for f in gsm_failures:
        print(f"  FAIL {f['id']}: extracted {f['extracted']!r} vs reference {f['reference']!r}")

    ms = sorted(1000 * x for x, _ in latencies)
    report["slowest_verdicts"] = [{"answer": a, "ms": round(1000 * x, 1)} for x, a in sorted(latencies)[-5:]]
    report["worker_latency_ms"] = {"median": round(statistics.median(ms), 2),
                                   "p95": round(ms[int(0.95 * (len(ms) - 1))], 2), "max": round(ms[-1], 2)}
    print(f"worker start {report['worker_start_s']} s; per-verdict latency (math-verify in the worker, "
          f"{len(ms)} calls): median {report['worker_latency_ms']['median']} ms, "
          f"p95 {report['worker_latency_ms']['p95']} ms, max {report['worker_latency_ms']['max']} ms; slowest: "
          + ", ".join(f"{v['answer']!r} {v['ms']} ms" for v in report["slowest_verdicts"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    solutions_ok = report["math500_solutions"]["ok"] / len(rows) >= 0.99 and not gsm_failures
    return 0 if solutions_ok else 1


if __name__ == "__main__":
    sys.exit(main())
