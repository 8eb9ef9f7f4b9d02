"""The ``thinkscale`` command. Thin: it parses options, builds a backend and a strategy, and prints the Result."""

from __future__ import annotations

import enum
import json
import logging
import math
import random
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thinkscale.answers.cli import check_command
from thinkscale.eval.cli import register as register_eval
from thinkscale.models.cli import app as models_app
from thinkscale.server.cli import serve as serve_command
from thinkscale.tools.cli import sandbox_command
from thinkscale.verifiers.cli import app as train_app

DEFAULT_SYSTEM = ("Solve the problem. Think step by step, then write the final answer as \\boxed{ANSWER}.")

app = typer.Typer(help="thinkscale: make a small local model think harder, and count what it costs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(models_app, name="models", help="List, pull, locate and verify GGUF models.")
app.command("serve")(serve_command)
app.command("check")(check_command)
app.command("sandbox")(sandbox_command)
app.add_typer(train_app, name="train", help="Train verifiers (a PRM head on the policy's hidden states).")
register_eval(app)  # eval, report, export

err = Console(stderr=True)


class StrategyName(enum.StrEnum):
    greedy = "greedy"
    self_consistency = "self-consistency"


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def solve(
    problem: Annotated[str, typer.Argument(help="The problem to solve, as text.")],
    model: Annotated[str, typer.Option(help="Catalog name (see `thinkscale models list`) or a .gguf path; "
                                       "with --base-url, the server's model name.")] = "qwen2.5-coder-0.5b",
    strategy: Annotated[StrategyName, typer.Option(help="How to spend test-time compute.")] = StrategyName.greedy,
    n: Annotated[int | None, typer.Option("-n", "--n-samples",
                                          help="Samples for self-consistency (default 8).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (self-consistency).")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per sample.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed for sampling and tie-breaks (same seed, same run).")] = 0,
    system: Annotated[str, typer.Option(help="System prompt.")] = DEFAULT_SYSTEM,
    base_url: Annotated[str | None, typer.Option(help="Use an OpenAI-compatible server at this URL "
                                                 "(e.g. http://127.0.0.1:8000/v1) instead of embedded llama.cpp.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    show_reasoning: Annotated[bool, typer.Option(help="Show every sample's full text.")] = False,
) -> None:
    """Solve PROBLEM with a scaling strategy; print the answer and exactly what it cost."""
    from thinkscale.backends.base import BackendError
    from thinkscale.models import ModelError
    from thinkscale.types import Budget, Problem

    try:
        prob = Problem.from_text(problem, system=system or None)
        strat = _build_strategy(strategy, n=n, temperature=temperature, max_tokens=max_tokens)
    except ValueError as e:
        _fail(str(e))
    try:
        t0 = time.perf_counter()
        backend = _backend(model, base_url, quiet=json_out)
        load_seconds = time.perf_counter() - t0
        result = strat.run(prob, backend, Budget(), rng=random.Random(seed))
    except (ModelError, BackendError, NotImplementedError) as e:
        _fail(str(e), 1)
    except ValueError as e:
        _fail(str(e))
    payload = result_payload(result, model=model, show_reasoning=show_reasoning)
    payload["load_seconds"] = round(load_seconds, 3)
    if json_out:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        _print_result(payload, show_reasoning)


def _build_strategy(name: StrategyName, *, n: int | None, temperature: float, max_tokens: int) -> Any:
    from thinkscale.strategies.greedy import Greedy
    from thinkscale.strategies.self_consistency import SelfConsistency

    if name is StrategyName.greedy and n is not None:
        raise ValueError("-n applies to self-consistency; greedy takes one sample (use --strategy self-consistency)")
    n = 8 if n is None else n
    if n < 1:
        raise ValueError(f"-n must be at least 1 (got {n})")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if name is StrategyName.greedy:
        return Greedy(max_tokens=max_tokens)
    if temperature == 0:
        raise ValueError("self-consistency needs --temperature > 0 (at 0 every sample is the same); "
                         "use --strategy greedy")
    return SelfConsistency(n_samples=n, temperature=temperature, max_tokens=max_tokens)


def _backend(model: str, base_url: str | None, *, quiet: bool) -> Any:
    from thinkscale.backends import load_backend

    if base_url is not None:
        return load_backend(model, base_url=base_url)
    return load_backend(model, progress=not quiet)


def result_payload(result: Any, *, model: str, show_reasoning: bool) -> dict[str, Any]:
    total = result.ledger.total()
    samples = [c.summary(with_text=show_reasoning) for c in result.candidates]
    wall = result.ledger.elapsed_seconds()
    return {
        "answer": result.answer,
        "strategy": result.strategy,
        "model": model,
        "stop_reason": result.stop_reason,
        "samples": samples,
        "usage": {
            "prompt_tokens": total.prompt_tokens,
            "cached_prompt_tokens": total.cached_prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "calls": total.calls,
            "wall_seconds": round(wall, 3),
            "backend_seconds": None if total.seconds is None else round(total.seconds, 3),
            "flops": total.flops,
        },
        "by_role": {str(r): u.to_dict() for r, u in result.ledger.by_role().items()},
        "trace": list(result.trace),
    }


def _print_result(p: dict[str, Any], show_reasoning: bool) -> None:
    out = Console()
    if show_reasoning:
        for i, s in enumerate(p["samples"]):
            out.rule(escape(f"sample {i}  answer={s['answer']}  tokens={s['completion_tokens']}  "
                            f"({s['finish_reason']})"))
            out.print(s["text"], highlight=False, markup=False)
    votes = next((e["counts"] for e in p["trace"] if e.get("event") == "vote"), None)
    answers = ", ".join(str(s["answer"]) for s in p["samples"])
    # Answers are model output: escape them, or "[/b]" in a sample crashes rich and "[red]" vanishes.
    out.print(f"[bold]answer:[/] {escape(str(p['answer']))}", highlight=False)
    out.print("[dim]" + escape(f"strategy {p['strategy']} on {p['model']}; sample answers: {answers}"
                               + (f"; votes {votes}" if votes else "")) + "[/]", highlight=False)
    u = p["usage"]
    t = Table(title="cost (measured by the backend; tokens)", show_header=True, header_style="bold")
    for col in ("calls", "prompt", "cached", "generated", "wall s", "gen/s", "FLOPs"):
        t.add_column(col, justify="right")
    gen = u["completion_tokens"]
    rate = f"{gen / u['wall_seconds']:.1f}" if gen is not None and u["wall_seconds"] else "?"
    t.add_row(str(u["calls"]), _fmt(u["prompt_tokens"]), _fmt(u["cached_prompt_tokens"]), _fmt(gen),
              f"{u['wall_seconds']:.2f}", rate, "?" if u["flops"] is None else f"{u['flops']:.3g}")
    out.print(t)


def _fmt(v: int | None) -> str:
    return "unknown" if v is None else str(v)


def main() -> None:
    # Library warnings (e.g. an HTTP retry) are not for the terminal; failures reach the user as one-line errors.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
