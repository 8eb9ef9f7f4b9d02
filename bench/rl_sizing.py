"""Size a GRPO run before paying for it (issue 27, "measure first, then size").

GRPO learns only from groups whose completions get different rewards: a group that is all wrong (or all cut off at
the completion cap) has zero advantage and teaches nothing. This samples G completions per training problem with the
embedded llama.cpp backend (fast; the same GGUF ``train grpo`` dequantizes, at the same temperature), once at the
largest cap, and reports for each system prompt and each completion cap: the correct rate, the clipped ratio, the
format rate and the share of groups with reward variance. A completion longer than a cap counts as cut off there (no
reward: ``train grpo`` would grade the truncated text, which rarely holds a final answer). The problems are the first
ones of ``train grpo``'s own training draw (same --data, --seed).

    .venv/bin/python bench/rl_sizing.py --model qwen2.5-coder-0.5b --problems 24 --group 4 \\
        --caps 128,192,256,384,512 --out bench/results/rl/sizing-qwen0.5b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from thinkscale.backends import load_backend
from thinkscale.rl.data import SYSTEMS, split_problems
from thinkscale.rl.rewards import correct, think_format
from thinkscale.types import GenRequest, Message


def measure(backend: Any, problems: list[Any], group: int, cap: int, temperature: float, seed: int,
            prefill: str = "") -> list[list[dict[str, Any]]]:
    """``prefill`` opens the reply (a continued assistant turn), as ``train grpo --prefill`` does."""
    opened = (Message("assistant", prefill),) if prefill else ()
    reqs = [GenRequest(messages=p.problem.messages + opened, n=group, temperature=temperature, max_tokens=cap,
                       seed=seed + i, continue_final=bool(prefill)) for i, p in enumerate(problems)]
    out = []
    for p, c in zip(problems, backend.generate(reqs), strict=True):
        texts = [s.text for s in c.samples]
        pre = [prefill] * len(texts)
        right = correct(texts, [p.reference] * len(texts), [p.task.value] * len(texts), prefill=pre)
        fmt = think_format(texts, [p.task.value] * len(texts), prefill=pre)
        out.append([{"tokens": s.completion_tokens, "finish": s.finish_reason, "correct": r, "format": f}
                    for s, r, f in zip(c.samples, right, fmt, strict=True)])
    return out


def at_cap(groups: list[list[dict[str, Any]]], cap: int) -> dict[str, Any]:
    def fits(s: dict[str, Any]) -> bool:
        return s["finish"] != "length" and s["tokens"] <= cap

    flat = [s for g in groups for s in g]
    rewards = [[(s["correct"] if fits(s) else 0.0) for s in g] for g in groups]
    return {"cap": cap, "correct": statistics.mean(r for g in rewards for r in g),
            "clipped_ratio": statistics.mean(0.0 if fits(s) else 1.0 for s in flat),
            "format": statistics.mean((s["format"] if fits(s) else 0.0) for s in flat),
            "groups_with_variance": statistics.mean(1.0 if len(set(g)) > 1 else 0.0 for g in rewards),
            "groups_all_wrong": statistics.mean(1.0 if max(g) == 0 else 0.0 for g in rewards)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--data", default="gsm8k-train")
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--caps", default="128,192,256,384,512")
    ap.add_argument("--systems", default="think,boxed,think+prefill")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    caps = sorted(int(c) for c in a.caps.split(","))
    backend = load_backend(a.model, n_threads=a.threads, progress=False)
    result: dict[str, Any] = {"command": " ".join(["bench/rl_sizing.py", *(argv or sys.argv[1:])]),
                              "model": a.model, "data": a.data, "problems": a.problems, "group": a.group,
                              "temperature": a.temperature, "systems": {}}
    for variant in a.systems.split(","):  # think, boxed, or think+prefill (the reply opened with <think>)
        system, _, opened = variant.partition("+")
        prefill = "<think>\n" if opened == "prefill" else ""
        split = split_problems(a.data, problems=a.problems, heldout=0, seed=a.seed, system=system)
        t0 = time.perf_counter()
        groups = measure(backend, list(split.train), a.group, caps[-1], a.temperature, a.seed, prefill)
        tokens = [s["tokens"] for g in groups for s in g]
        result["systems"][variant] = {
            "prompt": SYSTEMS.get(system, system), "prefill": prefill, "seconds": round(time.perf_counter() - t0, 1),
            "completion_tokens": {"mean": statistics.mean(tokens), "median": statistics.median(tokens),
                                  "max": max(tokens)},
            "by_cap": [at_cap(groups, c) for c in caps]}
        print(json.dumps({variant: result["systems"][variant]}, indent=1), flush=True)
    backend.close()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
