"""The run context: one place that decides whether a call fits the budget, makes it, charges it and records it.

A strategy is an algorithm over a ``Run``::

    def run(self, ctx: Run) -> Result:
        n = ctx.affordable(self.n_samples, self.max_tokens)          # how many chains fit (worst case)
        (completion,) = ctx.generate([GenRequest(..., n=n, seed=ctx.seed())])
        ...
        return ctx.result(candidates, chosen_index=i, votes=counts, votes_kind="count")

``Run.generate`` / ``score`` / ``verify`` / ``tool`` each check the call's worst case against the budget before
making it (``BudgetExceeded`` when it does not fit: size calls with ``affordable`` / ``fits`` first), charge the
ledger after it, and record a typed event (``thinkscale.strategies.events``). The worst case of a generate call is
``sum(n x max_tokens)`` completion tokens and one call per request; of a verifier call, what the verifier declares
(``Verifier.max_calls``); of a sandbox batch, one call per run. The wall-clock limit is checked before each call (a
call that starts in time may end after it).

Composite strategies (``auto``) run a sub-strategy on ``ctx.child()``: the child shares the ledger (so the budget
is one budget) and keeps its own events, which the parent records in a ``Delegate`` event.

``execute(strategy, problem, backend, budget, rng=...)`` builds a Run and runs a strategy on it: what the CLI, the
server, the eval harness and tests call.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from thinkscale.answers.extract import extract_answer
from thinkscale.backends.base import Backend
from thinkscale.strategies.events import Generate, RequestInfo, ScoreCall, Stop, Tool, Verify, trace_json
from thinkscale.tools.sandbox import Limits, Sandbox, SandboxResult
from thinkscale.types import (
    Budget,
    Candidate,
    Completion,
    Event,
    GenRequest,
    Ledger,
    Message,
    Problem,
    Result,
    Role,
    Scored,
    ScoreRequest,
    StopReason,
    Usage,
    VotesKind,
)
from thinkscale.verifiers.base import Verifier, VerifierError, check_scores, require_solve_safe, resolve_verifier

if TYPE_CHECKING:
    from thinkscale.strategies.base import Strategy


def strategy_name(strategy: object) -> str:
    """The registered name of a strategy (its class name if it was never registered)."""
    return str(getattr(strategy, "name", type(strategy).__name__))


class BudgetExceeded(RuntimeError):
    """A call was asked for whose worst case does not fit what is left of the budget (a strategy sizes its calls
    with ``Run.affordable`` / ``Run.fits`` first; this is the guard that keeps a mistake from overspending)."""


class Sandboxes(Protocol):
    """Where a run's model-written code runs: a sandbox for the code limits a strategy asks for."""

    def sandbox(self, limits: Limits, workers: int) -> contextlib.AbstractContextManager[Sandbox]: ...


BackendFor = Callable[[str], Backend]
"""Another model of a run by name (a heterogeneous ensemble's proposers): the caller loads it (CLI: the catalogue;
eval: the sweep's backend factory; tests: a dict of fakes)."""


class OwnSandboxes:
    """A sandbox made for each run that needs one, closed when the run ends (the default)."""

    @contextlib.contextmanager
    def sandbox(self, limits: Limits, workers: int) -> Iterator[Sandbox]:
        sb = Sandbox(limits, pool_size=workers)
        try:
            yield sb
        finally:
            sb.close()


@dataclass(frozen=True)
class GivenSandbox:
    """One sandbox the caller made and owns, used for every run whatever the strategy's code knobs (its limits
    apply)."""

    box: Sandbox

    @contextlib.contextmanager
    def sandbox(self, limits: Limits, workers: int) -> Iterator[Sandbox]:
        yield self.box


