"""Core value types of thinkscale. Standard library only: importing this module never loads a model.

Units are explicit everywhere: tokens, calls, seconds, FLOPs. An unknown count is ``None``, never a fake 0,
and it stays unknown when added to anything (``None + 3 -> None``).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

FinishReason = Literal["stop", "length", "low_confidence"]
StopReason = Literal["done", "budget", "error"]


class Role(enum.StrEnum):
    """Who spent the compute: the ledger keeps a separate account per role."""

    GENERATOR = "generator"
    VERIFIER = "verifier"
    TOOL = "tool"


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise ValueError(f"Message.role must be 'system', 'user' or 'assistant', got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"Message.content must be a str, got {type(self.content).__name__}")


@dataclass(frozen=True)
class Problem:
    """A question to solve. ``reference`` is only for evaluation; strategies never read it."""

    id: str
    messages: tuple[Message, ...]
    reference: str | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("Problem.messages is empty: give at least one user message")
        if not any(m.role == "user" and m.content.strip() for m in self.messages):
            raise ValueError("Problem has no non-empty user message: the problem text is empty")

    @classmethod
    def from_text(cls, text: str, *, id: str = "problem", system: str | None = None,
                  reference: str | None = None) -> Problem:
        if not text or not text.strip():
            raise ValueError("the problem text is empty: pass the question to solve")
        msgs = ((Message("system", system),) if system else ()) + (Message("user", text),)
        return cls(id=id, messages=msgs, reference=reference)


@dataclass(frozen=True)
class ConfidenceStop:
    """Stop a sample while it is generated once its confidence falls (DeepConf online,
    https://arxiv.org/abs/2508.15260): after each generated token, once at least ``window`` tokens exist, when the mean
    logprob of the last ``window`` sampled tokens is below ``min_mean_logprob`` the sample ends with finish reason
    ``"low_confidence"``. Its text and tokens are what was generated up to there (charged as generated). The rule is
    the online form of ``lowest_group_logprob``: a stopped sample's lowest-group logprob is below the threshold.
    Needs ``logprobs=True`` on the request and a backend with ``Capabilities.confidence_stop``."""

    window: int
    min_mean_logprob: float

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ValueError(f"ConfidenceStop.window must be an integer >= 1, got {self.window!r}")
        v = self.min_mean_logprob
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v > 0:
            raise ValueError(f"ConfidenceStop.min_mean_logprob must be a finite logprob <= 0, got {v!r}")

    def step(self, window_sum: float, logprobs: Sequence[float]) -> tuple[float, bool]:
        """The rule once ``logprobs[-1]`` has been generated, in O(1): the sum of the last ``window`` logprobs
        (``window_sum`` is the sum before that token) and whether the sample stops there. What a backend applies
        token by token; ``stops`` is the same over a whole list."""
        n, w = len(logprobs), self.window
        window_sum += logprobs[-1] - (logprobs[n - 1 - w] if n > w else 0.0)
        return window_sum, n >= w and window_sum / w < self.min_mean_logprob

    def stops(self, logprobs: Sequence[float]) -> int | None:
        """The number of tokens after which the rule stops a sample with these logprobs (None: it never does)."""
        total, seen = 0.0, []
        for lp in logprobs:
            seen.append(lp)
            total, stop = self.step(total, seen)
            if stop:
                return len(seen)
        return None


@dataclass(frozen=True)
class GenRequest:
    """One prompt to sample ``n`` continuations of.

    Exactly one of ``messages`` (chat, rendered with the model's chat template) or ``prompt`` (raw text) is set.
    ``continue_final``: the last message is an assistant turn to continue (prefilled), not to answer; this is how
    step-level search extends a partial solution. ``seed`` makes sampling reproducible; sample ``j`` of a request
    uses a seed derived from ``(seed, first_sample + j)`` so the ``n`` samples differ but replay identically.
    ``first_sample`` continues a seeded draw: ``n=4, first_sample=4`` gives exactly samples 4..7 of the same
    request with ``n=8`` (how adaptive strategies sample in waves and still draw what self-consistency draws).
    ``top_k = 0`` and ``top_p = 1`` and ``min_p = 0`` disable those filters; ``temperature = 0`` is greedy.
    ``confidence_stop`` ends a sample early when its recent tokens' confidence falls (see ``ConfidenceStop``).
    """

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    continue_final: bool = False
    first_sample: int = 0
    confidence_stop: ConfidenceStop | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("GenRequest needs exactly one of messages= or prompt=")
        if self.confidence_stop is not None:
            if not isinstance(self.confidence_stop, ConfidenceStop):
                raise TypeError(f"confidence_stop must be a ConfidenceStop, got {type(self.confidence_stop).__name__}")
            if not self.logprobs:
                raise ValueError("confidence_stop judges the sampled tokens' logprobs: set logprobs=True too")
        if self.messages is not None:
            if not isinstance(self.messages, tuple):
                object.__setattr__(self, "messages", tuple(self.messages))
            if not self.messages:
                raise ValueError("GenRequest.messages is empty")
            if self.continue_final and self.messages[-1].role != "assistant":
                raise ValueError("continue_final=True needs the last message to be an assistant turn")
        elif self.continue_final:
            raise ValueError("continue_final applies to chat messages only; a raw prompt is always continued")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)) \
                or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p!r}")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        if not isinstance(self.first_sample, int) or isinstance(self.first_sample, bool) or self.first_sample < 0:
            raise ValueError(f"first_sample must be an integer >= 0, got {self.first_sample!r}")
        if self.first_sample and self.seed is None:
            raise ValueError("first_sample continues a seeded draw: give seed= too")

    def sample_seed(self, j: int) -> int | None:
        """The seed of sample ``j`` of this request, i.e. of sample ``first_sample + j`` of the seeded draw:
        distinct per sample, stable across runs (no ``hash()`` randomisation). Backends seed sample ``j`` with it,
        so they honour ``first_sample`` without knowing of it."""
        if self.seed is None:
            return None
        k = self.first_sample + j
        return (self.seed * 1_000_003 + k * 7_919 + 1) % (2**31 - 1)


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probabilities of ``continuation`` given a prompt (one forward pass, no sampling).

    The continuation is appended to the rendered prompt (after the generation prompt for chat messages).
    Used for P(yes) verifiers and PRMs.
    """

    continuation: str
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("ScoreRequest needs exactly one of messages= or prompt=")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        if not self.continuation:
            raise ValueError("ScoreRequest.continuation is empty")


def _add_opt(a: float | None, b: float | None) -> Any:
    return None if a is None or b is None else a + b


@dataclass(frozen=True)
class Usage:
    """What one or more backend calls cost.

    ``prompt_tokens``: prompt tokens the backend ingested; ``cached_prompt_tokens`` of those were reused from a
    cache and not computed. ``seconds``: wall time attributed to these calls. ``flops``: 2 x parameters x tokens
    computed (computed prompt tokens + completion tokens). ``None`` = the backend could not say.
    """

    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    completion_tokens: int | None = None
    calls: int = 0
    seconds: float | None = None
    flops: float | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=_add_opt(self.prompt_tokens, other.prompt_tokens),
            cached_prompt_tokens=_add_opt(self.cached_prompt_tokens, other.cached_prompt_tokens),
            completion_tokens=_add_opt(self.completion_tokens, other.completion_tokens),
            calls=self.calls + other.calls,
            seconds=_add_opt(self.seconds, other.seconds),
            flops=_add_opt(self.flops, other.flops),
        )

    @staticmethod
    def zero() -> Usage:
        """The identity of ``+``: no calls, every count known to be 0."""
        return Usage(0, 0, 0, 0, 0.0, 0.0)

    @staticmethod
    def total(usages: Iterable[Usage]) -> Usage:
        out = Usage.zero()
        for u in usages:
            out = out + u
        return out

    @property
    def computed_prompt_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.cached_prompt_tokens is None:
            return None
        return self.prompt_tokens - self.cached_prompt_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    """One sampled continuation. ``completion_tokens`` is the backend's own count for this sample."""

    text: str
    completion_tokens: int | None
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None
    # Every sampled token id, an end-of-generation token included (aligned with ``logprobs``; the text may be cut
    # shorter at a stop string). Backends that see token ids fill it (llama.cpp); HTTP backends leave it None.
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Completion:
    """The ``n`` samples of one GenRequest and what producing them cost (prompt counted as the backend did)."""

    samples: tuple[Sample, ...]
    usage: Usage


@dataclass(frozen=True)
class Scored:
    """Per-token log-probabilities of a ScoreRequest's continuation, as the model tokenised it."""

    logprobs: tuple[float, ...]
    tokens: tuple[str, ...]
    usage: Usage


@dataclass(frozen=True)
class Candidate:
    """A (partial) solution. Search strategies link candidates to a ``parent`` index."""

    text: str
    answer: str | None
    steps: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    completion_tokens: int | None = None
    finish_reason: FinishReason | None = None
    parent: int | None = None
    # the generator's per-token logprobs (Sample.logprobs), for confidence verifiers; None = not requested
    logprobs: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, *, with_text: bool) -> dict[str, Any]:
        """What a user sees of a candidate (CLI JSON, server extension): its text only when reasoning is shown."""
        out: dict[str, Any] = {"answer": self.answer, "completion_tokens": self.completion_tokens,
                               "finish_reason": self.finish_reason}
        if with_text:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class Budget:
    """Hard limits on what a strategy may spend. ``None`` = no limit on that unit."""

    max_completion_tokens: int | None = None
    max_calls: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v <= 0:
                raise ValueError(f"Budget.{f.name} must be > 0 or None, got {v!r}")

    def remaining_completion_tokens(self, ledger: Ledger) -> int | None:
        if self.max_completion_tokens is None:
            return None
        spent = ledger.total().completion_tokens
        if spent is None:
            raise ValueError("a completion-token budget needs a backend that reports completion tokens")
        return self.max_completion_tokens - spent

    def exhausted(self, ledger: Ledger) -> str | None:
        """Which limit is spent (a reason string), or None while there is budget left."""
        total = ledger.total()
        rem = self.remaining_completion_tokens(ledger)
        if rem is not None and rem <= 0:
            return f"completion tokens {total.completion_tokens} >= {self.max_completion_tokens}"
        if self.max_calls is not None and total.calls >= self.max_calls:
            return f"calls {total.calls} >= {self.max_calls}"
        if self.max_seconds is not None and ledger.elapsed_seconds() >= self.max_seconds:
            return f"seconds {ledger.elapsed_seconds():.1f} >= {self.max_seconds}"
        return None


