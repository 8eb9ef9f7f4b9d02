"""The ``thinkscale`` command. Thin: it parses options, builds a backend and a strategy, and prints the Result."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thinkscale.answers.cli import register as register_check
from thinkscale.cliutil import fail, working
from thinkscale.eval.cli import register as register_eval
from thinkscale.models.cli import app as models_app
from thinkscale.policy.cli import register as register_policy
from thinkscale.prompts import MATH_SYSTEM as DEFAULT_SYSTEM  # the name bench/ and older scripts import
from thinkscale.rl.cli import register as register_rl
from thinkscale.server.catalogue import MAX_COUNT, counted_knobs  # the server's cap on samples per run
from thinkscale.server.cli import serve as serve_command  # FastAPI and uvicorn load inside the command
from thinkscale.tools.cli import sandbox_command
from thinkscale.verifiers.cli import app as train_app
from thinkscale.viewer.cli import view_command  # FastAPI loads inside the command

app = typer.Typer(help="thinkscale: make a small local model think harder, and count what it costs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(models_app, name="models", help="List, pull, locate and verify GGUF models.")
app.command("serve")(serve_command)
register_check(app)  # check (negative numbers are answers, not options)
app.command("sandbox")(sandbox_command)
app.command("view")(view_command)
app.add_typer(train_app, name="train", help="Train verifiers (PRM, ORM heads on the policy's hidden states) and the "
              "policy itself (GRPO).")
register_rl(train_app)  # train grpo, train export
register_eval(app)  # eval, report, export
register_policy(app)  # fit-policy

# A solve that runs longer than this shows a spinner with the seconds so far on stderr (terminals only).
SPINNER_AFTER_SECONDS = 2.0


def _short(value: Any, width: int = 28) -> str:
    if value == "":
        return '""'
    text = "none" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _strategies_help() -> str:
    """The knobs of every registered strategy, for ``solve --help`` (generated from the registry)."""
    from thinkscale.strategies import base as strategies

    strategies.load_all()
    parts = ["Strategies and their knobs (KNOB=default, type; * = the budget knob a sweep varies). Set knobs in the "
             "spec (--strategy best-of-n:verifier=pyes,n_samples=8) or with --knob KNOB=VALUE; "
             "`thinkscale strategies` lists them with paper links."]
    for name in sorted(strategies.REGISTRY):
        bk = strategies.budget_knob(name)
        knobs = ", ".join(f"{k.name}{'*' if k.name == bk else ''}="
                          f"{'(required)' if k.required else _short(k.default)} ({k.type_name})"
                          for k in strategies.knobs(name).values())
        parts.append(f"{name}: {strategies.REGISTRY[name].summary}. Knobs: {knobs or 'none'}.")
    return "\n\n".join(escape(p) for p in parts)


@app.command(epilog=_strategies_help())
def solve(
    problem: Annotated[str, typer.Argument(help="The problem to solve, as text.")],
    model: Annotated[str, typer.Option(help="Catalog name (see `thinkscale models list`) or a .gguf path; "
                                       "with --base-url, the server's model name.")] = "qwen2.5-coder-0.5b",
    strategy: Annotated[str, typer.Option(help="How to spend test-time compute: a strategy NAME, or "
                                          "NAME:KNOB=VALUE,... (see below).")] = "greedy",
    knob: Annotated[list[str] | None, typer.Option("--knob", "-k", metavar="KNOB=VALUE",
                                                   help="Set a knob of the strategy (repeatable; the value "
                                                        "may contain commas).")] = None,
    n: Annotated[int | None, typer.Option("-n", "--n-samples",
                                          help="Shortcut for the strategy's sample-count knob (n_samples, "
                                               "population, ...).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Shortcut for the strategy's temperature knob.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Shortcut for the strategy's max_tokens knob "
                                                   "(completion tokens per sample).")] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", "--budget",
                                                      help="Budget: completion tokens for the whole run, every "
                                                      "role (default: no limit).")] = None,
    budget_calls: Annotated[int | None, typer.Option(help="Budget: backend calls for the whole run.")] = None,
    budget_seconds: Annotated[float | None, typer.Option(help="Budget: seconds; no call starts after it.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy file of --strategy auto (from `thinkscale "
                                                "fit-policy`; default: the packaged one).", dir_okay=False)]
    = None,
    max_samples: Annotated[int, typer.Option(min=1, help="Refuse a sample count (n_samples, population, "
                                             "beam_width, ...) above this: the cap `thinkscale serve` puts on sc-N. "
                                             "On a CPU each sample takes seconds; raise it to run more anyway.")]
    = MAX_COUNT,
    seed: Annotated[int, typer.Option(help="Seed for sampling and tie-breaks (same seed, same run).")] = 0,
    system: Annotated[str, typer.Option(help="System prompt.")] = DEFAULT_SYSTEM,
    base_url: Annotated[list[str] | None, typer.Option(help="Use an OpenAI-compatible server at this URL "
                                                       "(e.g. http://127.0.0.1:8000/v1) instead of embedded "
                                                       "llama.cpp; repeat it for a pool of servers.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    show_reasoning: Annotated[bool, typer.Option(help="Show every sample's full text.")] = False,
    trace: Annotated[Path | None, typer.Option("--trace", metavar="FILE", dir_okay=False,
                                               help="Write the strategy's JSON trace to FILE.")] = None,
) -> None:
    """Solve PROBLEM with a scaling strategy; print the answer and exactly what it cost."""
    from thinkscale.backends.base import BackendError
    from thinkscale.models import ModelError
    from thinkscale.strategies.run import execute
    from thinkscale.tools.sandbox import SandboxError
    from thinkscale.types import Problem
    from thinkscale.verifiers.base import VerifierError

    try:
        prob = Problem.from_text(problem, system=system or None)
        strat = _build_strategy(strategy, knob or [], n=n, temperature=temperature, max_tokens=max_tokens,
                                policy=policy, max_samples=max_samples)
        budget = _budget(budget_tokens, budget_calls, budget_seconds)
    except ValueError as e:
        fail(str(e))
    try:
        t0 = time.perf_counter()
        backend = _backend(model, base_url, quiet=json_out)
        load_seconds = time.perf_counter() - t0
        others = _OtherModels(model, backend, base_url, quiet=json_out)
        with working(f"solving with {strategy} on {model}", after=SPINNER_AFTER_SECONDS):
            try:
                result = execute(strat, prob, backend, budget, rng=random.Random(seed), backend_for=others.get)
            finally:
                others.close()
    except (ModelError, BackendError, NotImplementedError, VerifierError, SandboxError) as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e))
    payload = result_payload(result, model=model, show_reasoning=show_reasoning)
    payload["load_seconds"] = round(load_seconds, 3)
    if json_out:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_result(payload, show_reasoning)
    if trace is not None:  # after the answer is out: a bad trace path must not lose a finished result
        _write_trace(trace, strat, result, spec=strategy)


def _build_strategy(spec: str, knob_args: list[str], *, n: int | None, temperature: float | None,
                    max_tokens: int | None, policy: Path | None = None, max_samples: int = MAX_COUNT) -> Any:
    """The strategy of ``--strategy SPEC``, ``--knob`` and the shortcuts; a knob set twice is an error, and so is a
    sample count over ``max_samples``."""
    from thinkscale.strategies import base as strategies

    name, in_spec = strategies.parse_spec(spec)
    known = strategies.knobs(name)  # ValueError naming the known strategies
    values: dict[str, tuple[Any, str]] = {k: (v, "the --strategy spec") for k, v in in_spec.items()}

    def put(key: str, value: Any, source: str) -> None:
        if key in values:
            raise ValueError(f"knob {key!r} is set twice: by {values[key][1]} and by {source}")
        values[key] = (value, source)

    for arg in knob_args:
        key, eq, value = arg.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"--knob {arg!r} is not KNOB=VALUE (e.g. --knob n_samples=8)")
        put(key.strip(), value.strip(), f"--knob {arg}")
    if n is not None:
        if n < 1:
            raise ValueError(f"-n must be at least 1 (got {n})")
        count = strategies.count_knob(name)
        if count is None:
            raise ValueError(f"-n sets a sample count, and strategy {name!r} has none"
                             + ("; greedy takes one sample (use --strategy self-consistency)"
                                if name == "greedy" else f"; its knobs are {', '.join(known) or 'none'}"))
        put(count, n, "-n")
    if temperature is not None:
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"--temperature must be a finite number >= 0 (got {temperature})")
        if "temperature" not in known:
            raise ValueError(f"--temperature: strategy {name!r} has no temperature knob"
                             + (" (it decodes greedily)" if name == "greedy" else ""))
        put("temperature", temperature, "--temperature")
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1 (got {max_tokens})")
        if "max_tokens" not in known:
            raise ValueError(f"--max-tokens: strategy {name!r} has no max_tokens knob; its knobs are "
                             f"{', '.join(known) or 'none'}")
        put("max_tokens", max_tokens, "--max-tokens")
    if policy is not None:
        if "policy" not in known:
            raise ValueError(f"--policy: strategy {name!r} has no policy (it is for --strategy auto)")
        put("policy", str(policy), "--policy")
    try:
        strat = strategies.build_strategy(name, **{k: v for k, (v, _) in values.items()})
    except ValueError as e:
        if temperature == 0 and "temperature" in str(e):
            raise ValueError(f"{e}; at temperature 0 every sample is the same: use --strategy greedy") from None
        raise
    _check_sample_counts(name, strat, max_samples, {k: source for k, (_, source) in values.items()})
    return strat


def _check_sample_counts(name: str, strat: Any, cap: int, sources: dict[str, str]) -> None:
    """A knob that multiplies the work (samples, beams, agents, rounds: ``catalogue.counted_knobs``) over ``cap``
    (``--max-samples``) is refused before any work: n_samples=100000 would run for hours, silently."""
    for k in sorted(counted_knobs(name)):
        v = getattr(strat, k, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > cap:
            given = f" (set by {sources[k]})" if k in sources else ""
            raise ValueError(f"{k}={v}{given} is over the cap of {cap} samples per run, the one `thinkscale serve` "
                             f"puts on sc-N: on a CPU each sample takes seconds, so this could run for hours; pass "
                             f"--max-samples {v} to run it anyway")


def _budget(tokens: int | None, calls: int | None, seconds: float | None) -> Any:
    from thinkscale.types import Budget

    for option, value in (("--budget-tokens", tokens), ("--budget-calls", calls), ("--budget-seconds", seconds)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} must be > 0 (got {value}); leave it out for no limit")
    return Budget(max_completion_tokens=tokens, max_calls=calls, max_seconds=seconds)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else repr(value)


def _write_trace(path: Path, strat: Any, result: Any, *, spec: str) -> None:
    knobs = {f.name: _jsonable(getattr(strat, f.name)) for f in dataclasses.fields(strat)}
    doc = {"strategy": result.strategy, "spec": spec, "knobs": knobs, "answer": result.answer,
           "stop_reason": result.stop_reason, "ledger": result.ledger.to_dict(), "trace": result.trace_json()}
    try:
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as e:
        fail(f"--trace {path}: cannot write the trace ({e.strerror or e})", 1)


@app.command("strategies")
def list_strategies(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (knobs with types and defaults).")] = False,
) -> None:
    """List the strategies with one-line descriptions, their budget knob and paper links."""
    from thinkscale.strategies import base as strategies

    strategies.load_all()
    rows: list[dict[str, Any]] = []
    for name in sorted(strategies.REGISTRY):
        info = strategies.REGISTRY[name]
        rows.append({"name": name, "summary": info.summary, "paper": info.paper,
                     "budget_knob": strategies.budget_knob(name),
                     "knobs": {k.name: {"type": k.type_name, "default": _jsonable(k.default), "required": k.required}
                               for k in strategies.knobs(name).values()}})
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    t = Table(title="strategies (thinkscale solve --strategy NAME[:KNOB=VALUE,...])", header_style="bold")
    t.add_column("name", no_wrap=True)
    t.add_column("budget knob", overflow="fold")
    t.add_column("description")
    t.add_column("paper", overflow="fold")  # a link must stay whole: folded, never cut with "..."
    for r in rows:
        t.add_row(r["name"], r["budget_knob"] or "", escape(r["summary"]), r["paper"])
    Console().print(t)


def _by_model(ledger: Any, model: str) -> dict[str, Any]:
    """Usage per model name, the run's own model (charged as None, or by its name) under ``model``."""
    out: dict[str, Any] = {}
    for m, u in ledger.by_model().items():
        key = m or model
        out[key] = out[key] + u if key in out else u
    return {k: u.to_dict() for k, u in out.items()}