@dataclass(eq=False)
class Run:
    """One strategy run: the problem, the backend, the budget (a limit on the whole ledger), the rng (every random
    choice and seed), the ledger, where code runs, and the events recorded so far."""

    problem: Problem
    backend: Backend
    budget: Budget = field(default_factory=Budget)
    rng: random.Random = field(default_factory=random.Random)
    ledger: Ledger = field(default_factory=Ledger)
    sandboxes: Sandboxes = field(default_factory=OwnSandboxes)
    strategy: str = ""
    events: list[Event] = field(default_factory=list)
    backend_for: BackendFor | None = field(default=None, repr=False)
    _verifiers: dict[tuple[str, str | None], Verifier] = field(default_factory=dict, repr=False)
    _open: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    _box: Sandbox | None = field(default=None, repr=False)
    _first_entry: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        if self._first_entry < 0:
            self._first_entry = len(self.ledger.entries)  # a child context's own charges start here

    # ------------------------------------------------------------------ budget

    def spent(self, role: Role | None = None) -> Usage:
        """What this context charged (of ``role``), not counting what the ledger held when it was made (a child
        context shares its parent's ledger)."""
        return Usage.total(u for r, u in self.ledger.entries[self._first_entry:] if role is None or r == role)

    def remaining_tokens(self) -> int | None:
        """Completion tokens left (None: no token limit)."""
        return self.budget.remaining_completion_tokens(self.ledger)

    def remaining_calls(self) -> int | None:
        """Backend calls (of every role) left; None = no limit."""
        if self.budget.max_calls is None:
            return None
        return max(0, self.budget.max_calls - self.ledger.total().calls)

    def time_left(self) -> bool:
        return self.budget.max_seconds is None or self.ledger.elapsed_seconds() < self.budget.max_seconds

    def fits(self, *, completion_tokens: int = 0, calls: int = 1) -> bool:
        """Whether a step that may generate up to ``completion_tokens`` (worst case) and charge ``calls`` calls fits
        in what is left, with time left to start it."""
        rem = self.remaining_tokens()
        if rem is not None and completion_tokens > rem:
            return False
        left = self.remaining_calls()
        if left is not None and calls > left:
            return False
        return self.time_left()

    def affordable(self, wanted: int, max_tokens: int, *, calls: Callable[[int], int] = lambda n: 1,
                   reserve_tokens: int = 0) -> int:
        """The most samples, up to ``wanted``, of ``max_tokens`` each whose step fits: ``calls(n)`` is what the step
        charges in calls for n samples (default one call, e.g. ``lambda n: 1 + verifier_calls(n)`` to keep
        scoring them in reserve), ``reserve_tokens`` completion tokens a later call of the step may need (kept
        free). 0 when nothing fits."""
        n = wanted
        rem = self.remaining_tokens()
        if rem is not None:
            n = min(n, max(0, rem - reserve_tokens) // max_tokens)
        while n > 0 and not self.fits(completion_tokens=n * max_tokens + reserve_tokens, calls=calls(n)):
            n -= 1
        return n

    def plan(self, wanted: Sequence[tuple[int, int]], max_tokens: int, *,
             calls: Callable[[int, int], int]) -> list[tuple[int, int]]:
        """How many of the ``wanted`` (key, samples) requests of one batched step fit, in order: each sample may
        spend ``max_tokens``, ``calls(key, n)`` is what n samples of a request charge in calls (the request itself
        and what scoring them may take). The first request that does not fit in full is cut down, the rest dropped;
        nothing when the time is up."""
        if not self.time_left():
            return []
        tokens, left = self.remaining_tokens(), self.remaining_calls()
        out = []
        for key, n in wanted:
            take = n if tokens is None else min(n, max(0, tokens) // max_tokens)
            while left is not None and take > 0 and calls(key, take) > left:
                take -= 1
            if take <= 0:
                break
            out.append((key, take))
            if take < n:
                break
            if tokens is not None:
                tokens -= take * max_tokens
            if left is not None:
                left -= calls(key, take)
        return out

    def scorable(self, verifier: Verifier, candidates: Sequence[Candidate]) -> int:
        """The longest prefix of ``candidates`` that ``verifier`` can score within what is left (0: none)."""
        k = len(candidates)
        while k > 0 and not self.fits(calls=verifier.max_calls(candidates[:k])):
            k -= 1
        return k

    def _require(self, what: str, *, completion_tokens: int, calls: int) -> None:
        """The guard of every call: its worst case in tokens and calls must fit. The clock is not checked here: a
        strategy checks it when it plans a step (``fits``, ``affordable``, ``plan``), and the calls of a step that
        started in time (generate, then score) may end after it."""
        rem, left = self.remaining_tokens(), self.remaining_calls()
        if (rem is not None and completion_tokens > rem) or (left is not None and calls > left):
            spent = self.ledger.total()
            raise BudgetExceeded(f"{self.strategy or 'strategy'}: {what} may take {completion_tokens} completion "
                                 f"tokens and {calls} calls; spent {spent.completion_tokens} tokens, {spent.calls} "
                                 f"calls, {self.ledger.elapsed_seconds():.1f} s of {self.budget}")

    # ------------------------------------------------------------------ calls

    def seed(self) -> int:
        """A GenRequest seed drawn from the run's rng (so one rng seed replays the whole run)."""
        return self.rng.randrange(2**31 - 1)

    def model(self, name: str | None) -> Backend:
        """The backend of model ``name`` (None: the run's own)."""
        if name is None:
            return self.backend
        if self.backend_for is None:
            raise ValueError(f"model {name!r}: this run has only its own model (give the run other models to use "
                             "several, e.g. execute(..., backend_for=...))")
        return self.backend_for(name)

    def generate(self, requests: Sequence[GenRequest], role: Role = Role.GENERATOR, *, tag: str = "",
                 refs: Sequence[int] = (), model: str | None = None) -> list[Completion]:
        """One batched generate call (on model ``model``, default the run's own), checked, charged to ``role``
        (and to that model) and recorded."""
        if not requests:
            return []
        self._require(f"generating for {len(requests)} request(s)",
                      completion_tokens=sum(r.n * r.max_tokens for r in requests), calls=len(requests))
        completions = self.model(model).generate(list(requests))
        for c in completions:
            self.ledger.charge(role, c.usage, model=model)
        self.events.append(Generate(
            str(role), tuple(RequestInfo(r.n, r.seed, r.max_tokens, r.first_sample, r.temperature, r.logprobs,
                                         r.continue_final) for r in requests),
            Usage.total(c.usage for c in completions), tag, tuple(refs), model))
        return completions

    def score(self, requests: Sequence[ScoreRequest], role: Role = Role.VERIFIER, *, tag: str = "") -> list[Scored]:
        """One batched ``backend.score`` call (log-probabilities of continuations), checked, charged, recorded."""
        if not requests:
            return []
        self._require(f"scoring {len(requests)} continuation(s)", completion_tokens=0, calls=len(requests))
        scored = self.backend.score(list(requests))
        for s in scored:
            self.ledger.charge(role, s.usage)
        self.events.append(ScoreCall(str(role), len(requests), Usage.total(s.usage for s in scored), tag))
        return scored

    def verifier(self, spec: str | Verifier, path: str | None = None) -> Verifier:
        """The verifier a strategy knob names, resolved once per run on this run's backend (an object is used as
        it is, after refusing one that reads the reference answer)."""
        if not isinstance(spec, str):
            return require_solve_safe(spec)
        key = (spec, path)
        if key not in self._verifiers:
            self._verifiers[key] = resolve_verifier(spec, path, self.backend)
        return self._verifiers[key]

    def verify(self, verifier: Verifier, candidates: Sequence[Candidate], *, refs: Sequence[int] | None = None,
               tag: str = "") -> list[tuple[float, ...]]:
        """Score ``candidates`` with ``verifier``: its declared worst case (``max_calls``) is checked first, the calls
        it charges go to this run's ledger (and may not exceed what it declared), the scores are checked."""
        if not candidates:
            return []
        bound = verifier.max_calls(candidates)
        self._require(f"verifier {verifier_name(verifier)!r} on {len(candidates)} candidate(s)", completion_tokens=0,
                      calls=bound)
        before = self.ledger.total()
        rows = verifier.score(self.problem, candidates, ledger=self.ledger)
        check_scores(rows, candidates, type(verifier).__name__)
        spent = self.ledger.total()
        calls = spent.calls - before.calls
        if calls > bound:
            raise VerifierError(f"{type(verifier).__name__} charged {calls} calls for {len(candidates)} candidates, "
                                f"more than the {bound} its max_calls declared: the budget cannot be kept with it")
        usage = _diff(spent, before)
        rows = [tuple(float(x) for x in r) for r in rows]
        self.events.append(Verify(verifier_name(verifier),
                                  tuple(refs if refs is not None else range(len(candidates))), tuple(rows), calls,
                                  bound, usage, tag))
        return rows

    def tool(self, jobs: Sequence[tuple[str, Sequence[str]]], limits: Limits, *, workers: int,
             refs: Sequence[int | None] | None = None, round: int | None = None) -> list[SandboxResult]:
        """Run ``(code, setup_cells)`` jobs of model-written code in a sandbox with ``limits`` (``workers`` at
        once), each one call charged to ``Role.TOOL`` with its seconds, each recorded as a ``Tool`` event."""
        if not jobs:
            return []
        self._require(f"{len(jobs)} code run(s)", completion_tokens=0, calls=len(jobs))
        if self._box is None:
            self._box = self._open.enter_context(self.sandboxes.sandbox(limits, workers))
        sb = self._box
        parallel = max(1, sb.pool_size)
        if parallel <= 1 or len(jobs) == 1:
            results = [sb.run(code, setup=tuple(setup)) for code, setup in jobs]
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(parallel, len(jobs))) as ex:
                results = list(ex.map(lambda j: sb.run(j[0], setup=tuple(j[1])), jobs))
        refs = list(refs) if refs is not None else [None] * len(jobs)
        for (code, _), r, ref in zip(jobs, results, refs, strict=True):
            self.ledger.charge(Role.TOOL, Usage(prompt_tokens=0, cached_prompt_tokens=0, completion_tokens=0,
                                                calls=1, seconds=r.call_seconds, flops=0.0))
            self.events.append(Tool(ref, round, r.exit_code, r.timed_out, r.killed_reason, r.exception,
                                    round_to(r.wall_seconds), round_to(r.call_seconds), r.stdout_bytes,
                                    r.stderr_bytes, code, cut(r.stdout, TRACE_OUTPUT_CHARS)))
        return results

    def sandbox_limits(self) -> Limits | None:
        """The limits of the sandbox this run's code runs in (None before the first run)."""
        return None if self._box is None else self._box.limits

    def note(self, *events: Event) -> None:
        """Record strategy-specific events."""
        self.events.extend(events)

    def close(self) -> None:
        """Release what the run opened (its sandbox)."""
        self._open.close()
        self._box = None

    # ------------------------------------------------------------------ composition

    def tighten(self, *, max_completion_tokens: int | None) -> None:
        """Lower this run's token limit to ``max_completion_tokens`` (a composite strategy's own cap); None or a
        higher value leaves it as it is."""
        caps = [c for c in (self.budget.max_completion_tokens, max_completion_tokens) if c is not None]
        self.budget = Budget(max_completion_tokens=min(caps) if caps else None, max_calls=self.budget.max_calls,
                             max_seconds=self.budget.max_seconds)

    def child(self, *, rng: random.Random | None = None, strategy: str = "") -> Run:
        """A context for a sub-strategy: the same problem, backend, budget, sandboxes and ledger (so every call
        counts against one budget), its own events and rng (default: this run's); verifiers resolved once for both."""
        sub = Run(self.problem, self.backend, self.budget, rng or self.rng, self.ledger, self.sandboxes,
                  strategy=strategy, backend_for=self.backend_for, _verifiers=self._verifiers)
        self._open.callback(sub.close)
        return sub

    # ------------------------------------------------------------------ result

    def stop(self, reason: str, detail: str | None = None) -> None:
        self.events.append(Stop(reason, detail))

    def result(self, candidates: Sequence[Candidate], *, chosen_index: int | None = None,
               answer: str | None = None, votes: dict[str, float] | None = None,
               votes_kind: VotesKind | None = None, stop_reason: StopReason = "done",
               stop_detail: str | None = None) -> Result:
        """The run's Result: the answer is the chosen candidate's unless given, the seeds those of every generate
        request recorded, the trace the events."""
        if answer is None and chosen_index is not None:
            answer = candidates[chosen_index].answer
        seeds = tuple(r.seed for e in self.events if isinstance(e, Generate) for r in e.requests)
        return Result(answer=answer, candidates=tuple(candidates), ledger=self.ledger, stop_reason=stop_reason,
                      strategy=self.strategy, chosen_index=chosen_index, votes=votes, votes_kind=votes_kind,
                      seeds=seeds, stop_detail=stop_detail, trace=tuple(self.events))

    def trace_json(self) -> list[dict[str, object]]:
        return trace_json(self.events)


def verifier_name(verifier: Verifier) -> str:
    """A verifier's registered name, or its class name for an object that has none."""
    return str(getattr(verifier, "name", type(verifier).__name__))


TRACE_OUTPUT_CHARS = 2000  # of a code run's stdout kept in its trace event (the candidate's text has what was shown)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def round_to(x: float, digits: int = 4) -> float:
    return round(x, digits)


def _diff(after: Usage, before: Usage) -> Usage:
    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return Usage(prompt_tokens=d(after.prompt_tokens, before.prompt_tokens),  # type: ignore[arg-type]
                 cached_prompt_tokens=d(after.cached_prompt_tokens, before.cached_prompt_tokens),  # type: ignore[arg-type]
                 completion_tokens=d(after.completion_tokens, before.completion_tokens),  # type: ignore[arg-type]
                 calls=after.calls - before.calls, seconds=d(after.seconds, before.seconds),
                 flops=d(after.flops, before.flops))


def opened_reply(ctx: Run, prefill: str) -> tuple[tuple[Message, ...], bool]:
    """The problem's messages and ``continue_final`` for a request whose reply opens with ``prefill``: the text a
    model was trained to start its turn with (``<think>\\n`` for the GRPO-trained thinking 0.5B, which opened its
    every training reply with it), continued by the backend after the chat template's generation prompt. No prefill:
    the messages as they are. A backend that cannot continue an assistant turn is refused before anything is spent.
    The candidates' texts are what the model wrote after the prefill."""
    if not prefill:
        return ctx.problem.messages, False
    require_continue_final(ctx, "a prefilled reply")
    return (*ctx.problem.messages, Message("assistant", prefill)), True


def require_continue_final(ctx: Run, what: str) -> None:
    """Refuse, before anything is spent, a run that must continue the model's own turn on a backend that cannot."""
    if not ctx.backend.capabilities.continue_final:
        raise NotImplementedError(f"{what} continues the model's own turn (continue_final), which "
                                  f"{type(ctx.backend).__name__} cannot do; use the embedded llama.cpp backend")


def candidates_from(completion: Completion) -> list[Candidate]:
    """One Candidate per sample, with its extracted answer and (when requested) the generator's logprobs."""
    return [Candidate(text=s.text, answer=extract_answer(s.text), completion_tokens=s.completion_tokens,
                      finish_reason=s.finish_reason, logprobs=s.logprobs) for s in completion.samples]


def execute(strategy: Strategy, problem: Problem, backend: Backend, budget: Budget | None = None, *,
            rng: random.Random, sandboxes: Sandboxes | None = None, sandbox: Sandbox | None = None,
            backend_for: BackendFor | None = None,
            verifiers: Mapping[tuple[str, str | None], Verifier] | None = None) -> Result:
    """Run ``strategy`` on ``problem`` with a fresh ledger: a Run made from the arguments. ``sandbox``: one sandbox
    the caller owns for every code run (or ``sandboxes``, a provider); default: a sandbox per run that needs one.
    ``backend_for``: the run's other models by name (for strategies that use several). ``verifiers``: verifiers
    already built for some (spec, verifier_path) knobs, used instead of building them on ``backend`` (a replay of
    stored chains scores them with the model's verifier through a score cache)."""
    if sandbox is not None and sandboxes is not None:
        raise ValueError("give sandbox= or sandboxes=, not both")
    provider: Sandboxes = GivenSandbox(sandbox) if sandbox is not None else (sandboxes or OwnSandboxes())
    ctx = Run(problem, backend, budget or Budget(), rng, Ledger(), provider, strategy=strategy_name(strategy),
              backend_for=backend_for, _verifiers={k: require_solve_safe(v) for k, v in (verifiers or {}).items()})
    try:
        return strategy.run(ctx)
    finally:
        ctx.close()