@dataclass
class Ledger:
    """Every charge, by role. Strategies charge each backend call's usage here; nothing is estimated."""

    entries: list[tuple[Role, Usage]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    # the model each entry was charged to (parallel to ``entries``; None: the run's own model)
    models: list[str | None] = field(default_factory=list)

    def charge(self, role: Role, usage: Usage, *, model: str | None = None) -> None:
        self.models.extend([None] * (len(self.entries) - len(self.models)))  # entries appended directly
        self.entries.append((Role(role), usage))
        self.models.append(model)

    def by_model(self) -> dict[str | None, Usage]:
        """Usage per model (None: the run's own model): what a heterogeneous ensemble spent on each, FLOPs
        included (each backend counts its own)."""
        models = self.models + [None] * (len(self.entries) - len(self.models))
        out: dict[str | None, Usage] = {}
        for (_, u), m in zip(self.entries, models, strict=True):
            out[m] = out.get(m, Usage.zero()) + u
        return out

    def total(self, role: Role | None = None) -> Usage:
        return Usage.total(u for r, u in self.entries if role is None or r == role)

    def by_role(self) -> dict[Role, Usage]:
        return {r: self.total(r) for r in Role if any(e[0] == r for e in self.entries)}

    def elapsed_seconds(self) -> float:
        return time.perf_counter() - self.started

    def to_dict(self) -> dict[str, Any]:
        out = {
            "total": self.total().to_dict(),
            "by_role": {str(r): u.to_dict() for r, u in self.by_role().items()},
            "elapsed_seconds": self.elapsed_seconds(),
        }
        if any(m is not None for m in self.models):
            out["by_model"] = {m or "(run model)": u.to_dict() for m, u in self.by_model().items()}
        return out


class Event:
    """One thing a strategy run did, as a small frozen dataclass with a stable JSON form: ``{"event": KIND,
    field: value, ...}`` (``to_json``; ``thinkscale.strategies.events.event_from_json`` reads it back). Subclasses
    are registered by ``kind`` with ``thinkscale.strategies.events.event``; consumers read their fields."""

    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Event):
        return value.to_json()
    if isinstance(value, Usage):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    return value


