"""Runs with hand-made chains (so every fitted number can be computed by hand) and policy files for the tests."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import RNG_SCHEME, Job, Outcome, prepare, record
from thinkscale.strategies.base import majority_vote
from thinkscale.strategies.events import Generate, RequestInfo
from thinkscale.types import Candidate, Event, Ledger, Result, Role, Usage

# One chain: its answer ("ok" = the reference, "bad"/"bad2" = wrong ones, None = no answer) and its tokens.
Chain = tuple[str | None, int]


def text(answer: str | None, tokens: int) -> str:
    """``tokens`` words, the last ``\\boxed{answer}`` when there is one."""
    body = ["w"] * (tokens - (answer is not None))
    return " ".join(body + ([f"\\boxed{{{answer}}}"] if answer is not None else []))


def _answer(tag: str | None, ref: str) -> str | None:
    return {None: None, "ok": ref, "bad": str(int(ref) + 1), "bad2": str(int(ref) + 2)}[tag]


def hand_run(out: Path, chains: Sequence[Sequence[Chain]], *, dataset: str = "gsm8k-train", max_tokens: int = 10,
             greedy: Sequence[Chain] | None = None, prompt_tokens: int = 30) -> Path:
    """A run store on the first ``len(chains)`` problems of ``dataset`` (subset seed 0): self-consistency at
    ``len(chains[i])`` chains with exactly these chains on problem i (drawn with the seed the harness's rng gives,
    so replay serves them to auto), and greedy units when ``greedy`` is given."""
    n = len(chains[0])
    table = out.parent / f"{out.name}-table.json"
    table.write_text(json.dumps({"responses": {"unused": ["x"]}}))
    strategies = ["self-consistency"] + (["greedy"] if greedy is not None else [])
    cfg = SweepConfig(dataset=dataset, limit=len(chains), models=["m"], backend=f"scripted:{table}",
                      strategies=tuple(strategies), budgets=(n // 2, n), max_tokens=max_tokens)
    store, ds, plans, _ = prepare(cfg, out)
    try:
        store.bind_model("m", {"fingerprint": "hand-made"})
        by_name = {p.name: p for p in plans}
        for ep, mine in zip(ds.problems, chains, strict=False):
            ref = ep.reference
            rng = random.Random(RNG_SCHEME.format(seed=0, problem=ep.id, model="m"))
            seed = rng.randrange(2**31 - 1)
            cands = tuple(Candidate(text=text(_answer(a, ref), t), answer=_answer(a, ref), completion_tokens=t,
                                    finish_reason="stop") for a, t in mine)
            store.write_job(record(_outcome(by_name["self-consistency"], ep, cands, prompt_tokens,
                                            [Generate("generator", (RequestInfo(n, seed),), Usage())]), 1000))
        if greedy is not None:
            for ep, (a, t) in zip(ds.problems, greedy, strict=False):
                c = Candidate(text=text(_answer(a, ep.reference), t), answer=_answer(a, ep.reference),
                              completion_tokens=t, finish_reason="stop")
                store.write_job(record(_outcome(by_name["greedy"], ep, (c,), prompt_tokens,
                                                [Generate("generator", (RequestInfo(1, None, max_tokens),),
                                                          Usage())]), 1000))
    finally:
        store.close()
    return out


def _outcome(plan: Any, ep: Any, cands: tuple[Candidate, ...], prompt_tokens: int,
             trace: list[Event]) -> Outcome:
    ledger = Ledger()
    ledger.charge(Role.GENERATOR, Usage(prompt_tokens=prompt_tokens, cached_prompt_tokens=0,
                                        completion_tokens=sum(c.completion_tokens or 0 for c in cands), calls=1,
                                        seconds=0.0, flops=0.0))
    winner, _, _ = majority_vote([c.answer for c in cands], random.Random(0))
    chosen = next((i for i, c in enumerate(cands) if c.answer is not None and normalize_answer(c.answer) == winner),
                  None)
    result = Result(None if chosen is None else cands[chosen].answer, cands, ledger, "done", plan.name,
                    chosen_index=chosen, trace=tuple(trace))
    return Outcome(Job("m", plan, ep, 0, plan.job_budgets()[-1]), result, 0.0)


def policy_dict(*, choices: dict[str, dict[str, Any]], edges: Sequence[float] = (0.375,),
                bins: Sequence[str] = ("easy", "hard"), wave_size: int = 4, max_tokens: int = 10,
                temperature: float = 0.7, top_p: float = 0.95, caps: Sequence[int] = (1_000_000,),
                greedy_first: bool = False, greedy_breaks_ties: bool = False) -> dict[str, Any]:
    """A valid policy document: ``choices`` maps each bin to its action (the same at every budget in ``caps``)."""
    return {
        "format": "thinkscale-policy/1",
        "sampling": {"wave_size": wave_size, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                     "greedy_first": greedy_first, "greedy_breaks_ties": greedy_breaks_ties},
        "difficulty": {"score": "agreement", "edges": list(edges), "bins": list(bins)},
        "budgets": [{"max_completion_tokens": cap, "choices": {
            b: {"action": copy.deepcopy(a), "accuracy": 0.5, "mean_tokens": 10.0, "n_problems": 3, "why": f"test: {b}"}
            for b, a in choices.items()}} for cap in caps],
        "fitted_on": {"runs": ["tests"], "dataset": "hand-made", "problems": 3, "instances": 3, "model": "fake",
                      "sampler": "self-consistency", "samples_per_problem": 16},
        "fitted_at": "2025-01-01T00:00:00Z",
    }


def write_policy(path: Path, **kw: Any) -> str:
    path.write_text(json.dumps(policy_dict(**kw)))
    return str(path)
