"""ServeEngine: one loaded backend, the strategy catalogue, and how a request becomes a Result.

Everything per request is built per request: the strategy instance (a frozen dataclass of the request's knobs), the
Budget, the rng, and a ``_RequestBackend`` proxy that carries the request's cancel event into every backend call.
Nothing shared is mutated, so concurrent requests cannot see each other's settings.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from thinkscale.backends.base import Backend, Cancelled
from thinkscale.server.catalogue import (
    EFFORT_ALIASES,
    EFFORTS,
    MAX_COUNT,
    StrategyCatalogue,
    StrategyChoice,
    counted_knobs,
)
from thinkscale.server.errors import ApiError
from thinkscale.server.schemas import ThinkscaleOptions
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Candidate, Completion, GenRequest, Problem, Result, Role, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts. Token counts are completion tokens; a request's budget never exceeds
    ``max_tokens_per_request`` per choice."""

    max_concurrency: int = 8  # requests running at once (their backend calls batch together)
    max_queue: int = 64  # requests waiting for a slot; beyond that, 429 with Retry-After
    max_tokens_per_request: int = 16384  # completion-token budget of one choice, hidden reasoning included
    default_max_tokens: int = 512  # per chain of thought, when the request sets no max_tokens
    max_n: int = 8  # choices per request (n, or prompts x n for /v1/completions)
    max_count: int = MAX_COUNT  # N of a "sc-N" strategy id
    max_body_bytes: int = 1 << 20
    max_message_chars: int = 100_000  # one message's content
    max_prompt_chars: int = 200_000  # all messages of one request together
    max_messages: int = 512
    request_timeout_s: float = 600.0  # then the request's work is cancelled and it gets a 504

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "max_tokens_per_request", "default_max_tokens", "max_n", "max_count",
                     "max_body_bytes", "max_message_chars", "max_prompt_chars", "max_messages"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ServerLimits.{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ValueError(f"ServerLimits.max_queue must be an integer >= 0, got {self.max_queue!r}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"ServerLimits.request_timeout_s must be > 0, got {self.request_timeout_s!r}")


@dataclass(frozen=True)
class Plan:
    """How one request thinks: the strategy instance and its Budget, resolved from the request."""

    strategy: Any
    choice: StrategyChoice
    budget: Budget
    chain_max_tokens: int
    effort: str | None  # the reasoning_effort level that chose the strategy, if it did

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.choice.name, "strategy_id": self.choice.id, "reasoning_effort": self.effort,
                "max_tokens_per_chain": self.chain_max_tokens,
                "budget": {"max_completion_tokens": self.budget.max_completion_tokens,
                           "max_calls": self.budget.max_calls, "max_seconds": self.budget.max_seconds}}


@dataclass
class Spent:
    """What a request's backend calls cost, including calls whose result a cancelled strategy never charged."""

    usage: Usage = field(default_factory=Usage.zero)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, usages: Sequence[Usage]) -> None:
        with self.lock:
            for u in usages:
                self.usage = self.usage + u


