"""Trace events: what a strategy run did, as small frozen dataclasses with a stable JSON form.

Every event is ``{"event": KIND, field: value, ...}`` in JSON (``Event.to_json``) and is read back by
``event_from_json``, which rebuilds the dataclass from its field annotations. The run context
(``thinkscale.strategies.run.Run``) records the events every strategy shares: each model call (``Generate``,
``ScoreCall``), each verifier call (``Verify``), each sandbox run (``Tool``), the final choice (``Vote``,
``Select``), why the run stopped (``Stop``), a search tree (``Tree``) and a sub-strategy's run (``Delegate``). A
strategy's own events (a beam step, an MCTS simulation, auto's difficulty estimate) are declared in its own file
with the same ``@event`` decorator.

Old traces (eval stores written before these types existed: free-form dicts) are read by ``parse_trace``: a dict
whose kind and fields match an event type becomes that event, the old forms of ``generate``, ``score``, ``select``
and ``tool`` are converted, and anything else is kept verbatim as ``Legacy`` (nothing is dropped).
``thinkscale rescore`` writes the converted form back.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from thinkscale.types import Event, Usage

E = TypeVar("E", bound=type[Event])

EVENTS: dict[str, type[Event]] = {}


Migration = Callable[[dict[str, Any]], "Event | None"]
MIGRATIONS: dict[str, list[Migration]] = {}


def migrates(kind: str) -> Callable[[Migration], Migration]:
    """Decorator: a converter of old trace entries of ``kind`` (a strategy's own free-form events of stores written
    before the typed events) to a typed event; it returns None for an entry it does not recognise."""

    def deco(fn: Migration) -> Migration:
        MIGRATIONS.setdefault(kind, []).append(fn)
        return fn

    return deco


def event(kind: str) -> Callable[[E], E]:
    """Class decorator: register a frozen dataclass ``Event`` subclass under ``kind`` (its JSON ``"event"``)."""

    def deco(cls: E) -> E:
        if kind in EVENTS and EVENTS[kind] is not cls:
            raise ValueError(f"trace event kind {kind!r} registered twice ({EVENTS[kind].__name__}, {cls.__name__})")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"event {cls.__name__} must be a dataclass")
        cls.kind = kind
        EVENTS[kind] = cls
        return cls

    return deco


class TraceError(ValueError):
    """A trace entry that is not an event of a known form."""


# ---------------------------------------------------------------------- the events every strategy shares


@dataclass(frozen=True)
class RequestInfo:
    """What a trace keeps of one GenRequest: enough to replay its seeded draw."""

    n: int
    seed: int | None
    max_tokens: int | None = None
    first_sample: int = 0
    temperature: float | None = None
    logprobs: bool = False
    continue_final: bool = False


@event("generate")
@dataclass(frozen=True)
class Generate(Event):
    """One batched ``backend.generate`` call. ``refs``: what each request extends (a tree node, a path), in request
    order, or () when the requests start from the problem. ``tag`` says what the call was for (``draft``,
    ``expand``, ``wave``, ...); ``model`` which model made it, when not the run's own."""

    role: str
    requests: tuple[RequestInfo, ...]
    usage: Usage
    tag: str = ""
    refs: tuple[int, ...] = ()
    model: str | None = None  # None: the run's own model


@event("score_call")
@dataclass(frozen=True)
class ScoreCall(Event):
    """One batched ``backend.score`` call a strategy made itself (verifiers' own calls are inside ``Verify``)."""

    role: str
    requests: int
    usage: Usage
    tag: str = ""


@event("verify")
@dataclass(frozen=True)
class Verify(Event):
    """One verifier call: ``scores[i]`` are the scores of candidate (or tree node) ``refs[i]``; ``calls`` the backend
    calls it charged, at most ``bound`` (what the verifier declared beforehand, ``Verifier.max_calls``)."""

    verifier: str
    refs: tuple[int, ...]
    scores: tuple[tuple[float, ...], ...]
    calls: int
    bound: int | None
    usage: Usage
    tag: str = ""


@event("tool")
@dataclass(frozen=True)
class Tool(Event):
    """One sandbox run of model-written code. ``ref``: the path (candidate) it belongs to; ``round`` its round."""

    ref: int | None
    round: int | None
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    exception: str | None
    wall_seconds: float
    call_seconds: float
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    code: str | None = None
    stdout: str | None = None


@event("stop")
@dataclass(frozen=True)
class Stop(Event):
    """Why the run (or a phase of it) ended: ``reason`` a short key (``budget``, ``settled``, ...), ``detail`` words."""

    reason: str
    detail: str | None = None