class _OtherModels:
    """The other models a strategy names (a mixture-of-agents' proposers), loaded like ``--model`` on first use (on
    the same servers with ``--base-url``); the solve's own model by its name is the loaded one."""

    def __init__(self, model: str, backend: Any, base_url: list[str] | None, *, quiet: bool) -> None:
        self._loaded: dict[str, Any] = {model: backend}
        self._own, self._base_url, self._quiet = model, base_url, quiet

    def get(self, name: str) -> Any:
        if name not in self._loaded:
            self._loaded[name] = _backend(name, self._base_url, quiet=self._quiet)
        return self._loaded[name]

    def close(self) -> None:
        for name, b in self._loaded.items():
            if name != self._own:
                b.close()


def _backend(model: str, base_url: list[str] | None, *, quiet: bool) -> Any:
    from thinkscale.backends import load_backend

    if base_url:  # one server, or a pool (thinkscale.backends.pool)
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
        # a strategy on several models (moa:models=...): each model's own usage, FLOPs included
        **({"by_model": _by_model(result.ledger, model)} if any(m is not None for m in result.ledger.models)
           else {}),
        "chosen_index": result.chosen_index,
        # what the final selection weighed per answer: a vote's counts, or verifier scores (votes_kind "score")
        "votes": result.votes,
        "votes_kind": result.votes_kind,
        "trace": result.trace_json(),
    }