class _RequestBackend:
    """The backend as one request's strategy sees it: every call carries the request's cancel event.

    A backend whose ``generate`` takes ``cancel=`` (the embedded llama.cpp engine) drops the call's remaining work
    at its next step. One that does not is checked before and after each call, so a cancelled request starts no new
    work and its strategy stops at the next call. Backends that are not thread-safe are called under ``lock``.
    """

    def __init__(self, backend: Backend, cancel: threading.Event, spent: Spent, *, cancellable: bool,
                 lock: threading.Lock | None) -> None:
        self._backend = backend
        self._cancel = cancel
        self._spent = spent
        self._cancellable = cancellable
        self._lock = lock
        self.capabilities = backend.capabilities

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the request was cancelled (client disconnected or timed out)")

    def _locked(self, fn: Callable[[], Any]) -> Any:
        if self._lock is None:
            return fn()
        with self._lock:
            self._check()  # it may have been cancelled while waiting for the lock
            return fn()

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        self._check()
        try:
            if self._cancellable:
                out: list[Completion] = self._locked(lambda: self._backend.generate(requests, cancel=self._cancel))  # type: ignore[call-arg]
            else:
                out = self._locked(lambda: self._backend.generate(requests))
        except Cancelled as e:
            if e.usage is not None:  # the work done before the cancel is spent all the same
                self._spent.add([e.usage])
            raise
        self._spent.add([c.usage for c in out])
        self._check()
        return out

    def score(self, requests: Sequence[Any]) -> list[Any]:
        self._check()
        out: list[Any] = self._locked(lambda: self._backend.score(requests))
        self._spent.add([s.usage for s in out])
        self._check()
        return out

    def hidden_states(self, requests: Sequence[Any]) -> Any:
        """Features for a trained PRM (``prm`` verifier); charged like ``score``."""
        self._check()
        out = self._locked(lambda: self._backend.hidden_states(requests))  # type: ignore[attr-defined]
        self._spent.add([out.usage])
        self._check()
        return out

    def tokenize(self, text: str) -> list[int]:
        return self._locked(lambda: self._backend.tokenize(text))  # type: ignore[no-any-return]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def info(self) -> Any:
        return self._backend.info()

    def close(self) -> None:
        """The backend is shared by every request: a strategy closing 'its' backend must not close it."""

    def __getattr__(self, name: str) -> Any:
        """Any other backend method (a capability added after this proxy was written) is forwarded with the same
        cancel checks and lock, and what its result reports as ``usage`` is counted."""
        attr = getattr(self._backend, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            out = self._locked(lambda: attr(*args, **kwargs))
            items = out if isinstance(out, list) else [out]
            self._spent.add([x.usage for x in items if isinstance(getattr(x, "usage", None), Usage)])
            self._check()
            return out

        return call


@dataclass(frozen=True)
class Outcome:
    """One choice as the client sees it, and the token accounting behind it."""

    content: str
    reasoning: str | None  # the full chain of thought the content came from (revealed only on request)
    finish_reason: Literal["stop", "length"]
    usage: Usage  # the Result's ledger total, every role
    content_tokens: int | None
    answer_extracted: bool
    result: Result

    @property
    def reasoning_tokens(self) -> int | None:
        if self.usage.completion_tokens is None or self.content_tokens is None:
            return None
        return max(0, self.usage.completion_tokens - self.content_tokens)


class ServeEngine:
    """The backend, the model name clients use, and the strategy catalogue.

    Args:
        backend: any Backend; the embedded llama.cpp one batches concurrent requests together.
        model_name: the id clients send as ``model`` (a strategy may follow after ``:``).
        default_effort: the reasoning_effort used when a request names no strategy.
        system_prompt: prepended when a request has no system message (e.g. "write the final answer as
            \\boxed{...}", so the answer can be extracted); None sends the messages as they are.
        thread_safe: whether ``backend`` may be called from several threads at once. None: yes when its
            ``generate`` takes ``cancel=`` (the llama.cpp engine, built for concurrent callers), else calls are
            serialised.
        on_result: called with (response id, choice index, Result) after each choice; for tests and audits.
        strategy_knobs: the operator's knob settings, one spec per strategy (``auto:policy=policy.json``); the only
            way to set the knobs that name server files or resources (``catalogue.operator_knobs``).
    """

    def __init__(self, backend: Backend, model_name: str, *, default_effort: str = "medium",
                 system_prompt: str | None = None, thread_safe: bool | None = None,
                 on_result: Callable[[str, int, Result], None] | None = None, max_count: int = MAX_COUNT,
                 strategy_knobs: Sequence[str] = ()) -> None:
        if not model_name or ":" in model_name:
            raise ValueError(f"model_name must be non-empty and contain no ':' (the strategy separator), "
                             f"got {model_name!r}")
        if EFFORT_ALIASES.get(default_effort, default_effort) not in EFFORTS:
            raise ValueError(f"default_effort must be one of {', '.join(EFFORTS)}, got {default_effort!r}")
        self.backend = backend
        self.model_name = model_name
        self.default_effort = EFFORT_ALIASES.get(default_effort, default_effort)
        self.system_prompt = system_prompt or None
        self.catalogue = StrategyCatalogue(max_count=max_count, strategy_knobs=strategy_knobs)
        self.on_result = on_result
        try:
            self._cancellable = "cancel" in inspect.signature(backend.generate).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            self._cancellable = False
        safe = self._cancellable if thread_safe is None else thread_safe
        self._lock = None if safe else threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def thread_safe(self) -> bool:
        """Whether the backend takes concurrent calls (else the engine runs one at a time)."""
        return self._lock is None

    def close(self) -> None:
        self._closed = True

    # ------------------------------------------------------------------ catalogue

    def model_ids(self) -> list[tuple[str, dict[str, Any]]]:
        """Every id /v1/models lists, with what it runs. ``NAME:<name>-N`` accepts any N in range; a few are
        listed as examples."""
        out: list[tuple[str, dict[str, Any]]] = [
            (self.model_name, {"strategy_id": EFFORTS[self.default_effort].strategy,
                               "reasoning_effort": self.default_effort,
                               "note": "the default effort unless the request sets reasoning_effort"})]
        for info in self.catalogue.describe():
            name = info["name"]
            out.append((f"{self.model_name}:{name}", {"strategy": name, "strategy_id": name}))
            if info["count_knob"]:
                short = next((a for a, n in self.catalogue.aliases.items() if n == name), name)
                for n in (4, 8, 16):
                    if n <= self.catalogue.max_count:
                        out.append((f"{self.model_name}:{short}-{n}",
                                    {"strategy": name, "strategy_id": f"{short}-{n}", info["count_knob"]: n}))
        return out

    def effort_table(self, limits: ServerLimits) -> dict[str, Any]:
        return {level: {"strategy_id": e.strategy,
                        "budget_completion_tokens": f"{e.budget_chains} x max_tokens "
                                                    f"(default {e.budget_chains * limits.default_max_tokens}, "
                                                    f"capped at {limits.max_tokens_per_request})"}
                for level, e in EFFORTS.items()} | {"aliases": dict(EFFORT_ALIASES)}

    def _suffix(self, model: str) -> str | None:
        if model == self.model_name:
            return None
        if model.startswith(self.model_name + ":"):
            suffix = model[len(self.model_name) + 1:]
            if not suffix:
                raise ApiError(400, f"model {model!r} ends with ':' but names no strategy; this server offers "
                                    f"{self.catalogue.grammar()}", param="model", code="unknown_strategy")
            return suffix
        raise ApiError(404, f"The model {model!r} does not exist: this server serves {self.model_name!r}, "
                            f"optionally with a strategy such as '{self.model_name}:sc-8'; see GET /v1/models",
                       param="model", code="model_not_found")

    # ------------------------------------------------------------------ planning

    def plan(self, *, model: str, limits: ServerLimits, reasoning_effort: str | None = None,
             options: ThinkscaleOptions | None = None, max_tokens: int | None = None,
             max_completion_tokens: int | None = None, temperature: float | None = None,
             top_p: float | None = None) -> Plan:
        """Resolve a request's strategy and Budget. Precedence: ``thinkscale.strategy`` > model suffix >
        ``reasoning_effort`` > the server's default effort. Raises ApiError naming the offending field."""
        suffix = self._suffix(model)
        ext = options.strategy if options is not None else None
        effort: str | None = None
        if ext is not None and suffix is not None and ext != suffix:
            raise ApiError(400, f"thinkscale.strategy {ext!r} contradicts the model suffix {suffix!r}: "
                                "give the strategy once", param="thinkscale.strategy", code="invalid_value")
        if ext is not None:
            choice = self.catalogue.parse(ext, param="thinkscale.strategy")
        elif suffix is not None:
            choice = self.catalogue.parse(suffix, param="model")
        else:
            effort = EFFORT_ALIASES.get(reasoning_effort, reasoning_effort) if reasoning_effort \
                else self.default_effort
            choice = self.catalogue.parse(EFFORTS[effort].strategy, param="reasoning_effort")

        budgets = [(v, p) for v, p in ((options.budget if options else None, "thinkscale.budget"),
                                       (max_completion_tokens, "max_completion_tokens")) if v is not None]
        for v, p in budgets + ([(max_tokens, "max_tokens")] if max_tokens is not None else []):
            if v > limits.max_tokens_per_request:
                raise ApiError(400, f"{p} = {v} is over this server's limit of {limits.max_tokens_per_request} "
                                    "completion tokens per request", param=p, code="invalid_value")
        explicit = min(budgets) if budgets else None
        if max_tokens is not None:
            chain = max_tokens
            if explicit is not None and max_tokens > explicit[0]:
                raise ApiError(400, f"max_tokens ({max_tokens}) is more than {explicit[1]} ({explicit[0]}): not "
                                    "even one chain of thought would fit the budget", param="max_tokens",
                               code="invalid_value")
        else:
            chain = min(limits.default_max_tokens, limits.max_tokens_per_request,
                        *(() if explicit is None else (explicit[0],)))
        if explicit is not None:
            budget_tokens = explicit[0]
        elif effort is not None:
            budget_tokens = min(EFFORTS[effort].budget_chains * chain, limits.max_tokens_per_request)
        else:
            budget_tokens = limits.max_tokens_per_request
        budget = Budget(max_completion_tokens=budget_tokens,
                        max_calls=options.max_calls if options else None,
                        max_seconds=options.max_seconds if options else None)

        knobs: dict[str, tuple[Any, str]] = {"max_tokens": (chain, "max_tokens")}
        if temperature is not None:
            knobs["temperature"] = (temperature, "temperature")
        if top_p is not None:
            knobs["top_p"] = (top_p, "top_p")
        counted = counted_knobs(choice.name)
        for k, value in ((options.params or {}) if options else {}).items():
            # the params must not get round the limits the other fields are held to
            cap = limits.max_tokens_per_request if k == "max_tokens" else \
                self.catalogue.max_count if k in counted else None
            if cap is not None and isinstance(value, int) and value > cap:
                raise ApiError(400, f"thinkscale.params.{k} = {value} is over this server's limit of {cap}",
                               param=f"thinkscale.params.{k}", code="invalid_value")
            knobs[k] = (value, f"thinkscale.params.{k}")
        strategy = self.catalogue.build(choice, knobs)
        return Plan(strategy, choice, budget, chain, effort)

    def problem(self, messages: Sequence[tuple[str, str]], *, id: str, param: str) -> Problem:
        from thinkscale.types import Message

        msgs = [Message("system" if role == "developer" else role, content)  # type: ignore[arg-type]
                for role, content in messages]
        if self.system_prompt and not any(m.role == "system" for m in msgs):
            msgs.insert(0, Message("system", self.system_prompt))
        try:
            return Problem(id=id, messages=tuple(msgs))
        except ValueError as e:
            raise ApiError(400, f"{e}", param=param, code="invalid_value") from None

    # ------------------------------------------------------------------ running

    def run(self, plan: Plan, problem: Problem, *, seed: int, index: int, cancel: threading.Event,
            spent: Spent, response_id: str = "") -> Result:
        """Run one choice (blocking: call it from a worker thread). Raises ``Cancelled`` once ``cancel`` is set."""
        if self._closed:
            raise ApiError(503, "the server is shutting down", code="unavailable")
        proxy = _RequestBackend(self.backend, cancel, spent, cancellable=self._cancellable, lock=self._lock)
        # a string seed is hashed with SHA-512 by random.Random: stable across runs, distinct per choice
        result = execute(plan.strategy, problem, proxy, plan.budget, rng=random.Random(f"{seed}:{index}"))
        if self.on_result is not None:
            self.on_result(response_id, index, result)
        return result

    def outcome(self, result: Result, *, stop: Sequence[str] = ()) -> Outcome:
        """What the client sees: the extracted answer when there is one, else the chosen chain's text (the first
        candidate's when the strategy chose none), cut at the first stop sequence."""
        chosen: Candidate | None = result.chosen or (result.candidates[0] if result.candidates else None)
        extracted = result.answer is not None
        content = result.answer if result.answer is not None else chosen.text if chosen else ""
        assert content is not None
        whole_chain = not extracted and chosen is not None
        hits = [i for i in (content.find(s) for s in stop) if i >= 0]
        if hits:
            content = content[: min(hits)]
            whole_chain = False
        usage = result.ledger.total()
        if whole_chain and chosen is not None and chosen.completion_tokens is not None:
            content_tokens: int | None = chosen.completion_tokens  # exact: the content is the whole sample
        else:
            content_tokens = self._count(content)
        if content_tokens is not None and usage.completion_tokens is not None:
            content_tokens = min(content_tokens, usage.completion_tokens)
        truncated = whole_chain and chosen is not None and chosen.finish_reason == "length"
        finish: Literal["stop", "length"] = "length" if result.stop_reason == "budget" or truncated else "stop"
        return Outcome(content, chosen.text if chosen else None, finish, usage, content_tokens, extracted, result)

    def _count(self, text: str) -> int | None:
        """Tokens of ``text`` as generated output. ``tokenize`` reads text as a prompt and may add BOS, so the
        count of the empty string is subtracted. Without a tokenizer the count is unknown (None)."""
        if not text:
            return 0
        if not self.backend.capabilities.tokenize:
            return None
        tok = self.backend.tokenize
        if self._lock is not None:
            with self._lock:
                return max(0, len(tok(text)) - len(tok("")))
        return max(0, len(tok(text)) - len(tok("")))


def usage_payload(outcomes: Sequence[Outcome], *, wall_seconds: float, queue_seconds: float) -> dict[str, Any]:
    """OpenAI ``usage`` for all choices of a response, summed from their ledgers (nothing estimated), plus the
    ``thinkscale`` extension. An unknown count is null, never a made-up 0."""
    total = Usage.total(o.usage for o in outcomes)
    by_role: dict[Role, Usage] = {}
    for o in outcomes:
        for role, u in o.result.ledger.by_role().items():
            by_role[role] = by_role.get(role, Usage.zero()) + u
    reasoning = [o.reasoning_tokens for o in outcomes]
    content = [o.content_tokens for o in outcomes]
    p, c = total.prompt_tokens, total.completion_tokens

    def role_tokens(role: Role) -> int | None:
        u = by_role.get(role)
        if u is None:
            return 0
        return None if u.prompt_tokens is None or u.completion_tokens is None else u.prompt_tokens + u.completion_tokens

    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": None if p is None or c is None else p + c,
        "prompt_tokens_details": {"cached_tokens": total.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": None if None in reasoning else sum(reasoning)},  # type: ignore[arg-type]
        "thinkscale": {
            "content_tokens": None if None in content else sum(content),  # type: ignore[arg-type]
            "calls": total.calls,
            "verifier_tokens": role_tokens(Role.VERIFIER),
            "tool_tokens": role_tokens(Role.TOOL),
            "by_role": {str(r): u.to_dict() for r, u in by_role.items()},
            "wall_seconds": round(wall_seconds, 4),
            "queue_seconds": round(queue_seconds, 4),
            "backend_seconds": None if total.seconds is None else round(total.seconds, 4),
            "flops": total.flops,
        },
    }


def choice_extension(o: Outcome, *, reveal: bool) -> dict[str, Any]:
    """The per-choice ``thinkscale`` object: how the answer was decided. Candidate texts only when revealed."""
    r = o.result
    votes = {a: int(v) for a, v in r.votes.items()} if r.votes is not None and r.votes_kind == "count" else None
    scores = r.votes if r.votes_kind == "score" else None
    cands = [c.summary(with_text=reveal) for c in r.candidates]
    return {"strategy": r.strategy, "stop_reason": r.stop_reason, "answer": r.answer,
            "answer_extracted": o.answer_extracted, "n_candidates": len(r.candidates), "votes": votes,
            "scores": scores, "chosen_index": r.chosen_index, "candidates": cands}