@event("vote")
@dataclass(frozen=True)
class Vote(Event):
    """A vote over normalised answers: ``counts`` (or, for a weighted vote, the weight per answer in ``weights``),
    the ``winner`` and how a tie was broken."""

    counts: dict[str, float]
    winner: str | None
    tie_broken_by_rng: bool = False
    tie_broken_by_greedy: bool = False
    weights: dict[str, float] | None = None


@event("select")
@dataclass(frozen=True)
class Select(Event):
    """A verifier-scored selection: ``how`` (argmax, weighted_majority, ...) over the candidates ``pool`` with their
    aggregated ``scores``; ``tally`` the score per answer; ``chosen`` the chosen candidate's index."""

    how: str
    pool: tuple[int, ...]
    scores: tuple[float, ...]
    tally: dict[str, float]
    winner: str | None
    chosen: int | None
    tie_broken_by_rng: bool = False


@dataclass(frozen=True)
class TreeNode:
    """One node of a step search's tree. Node 0 is the root (the empty solution); node i > 0 is candidate i - 1."""

    index: int
    parent: int | None
    kind: str
    step: str | None
    depth: int
    terminal: str | None
    answer: str | None
    step_scores: tuple[float, ...]
    completion_tokens: int | None
    finish_reason: str | None


@event("tree")
@dataclass(frozen=True)
class Tree(Event):
    nodes: tuple[TreeNode, ...]


@event("delegate")
@dataclass(frozen=True)
class Delegate(Event):
    """A sub-strategy run on a child context (sharing the ledger): its spec, what it answered, what it spent and its
    own trace."""

    spec: str
    stop_reason: str
    answer: str | None
    usage: Usage
    trace: tuple[Event, ...]


@event("legacy")
@dataclass(frozen=True)
class Legacy(Event):
    """An entry of an old trace that has no typed form: kept verbatim (``data`` is the old dict)."""

    data: dict[str, Any]