def _print_result(p: dict[str, Any], show_reasoning: bool) -> None:
    out = Console()
    if show_reasoning:
        for i, s in enumerate(p["samples"]):
            out.rule(escape(f"sample {i}  answer={s['answer']}  tokens={s['completion_tokens']}  "
                            f"({s['finish_reason']})"))
            out.print(s["text"], highlight=False, markup=False)
    scored = p["votes_kind"] == "score"  # verifier-scored selection: best score per answer, or summed for a vote
    votes = {a: round(v, 3) if scored else int(v) for a, v in (p["votes"] or {}).items()}
    answers = ", ".join(str(s["answer"]) for s in p["samples"])
    # Answers are model output: escape them, or "[/b]" in a sample crashes rich and "[red]" vanishes.
    out.print(f"[bold]answer:[/] {escape(str(p['answer']))}", highlight=False)
    shown = f"; {'scores' if scored else 'votes'} {votes}" if votes else ""
    out.print("[dim]" + escape(f"strategy {p['strategy']} on {p['model']}; sample answers: {answers}{shown}") + "[/]",
              highlight=False)
    u = p["usage"]
    roles = p["by_role"]
    t = Table(title="cost (measured by the backend; tokens)", show_header=True, header_style="bold")
    if len(roles) > 1:  # e.g. generator and verifier: each role's own row, then the total
        t.add_column("role")
    for col in ("calls", "prompt", "cached", "generated", "wall s", "gen/s", "FLOPs"):
        t.add_column(col, justify="right")
    gen = u["completion_tokens"]
    rate = f"{gen / u['wall_seconds']:.1f}" if gen is not None and u["wall_seconds"] else "?"
    if len(roles) > 1:
        for role, r in roles.items():
            t.add_row(role, str(r["calls"]), _fmt(r["prompt_tokens"]), _fmt(r["cached_prompt_tokens"]),
                      _fmt(r["completion_tokens"]), "", "", "?" if r["flops"] is None else f"{r['flops']:.3g}")
    t.add_row(*(["total"] if len(roles) > 1 else []), str(u["calls"]), _fmt(u["prompt_tokens"]),
              _fmt(u["cached_prompt_tokens"]), _fmt(gen), f"{u['wall_seconds']:.2f}", rate,
              "?" if u["flops"] is None else f"{u['flops']:.3g}")
    out.print(t)


def _fmt(v: int | None) -> str:
    return "unknown" if v is None else str(v)


def main() -> None:
    # Library warnings (e.g. an HTTP retry) are not for the terminal; failures reach the user as one-line errors.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
