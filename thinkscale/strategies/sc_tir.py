"""Self-consistency over tool-integrated reasoning (SC-TIR): N paths that reason, write Python, see its output and go
on, then a majority vote over their final answers.

Gou et al., "ToRA: A Tool-Integrated Reasoning Agent for Mathematical Problem Solving", https://arxiv.org/abs/2309.17452;
NuminaMath's SC-TIR (N=48 paths, T=0.8, up to 4 code rounds), the winning recipe of the first AIMO progress prize,
https://github.com/project-numina/aimo-progress-prize
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from thinkscale.answers.extract import extract_answer
from thinkscale.strategies._tir import (
    CODE_STOP,
    DEFAULT_SANDBOX,
    TirFormat,
    check_code_knobs,
    code_to_run,
    format_output,
    sandbox_limits,
    tir_messages,
)
from thinkscale.strategies.base import check_int, operator_knob, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, Event, FinishReason, GenRequest, Message, Result
from thinkscale.verifiers.aggregate import Selection


@event("start")
@dataclass(frozen=True)
class TirStart(Event):
    """An SC-TIR run's paths and the tool format of its prompt."""

    paths: int
    prompt_format: str


@event("paths")
@dataclass(frozen=True)
class Paths(Event):
    """How each SC-TIR path ended (answered, length, rounds, budget) and how many code blocks it ran."""

    ends: tuple[str, ...]
    code_runs: tuple[int, ...]


@dataclass
class _Path:
    text: str = ""
    segments: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    tokens: int = 0
    finish: FinishReason | None = None
    done: bool = False
    end: str = ""  # why the path ended: answered, length, rounds, budget


@register("sc-tir", "N paths of reasoning with Python code run in a sandbox (outputs fed back), majority vote",
          "https://arxiv.org/abs/2309.17452")