# ---------------------------------------------------------------------- JSON


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as the annotated type ``tp``: dataclasses, Usage, Event, tuples, dicts, unions."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return None
        errors = []
        for m in members:
            if m is type(None):
                continue
            try:
                return _decode(m, value, where)
            except (TypeError, ValueError, KeyError) as e:
                errors.append(str(e))
        raise TraceError(f"{where}: {value!r} matches none of {tp} ({'; '.join(errors)})")
    if tp is Event:
        if not isinstance(value, dict):
            raise TraceError(f"{where}: an event must be an object, got {value!r}")
        return event_from_json(value)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise TraceError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_decode(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise TraceError(f"{where}: expected an object, got {value!r}")
        _, vt = typing.get_args(tp) or (str, Any)
        return {str(k): _decode(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Usage:
        if not isinstance(value, dict):
            raise TraceError(f"{where}: expected a usage object, got {value!r}")
        return Usage(**{f.name: value[f.name] for f in dataclasses.fields(Usage) if f.name in value})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TraceError(f"{where}: expected an object for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TraceError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise TraceError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(data) - names - {"event"}
    if extra:
        raise TraceError(f"{where}: {cls.__name__} has no field(s) {sorted(extra)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TraceError(f"{where}: {cls.__name__} needs field {f.name!r}")
    return cls(**kwargs)


def event_from_json(data: dict[str, Any]) -> Event:
    """The typed event a JSON object (``Event.to_json``) stands for. Raises TraceError for an unknown kind or
    fields that do not fit it."""
    _load_strategy_events()
    kind = data.get("event")
    if not isinstance(kind, str) or kind not in EVENTS:
        raise TraceError(f"unknown trace event {kind!r}")
    return _build(EVENTS[kind], data, kind)  # type: ignore[no-any-return]


def _load_strategy_events() -> None:
    from thinkscale.strategies.base import load_all

    load_all()


def parse_trace(entries: Iterable[Any]) -> tuple[Event, ...]:
    """A stored trace as typed events: entries in the current form are read as they are, entries of old stores are
    converted (``migrate_event``)."""
    out = []
    for e in entries:
        if isinstance(e, Event):
            out.append(e)
            continue
        if not isinstance(e, dict):
            out.append(Legacy({"value": e}))
            continue
        try:
            out.append(event_from_json(e))
        except (TraceError, TypeError, ValueError):
            out.append(migrate_event(e))
    return tuple(out)


def trace_json(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [e.to_json() for e in events]


# ---------------------------------------------------------------------- old stores


def _usage(d: Any) -> Usage:
    if isinstance(d, list):
        return Usage.total(_usage(u) for u in d)
    if not isinstance(d, dict):
        return Usage()
    return Usage(**{f.name: d[f.name] for f in dataclasses.fields(Usage) if f.name in d})


def _old_generate(d: dict[str, Any]) -> Generate:
    usage = _usage(d.get("usage"))
    if "expand" in d:  # the tree searches: [[node, n], ...] with one seed per request
        seeds = d.get("seeds") or [None] * len(d["expand"])
        reqs = tuple(RequestInfo(n=int(n), seed=s, max_tokens=d.get("max_tokens"), continue_final=True)
                     for (_, n), s in zip(d["expand"], seeds, strict=True))
        tag = "expand" if d.get("stop_at_step", True) else "rollout"
        return Generate("generator", reqs, usage, tag, tuple(int(i) for i, _ in d["expand"]))
    if "round" in d and "paths" in d:  # sc-tir: round 0 one request for every path, later one per path
        paths = [int(p) for p in d["paths"]]
        if d["round"] == 0:
            return Generate("generator", (RequestInfo(n=len(paths), seed=d.get("seed")),), usage, "round 0")
        reqs = tuple(RequestInfo(n=1, seed=s, continue_final=True) for s in d.get("seeds") or [None] * len(paths))
        return Generate("generator", reqs, usage, f"round {d['round']}", tuple(paths))
    req = RequestInfo(n=int(d.get("n", 1)), seed=d.get("seed"), max_tokens=d.get("max_tokens"),
                      logprobs=bool(d.get("logprobs", False)))
    return Generate("generator", (req,), usage)


def migrate_event(d: dict[str, Any]) -> Event:
    """An old trace entry (a free-form dict) as a typed event; ``Legacy`` when it has no typed form."""
    kind = d.get("event")
    try:
        if kind == "generate":
            return _old_generate(d)
        if kind == "score" and "nodes" in d:  # tree searches: one row of step scores per node
            rows = tuple(tuple(float(x) for x in r) for r in d["scores"])
            return Verify("", tuple(int(n) - 1 for n in d["nodes"]), rows, 0, None, Usage())
        if kind == "score" and "scored" in d:  # best-of-n / weighted-sc: aggregated scores of the first k
            return Verify(str(d.get("verifier", "")), tuple(range(int(d["scored"]))),
                          tuple((float(s),) for s in d["scores"]), int(d.get("calls", 0)), None, Usage())
        if kind == "select" and "index" in d:  # best-of-n / weighted-sc
            return Select(str(d.get("selection", "")), (), (), dict(d.get("tally") or {}), d.get("winner"),
                          d.get("index"), bool(d.get("tie_broken_by_rng", False)))
        if kind == "select" and "pool" in d:  # tree searches: node indices (node i is candidate i - 1)
            chosen = d.get("chosen")
            return Select(str(d.get("how", "")), tuple(int(i) - 1 for i in d["pool"]),
                          tuple(float(s) for s in d.get("scores", ())), dict(d.get("tally") or {}), None,
                          None if chosen is None else int(chosen) - 1, bool(d.get("tie_broken_by_rng", False)))
        if kind == "tool":
            return Tool(d.get("path"), d.get("round"), d.get("exit_code"), bool(d.get("timed_out")),
                        d.get("killed_reason"), d.get("exception"), float(d.get("wall_seconds", 0.0)),
                        float(d.get("call_seconds", 0.0)), d.get("stdout_bytes"), d.get("stderr_bytes"))
        if kind == "stop" and set(d) <= {"event", "reason", "detail"}:
            return Stop(str(d.get("reason")), d.get("detail"))
        if kind == "vote" and set(d) <= {"event", "counts", "winner", "tie_broken_by_rng"}:
            return Vote(dict(d.get("counts") or {}), d.get("winner"), bool(d.get("tie_broken_by_rng", False)))
        if kind == "stop" and "reason" in d:  # with extra numbers (samples, P, spent, ...): kept in the detail
            extra = {k: v for k, v in d.items() if k not in ("event", "reason", "detail")}
            detail = "; ".join(x for x in (d.get("detail"), ", ".join(f"{k}={v}" for k, v in extra.items())) if x)
            return Stop(str(d["reason"]), detail or None)
        _load_strategy_events()
        for convert in MIGRATIONS.get(str(kind), ()):
            converted = convert(d)
            if converted is not None:
                return converted
    except (KeyError, TypeError, ValueError):
        pass
    return Legacy(dict(d))
