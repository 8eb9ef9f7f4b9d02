"""Scripted backends for the strategy tests: exact scripts for hand-computed cases, and an endless seeded one for
the budget and reproducibility properties."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from thinkscale.backends.scripted import ScriptedBackend, ScriptItem
from thinkscale.strategies.events import Generate, ScoreCall, Tool, Verify
from thinkscale.types import GenRequest, Problem, Result

# Rendered by the fake as "<user> What is 6 times 7?": 6 prompt words.
PROBLEM = Problem.from_text("What is 6 times 7?")


def words(n: int, answer: str | None = None) -> str:
    """A text of exactly ``n`` words (the fake's tokens), the last being ``\\boxed{answer}`` when given."""
    body = ["w"] * (n - (1 if answer is not None else 0))
    return " ".join(body + ([f"\\boxed{{{answer}}}"] if answer is not None else []))


def seeded_text(req: GenRequest, j: int) -> str:
    """A reply that depends only on the request (its seed and last message): 1..40 words, an answer in 0..3 (or
    none), then a verdict marker, "</think>" or nothing; so same seed -> same run, different seeds -> other paths."""
    last = req.messages[-1].content if req.messages else req.prompt
    r = random.Random(f"{req.sample_seed(j)}|{last}")  # a str seed is hashed deterministically
    n = r.randint(1, 40)
    extra = r.choice(["VERDICT: CORRECT", "VERDICT: INCORRECT", "", "</think>"])
    answer = r.choice(["0", "1", "2", "3", None])
    return " ".join([words(n, answer), extra]).strip()


def endless(n: int = 10_000, entry: Callable[[GenRequest, int], str] = seeded_text, **kw) -> ScriptedBackend:
    return ScriptedBackend([entry] * n, score_fn=yes_no_score_fn(lambda prompt: 0.5 + 0.4 * math.sin(len(prompt))),
                           **kw)


def yes_no_score_fn(p_yes_of: Callable[[str], float]) -> Callable[[str, str], tuple[float, ...]]:
    """A ``score_fn`` for the P(yes) verifier: log P("Yes") = log p and log P("No") = log(1 - p) for the judged
    prompt, so the verifier's score sigmoid(log p - log(1 - p)) is exactly p."""

    def fn(prompt: str, continuation: str) -> tuple[float, ...]:
        p = p_yes_of(prompt)
        return (math.log(p) if continuation == "Yes" else math.log1p(-p),)

    return fn


def item(text: str, logprobs: tuple[float, ...]) -> ScriptItem:
    return ScriptItem(text, logprobs)


def algo_trace(result: Result) -> list[dict[str, Any]]:
    """The JSON form of a run's strategy events: every event but the calls the run context records for every
    strategy alike (generate, score, verify, tool), which the tests check through the backend and the ledger."""
    return [e.to_json() for e in result.trace if not isinstance(e, Generate | ScoreCall | Verify | Tool)]
