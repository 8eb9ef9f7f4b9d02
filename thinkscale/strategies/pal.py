"""Program-aided reasoning (PAL / Program of Thoughts): the model writes one program, the sandbox runs it, and the
last line it prints is the answer. With ``n_samples > 1`` the printed answers are majority-voted.

Gao et al., "PAL: Program-aided Language Models", https://arxiv.org/abs/2211.10435; Chen et al., "Program of
Thoughts Prompting", https://arxiv.org/abs/2211.12588
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies._tir import (
    CODE_STOP,
    DEFAULT_SANDBOX,
    PAL_SYSTEM,
    check_code_knobs,
    code_to_run,
    format_output,
    sandbox_limits,
    with_system,
)
from thinkscale.strategies.base import operator_knob, register
from thinkscale.strategies.run import Run
from thinkscale.strategies.voting import vote_result
from thinkscale.tools.sandbox import SandboxResult
from thinkscale.types import Candidate, GenRequest, Result


def printed_answer(r: SandboxResult) -> str | None:
    """The last non-empty line a successful, complete run printed; None when it failed, printed nothing or its
    output was cut (the last line would then be a truncation marker, not the program's)."""
    if not r.ok or r.truncated:
        return None
    return next((ln.strip() for ln in reversed(r.stdout.splitlines()) if ln.strip()), None)


@register("pal", "the model writes one program; its printed value is the answer (majority vote over N programs)",
          "https://arxiv.org/abs/2211.10435")
@dataclass(frozen=True)
class Pal:
    """Args:
        n_samples: programs to sample (1 = one greedy program at ``temperature=0``). The budget knob.
        temperature, top_p: sampling knobs; ``n_samples > 1`` needs ``temperature > 0``.
        max_tokens: completion tokens per program.
        code_timeout_seconds, code_memory_mb, sandbox_workers: the sandbox the run asks its context for (a caller
            that gives the run a sandbox of its own, ``execute(..., sandbox=)``, sets its limits there instead).

    The prompt asks for one ```python block that prints only the answer; generation stops at the block's end.
    The answer is the last non-empty line of the program's stdout; a program that fails, prints nothing, or whose
    output was cut gives no answer. Budget: only the programs that fit in the worst case are sampled; each backend
    request and each sandbox run is one call (runs are charged to ``Role.TOOL``).

    >>> execute(Pal(), problem, backend, Budget(), rng=random.Random(0)).answer  # doctest: +SKIP
    """

    prefix_consistent: ClassVar[bool] = False
    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 512
    code_timeout_seconds: float = operator_knob(DEFAULT_SANDBOX[0])
    code_memory_mb: int = operator_knob(DEFAULT_SANDBOX[1])
    sandbox_workers: int = operator_knob(DEFAULT_SANDBOX[2])

    def __post_init__(self) -> None:
        check_code_knobs(self)
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.n_samples > 1 and self.temperature == 0:
            raise ValueError("pal with n_samples > 1 needs temperature > 0 (at 0 every program is the same)")

    def run(self, ctx: Run) -> Result:
        n = ctx.affordable(self.n_samples, self.max_tokens)
        if n == 0:
            ctx.stop("budget", "budget allows no program")
            return ctx.result((), stop_reason="budget")
        req = GenRequest(messages=with_system(ctx.problem.messages, PAL_SYSTEM), n=n, temperature=self.temperature,
                         top_p=self.top_p, max_tokens=self.max_tokens, stop=CODE_STOP, seed=ctx.seed())
        samples = ctx.generate([req])[0].samples
        # A program cut by max_tokens is incomplete: it is not run.
        found = [code_to_run(s.text, s.text, s.finish_reason) for s in samples]
        jobs = [(i, f[0]) for i, f in enumerate(found) if f is not None]
        budget_hit = n < self.n_samples
        results: dict[int, SandboxResult] = {}
        if jobs and not ctx.fits(calls=len(jobs)):
            budget_hit = True
            ctx.stop("budget", "the code runs do not fit")
        elif jobs:
            ran = ctx.tool([(code, ()) for _, code in jobs], sandbox_limits(self), workers=self.sandbox_workers,
                           refs=[i for i, _ in jobs], round=0)
            results = {i: r for (i, _), r in zip(jobs, ran, strict=True)}
        timeout = (ctx.sandbox_limits() or sandbox_limits(self)).timeout_seconds
        cands = []
        for i, s in enumerate(samples):
            got = results.get(i)
            text = s.text
            if got is not None:
                text = (found[i] or ("", text))[1] + "```output\n" + format_output(
                    got, max_chars=2000, timeout_seconds=timeout) + "\n```\n"
            cands.append(Candidate(text=text, answer=printed_answer(got) if got is not None else None,
                                   steps=(s.text,), completion_tokens=s.completion_tokens,
                                   finish_reason=s.finish_reason))
        return vote_result(ctx, cands, budget_hit=budget_hit)