@dataclass(frozen=True)
class ScTir:
    """Args:
        n_samples: paths (NuminaMath used 48; sized for a CPU here). The budget knob.
        max_rounds: code blocks run per path; a path that writes another block after that ends there.
        temperature, top_p: sampling knobs (NuminaMath: T=0.8).
        max_tokens: completion tokens per path, over all its rounds.
        prompt: the model family's tool format (``coder``, ``numina``, ``qwen-math``; see ``strategies._tir``).
        stateful: each block runs after the path's earlier blocks (silently), so their variables exist.
        max_output_chars: characters of a run's output shown to the model (the rest is cut with a marker).
        code_timeout_seconds, code_memory_mb, sandbox_workers: the sandbox the run asks its context for (per-block
            wall and CPU limit, address space, warm workers = blocks run at once); a caller that gives the run a
            sandbox of its own (``execute(..., sandbox=)``) sets its limits there instead.

    Round 0 samples all paths from the shared prompt in one request; each later round continues every path that
    stopped at a code block (``continue_final``, so the backend reuses the cached prefix; a backend without that
    capability refuses the request) after appending the block's output as an ```output block. Budget: each path may
    use ``max_tokens``, so only the paths that fit in the worst case are started (``stop_reason="budget"`` when
    fewer than asked); every backend request and every sandbox run is one call against ``max_calls`` (sandbox runs
    are charged to ``Role.TOOL`` with their seconds); ``max_seconds`` is checked before every round. Answers:
    ``extract_answer`` on each path's whole turn, code outputs included; majority vote, ties broken by ``rng``.

    >>> execute(ScTir(n_samples=4), problem, backend, Budget(max_completion_tokens=4096), rng=rng)  # doctest: +SKIP
    """

    # Path i is the same whether n_samples is k > i or N > k: round 0 seeds it as sample i of one seeded draw and
    # every later round from that draw's seed, its index and the round (``path_seed``), so the first k paths of an
    # N-path run are exactly a k-path run and a sweep scores every k from one N-path job.
    prefix_consistent: ClassVar[bool] = True
    prefix_selection: ClassVar[Selection] = Selection.MAJORITY
    budget_knob: ClassVar[str] = "n_samples"

    n_samples: int = 4
    max_rounds: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 1024
    prompt: TirFormat = TirFormat.CODER
    stateful: bool = True
    max_output_chars: int = 1000
    code_timeout_seconds: float = operator_knob(DEFAULT_SANDBOX[0])
    code_memory_mb: int = operator_knob(DEFAULT_SANDBOX[1])
    sandbox_workers: int = operator_knob(DEFAULT_SANDBOX[2])

    def __post_init__(self) -> None:
        check_code_knobs(self)
        check_int("max_rounds", self.max_rounds, low=0)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"sc-tir samples paths and needs a finite temperature > 0, got {self.temperature!r}")
        check_int("max_output_chars", self.max_output_chars)
        object.__setattr__(self, "prompt", TirFormat(self.prompt))

    def run(self, ctx: Run) -> Result:
        n = ctx.affordable(self.n_samples, self.max_tokens)
        if n == 0:
            ctx.stop("budget", "budget allows no path")
            return ctx.result((), stop_reason="budget")
        prompt = tir_messages(ctx.problem, self.prompt)
        ctx.note(TirStart(n, str(self.prompt)))
        paths = [_Path() for _ in range(n)]
        budget_hit = n < self.n_samples
        seed = ctx.seed()
        for round_index in range(self.max_rounds + 1):
            active = [i for i, p in enumerate(paths) if not p.done]
            if not active:
                break
            worst = sum(self.max_tokens - paths[i].tokens for i in active)
            if not ctx.fits(completion_tokens=worst, calls=1 if round_index == 0 else len(active)):
                budget_hit = True
                self._end(paths, active, "budget")
                ctx.stop("budget", f"round {round_index} does not fit")
                break
            self._generate(ctx, prompt, paths, active, round_index, seed)
            jobs = self._code_jobs(paths, active, round_index)
            if not jobs:
                break
            if not ctx.fits(calls=len(jobs)):
                budget_hit = True
                self._end(paths, [i for i, _ in jobs], "budget")
                ctx.stop("budget", f"the code runs of round {round_index} do not fit")
                break
            results = ctx.tool([(code, paths[i].cells if self.stateful else ()) for i, code in jobs],
                               sandbox_limits(self), workers=self.sandbox_workers, refs=[i for i, _ in jobs],
                               round=round_index)
            timeout = (ctx.sandbox_limits() or sandbox_limits(self)).timeout_seconds
            for (i, code), r in zip(jobs, results, strict=True):
                shown = format_output(r, max_chars=self.max_output_chars, timeout_seconds=timeout)
                paths[i].text += f"```output\n{shown}\n```\n"
                paths[i].cells.append(code)
        cands = [Candidate(text=p.text, answer=extract_answer(p.text), steps=tuple(p.segments),
                           completion_tokens=p.tokens, finish_reason=p.finish) for p in paths]
        ctx.note(Paths(tuple(p.end for p in paths), tuple(len(p.cells) for p in paths)))
        return vote_result(ctx, cands, budget_hit=budget_hit)

    def _code_jobs(self, paths: list[_Path], active: list[int], round_index: int) -> list[tuple[int, str]]:
        """The code blocks this round's generations stopped at, per path; paths that answered or ran out end."""
        jobs: list[tuple[int, str]] = []
        for i in active:
            p = paths[i]
            found = code_to_run(p.segments[-1], p.text, p.finish or "stop")
            if found is None:
                p.done, p.end = True, "length" if p.finish == "length" else "answered"
            elif round_index == self.max_rounds:
                p.done, p.end = True, "rounds"
            elif p.tokens >= self.max_tokens:  # no token left to read the output with
                p.done, p.end = True, "length"
            else:
                p.text = found[1]
                jobs.append((i, found[0]))
        return jobs

    def _generate(self, ctx: Run, prompt: tuple[Message, ...], paths: list[_Path], active: list[int],
                  round_index: int, seed: int) -> None:
        """One round: round 0 samples every path from the shared prompt in one request; later rounds continue each
        active path's assistant turn."""
        if round_index == 0:
            req = GenRequest(messages=prompt, n=len(active), temperature=self.temperature, top_p=self.top_p,
                             max_tokens=self.max_tokens, stop=CODE_STOP, seed=seed)
            samples = list(ctx.generate([req], tag="round 0")[0].samples)
        else:
            reqs = [GenRequest(messages=prompt + (Message("assistant", paths[i].text),), continue_final=True, n=1,
                               temperature=self.temperature, top_p=self.top_p,
                               max_tokens=self.max_tokens - paths[i].tokens, stop=CODE_STOP,
                               seed=path_seed(seed, i, round_index))
                    for i in active]
            samples = [c.samples[0] for c in ctx.generate(reqs, tag=f"round {round_index}", refs=active)]
        for i, s in zip(active, samples, strict=True):
            p = paths[i]
            if s.completion_tokens is None:
                raise ValueError("sc-tir needs a backend that reports completion tokens per sample (it caps each "
                                 "path at max_tokens over its rounds)")
            p.text += s.text
            p.segments.append(s.text)
            p.tokens += s.completion_tokens
            p.finish = s.finish_reason

    @staticmethod
    def _end(paths: list[_Path], which: list[int], why: str) -> None:
        for i in which:
            paths[i].done, paths[i].end = True, why


def path_seed(seed: int, path: int, round_index: int) -> int:
    """The seed of path ``path``'s request in round ``round_index`` >= 1 of a run whose round 0 drew with ``seed``:
    a function of those three only (not of how many paths run), stable across runs."""
    return (seed * 1_000_003 + path * 7_919 + round_index * 104_729 + 17) % (2**31 - 1)
