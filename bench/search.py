"""Prefix reuse of the tree searches: does each step cost only its new tokens on the embedded llama.cpp backend?

Runs beam search, DVTS and MCTS (PRM-style values) on the first GSM8K test problems with the embedded backend and
measures, from the backend's own counters around every generate() call:

    ratio = prompt tokens llama.cpp computed for the search's generate calls
            / unique tokens in the search tree (the distinct token prefixes of every prompt the search sent)

Each expansion's prompt is its parent's prompt plus the step the parent's sample just generated (already in the KV
cache as sampled tokens), so with full reuse only the step boundary is computed and the ratio is well below 1;
recomputing every prompt from scratch gives about (depth + 1) / 2 per problem. Target: <= 1.2.
``ratio_new_tokens`` is the brief's variant: (computed - the root prompt's tokens) / (tree tokens - root prompt), i.e.
what each step cost per new token it added. Verifier scoring (P(yes) or a trained PRM) is measured separately.

    .venv/bin/python bench/search.py [--model smollm2-135m] [--problems 3] [--verifier pyes]
    .venv/bin/python bench/search.py --model qwen2.5-coder-0.5b --verifier prm \\
        --verifier-path bench/results/prm_tiny/prm.json --problems 2

Writes bench/results/search.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.models import resolve
from thinkscale.strategies.beam_search import BeamSearch
from thinkscale.strategies.dvts import DVTS
from thinkscale.strategies.mcts import MCTS, ValueSource
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Completion, GenRequest, Problem, Role

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"
SYSTEM = ("Solve the math problem step by step. Write each step as one short paragraph and separate steps with a "
          "blank line. End with a line 'The answer is N.' where N is the final number.")
COUNTERS = ("prompt_tokens_decoded", "prompt_tokens_reused", "sample_tokens_decoded", "evictions")


class Metered:
    """The backend as the strategies see it, with the counters of generate() calls and of scoring calls kept apart,
    and every generation prompt's tokens kept for the tree's unique-token count."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.b = backend
        self.capabilities = backend.capabilities
        self.gen = dict.fromkeys(COUNTERS, 0)
        self.ver = dict.fromkeys(COUNTERS, 0)
        self.prompts: list[list[int]] = []

    def _run(self, into: dict[str, int], fn: Any, *args: Any) -> Any:
        before = dict(self.b.counters)
        out = fn(*args)
        for k in COUNTERS:
            into[k] += self.b.counters[k] - before[k]
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        for r in requests:
            text = self.b.render(r.messages, r.prompt, continue_final=r.continue_final)
            self.prompts.append(self.b.tokenize(text))
        return self._run(self.gen, self.b.generate, requests)  # type: ignore[no-any-return]

    def score(self, requests):  # type: ignore[no-untyped-def]
        return self._run(self.ver, self.b.score, requests)

    def hidden_states(self, requests):  # type: ignore[no-untyped-def]
        return self._run(self.ver, self.b.hidden_states, requests)

    def tokenize(self, text: str) -> list[int]:
        return self.b.tokenize(text)

    def info(self):  # type: ignore[no-untyped-def]
        return self.b.info()

    @property
    def n_embd(self) -> int:
        return self.b.n_embd

    def close(self) -> None:
        pass


def unique_tokens(prompts: Sequence[Sequence[int]]) -> int:
    """Nodes of the token trie of ``prompts``: every distinct prefix counted once."""
    seen: set[tuple[int, ...]] = set()
    for p in prompts:
        for i in range(1, len(p) + 1):
            seen.add(tuple(p[:i]))
    return len(seen)