VotesKind = Literal["count", "score"]


@dataclass(frozen=True)
class Result:
    """What a strategy returns: always the full picture, ``answer`` for convenience.

    ``chosen_index``: the candidate the answer came from (None: no candidate answered). ``votes``: what the final
    selection weighed per normalised answer, ``votes_kind`` says how: ``"count"`` (a majority vote's counts) or
    ``"score"`` (verifier scores: the best per answer for argmax, summed for a weighted vote); None when the answer
    was not chosen by comparing answers. ``seeds``: the seed of every generate request, in order (None: greedy).
    ``stop_detail``: why the run stopped, in words. ``trace``: the typed events (``thinkscale.strategies.events``).
    """

    answer: str | None
    candidates: tuple[Candidate, ...]
    ledger: Ledger
    stop_reason: StopReason
    strategy: str
    chosen_index: int | None = None
    votes: dict[str, float] | None = None
    votes_kind: VotesKind | None = None
    seeds: tuple[int | None, ...] = ()
    stop_detail: str | None = None
    trace: tuple[Event, ...] = ()

    def __post_init__(self) -> None:
        if self.chosen_index is not None and not 0 <= self.chosen_index < len(self.candidates):
            raise ValueError(f"Result.chosen_index {self.chosen_index} is not a candidate index "
                             f"(there are {len(self.candidates)})")
        if (self.votes is None) != (self.votes_kind is None):
            raise ValueError("Result.votes and Result.votes_kind go together")

    @property
    def chosen(self) -> Candidate | None:
        return None if self.chosen_index is None else self.candidates[self.chosen_index]

    def trace_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.trace]


def sum_completion_tokens(samples: Sequence[Sample]) -> int | None:
    return Usage.total(Usage(completion_tokens=s.completion_tokens) for s in samples).completion_tokens