def load(n: int) -> list[dict[str, Any]]:
    with open(DATA) as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def strategies(args: argparse.Namespace) -> dict[str, Any]:
    common = dict(verifier=args.verifier, verifier_path=args.verifier_path, max_step_tokens=args.step_tokens,
                  max_steps=args.max_steps)
    return {
        "beam": BeamSearch(beam_width=args.width, expansions_per_beam=args.k, **common),
        "dvts": DVTS(n_subtrees=args.width, expansions_per_step=args.k, **common),
        "mcts": MCTS(n_simulations=args.simulations, expansions_per_node=args.k, value=ValueSource.PRM,
                     simulation=args.mcts_simulation, **common),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--verifier", default="pyes")
    ap.add_argument("--verifier-path", default=None)
    ap.add_argument("--width", type=int, default=2, help="beam width / DVTS subtrees")
    ap.add_argument("--k", type=int, default=2, help="expansions per beam / step / node")
    ap.add_argument("--simulations", type=int, default=6)
    ap.add_argument("--mcts-simulation", choices=["path", "step"], default="path",
                    help="MCTS's simulation knob (bench/results/search*.json were measured with 'step', the "
                         "only kind before 2026-12-07)")
    ap.add_argument("--step-tokens", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--budget-tokens", type=int, default=1500, help="completion-token budget per problem")
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--n-seq-max", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--strategies", default="beam,dvts,mcts")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "search.json"))
    args = ap.parse_args()

    backend = LlamaCppBackend(resolve(args.model, progress=False), n_ctx=args.n_ctx, n_seq_max=args.n_seq_max,
                              n_threads=args.threads, name=args.model)
    rows = load(args.problems)
    chosen = {k: v for k, v in strategies(args).items() if k in args.strategies.split(",")}
    report: dict[str, Any] = {"model": args.model, "verifier": args.verifier, "verifier_path": args.verifier_path,
                              "problems": args.problems, "budget_completion_tokens": args.budget_tokens,
                              "knobs": {k: {f: str(getattr(s, f)) for f in s.__dataclass_fields__}
                                        for k, s in chosen.items()},
                              "machine": {"cpu": platform.processor() or platform.machine(),
                                          "threads": backend.n_threads},
                              "command": "", "strategies": {}}
    for name, strategy in chosen.items():
        per_problem = []
        t0 = time.perf_counter()
        for row in rows:
            backend.clear_cache()  # every problem starts cold: the ratio is the search's own reuse
            meter = Metered(backend)
            problem = Problem.from_text(row["problem"], id=row["id"], system=SYSTEM)
            start = time.perf_counter()
            result = execute(strategy, problem, meter, Budget(max_completion_tokens=args.budget_tokens),
                                  rng=random.Random(0))
            gen = result.ledger.total(Role.GENERATOR)
            ver = result.ledger.total(Role.VERIFIER)
            tree_tokens = unique_tokens(meter.prompts)
            root = len(meter.prompts[0]) if meter.prompts else 0
            computed = meter.gen["prompt_tokens_decoded"]
            per_problem.append({
                "id": row["id"], "answer": result.answer, "reference": row["answer"],
                "correct": normalize_answer(result.answer) == normalize_answer(row["answer"]),
                "stop_reason": result.stop_reason, "seconds": round(time.perf_counter() - start, 2),
                "generate_requests": len(meter.prompts), "tree_nodes": len(result.candidates),
                "tree_unique_prompt_tokens": tree_tokens, "root_prompt_tokens": root,
                "computed_prompt_tokens": computed,
                "ledger_computed_prompt_tokens": gen.computed_prompt_tokens,
                "prompt_tokens_sent": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                "sample_tokens_decoded": meter.gen["sample_tokens_decoded"],
                "evictions_during_generation": meter.gen["evictions"],
                "verifier": {"calls": ver.calls, "prompt_tokens": ver.prompt_tokens,
                             "computed_prompt_tokens": meter.ver["prompt_tokens_decoded"],
                             "evictions": meter.ver["evictions"]},
                "ratio": computed / tree_tokens if tree_tokens else None,
            })
            print(f"{name} {row['id']}: ratio {per_problem[-1]['ratio']:.3f} (computed {computed} / tree "
                  f"{tree_tokens}), {len(meter.prompts)} requests, answer {result.answer} (ref {row['answer']}), "
                  f"{per_problem[-1]['seconds']} s", flush=True)
        computed = sum(p["computed_prompt_tokens"] for p in per_problem)
        tree = sum(p["tree_unique_prompt_tokens"] for p in per_problem)
        root = sum(p["root_prompt_tokens"] for p in per_problem)
        report["strategies"][name] = {
            "ratio": computed / tree if tree else None,
            "ratio_new_tokens": (computed - root) / (tree - root) if tree > root else None,
            "computed_prompt_tokens": computed, "tree_unique_prompt_tokens": tree, "root_prompt_tokens": root,
            "accuracy": sum(p["correct"] for p in per_problem) / len(per_problem),
            "seconds": round(time.perf_counter() - t0, 1), "per_problem": per_problem}
        s = report["strategies"][name]
        steps_only = "n/a (no step was expanded)" if s["ratio_new_tokens"] is None else f"{s['ratio_new_tokens']:.3f}"
        print(f"== {name}: ratio {s['ratio']:.3f} (computed {computed} / unique tree tokens {tree}); steps only "
              f"{steps_only}; accuracy {s['accuracy']:.2f}; {s['seconds']} s", flush=True)
    import sys

    report["command"] = " ".join([".venv/bin/python", *sys.argv])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    backend.close()


if __name__ == "__main__":
    main()
