"""The Strategy protocol, the registry of strategies, and the helpers every strategy shares.

A strategy is a frozen dataclass of knobs with ``run(problem, backend, budget, *, rng) -> Result``. It charges every
backend call to the ledger, never spends past the Budget (it stops early with ``stop_reason="budget"``), draws all
randomness from ``rng``, and returns every candidate with a JSON-serialisable trace. Its ``budget_knob`` ClassVar
names the knob a budget sweep varies.

Strategies are named by a spec (``build_strategy``), the grammar of the CLI and the eval harness (the server reads
the same ``knobs`` from JSON)::

    spec  := NAME | NAME ":" knob ("," knob)*        e.g.  best-of-n:verifier=pyes,n_samples=8
    knob  := KNOB "=" VALUE                          VALUE is parsed by the knob's declared type:
                                                     int, float (finite), bool (true/false/yes/no/1/0),
                                                     str, an Enum's value, "none" for an optional knob

A VALUE runs to the next ``,`` (it may contain ``=``); a value with a comma (a prompt) is set with ``--knob``, a
keyword override of ``build_strategy``, or in Python.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import types
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from thinkscale.answers.extract import extract_answer, normalize_answer
from thinkscale.backends.base import Backend
from thinkscale.types import Budget, Candidate, Completion, Ledger, Problem, Role


class Strategy(Protocol):
    name: ClassVar[str]
    # the knob a budget sweep sets (n_samples, max_rounds, ...): the eval harness varies it
    budget_knob: ClassVar[str]
    # optional, default False: the budget knob counts tokens (auto's budget_tokens, budget forcing's thinking
    # tokens), so a sweep's budget k sets it to k chains' worth: k x the sweep's max_tokens (see budget_scale)
    budget_in_tokens: ClassVar[bool]

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Any: ...


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    factory: type
    summary: str
    paper: str


REGISTRY: dict[str, StrategyInfo] = {}


def register(name: str, summary: str, paper: str):
    def deco(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        REGISTRY[name] = StrategyInfo(name, cls, summary, paper)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def get_strategy(name: str) -> StrategyInfo:
    load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(REGISTRY))}") from None


def load_all() -> None:
    """Import every strategy module, which registers it. This is the one list of strategy modules."""
    from thinkscale.strategies import (  # noqa: F401
        adaptive_sc,
        auto,
        beam_search,
        best_of_n,
        budget_forcing,
        dvts,
        greedy,
        mcts,
        pal,
        rsa,
        sc_tir,
        self_consistency,
        self_refine,
        weighted_sc,
    )


# ---------------------------------------------------------------------- knobs and specs


@dataclass(frozen=True)
class KnobInfo:
    """One knob of a strategy: a field of its dataclass. ``type`` is the resolved annotation (``int``, ``float``,
    ``bool``, ``str``, an Enum class, ``X | None``, or something that cannot be written as text); ``default`` is
    None when the knob has none (then ``required`` is True)."""

    name: str
    type: Any
    default: Any
    required: bool = False

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def knobs(name: str) -> dict[str, KnobInfo]:
    """The knobs of the strategy registered as ``name``, in declaration order (its dataclass fields)."""
    factory = get_strategy(name).factory
    if not dataclasses.is_dataclass(factory):
        return {}
    hints = typing.get_type_hints(factory)
    out = {}
    for f in dataclasses.fields(factory):
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        out[f.name] = KnobInfo(f.name, hints.get(f.name, object), default, required)
    return out


def _optional_inner(t: Any) -> Any | None:
    """``X`` for an annotation ``X | None`` (one non-None member), else None."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(t) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(t)) == 2:
            return members[0]
    return None


def type_name(t: Any) -> str:
    """How a knob's type is shown to users (CLI help, errors)."""
    inner = _optional_inner(t)
    if inner is not None:
        return f"{type_name(inner)} or none"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "|".join(str(m.value) for m in t)
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(t, "not settable as text")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def coerce_knob(strategy: str, knob: KnobInfo, value: Any) -> Any:
    """``value`` as the knob's declared type. Strings are parsed (``"8"`` -> 8, ``"true"`` -> True, an Enum's
    value -> the member, ``"none"`` -> None for an optional knob); other values must already have the type (an int
    is accepted for a float). Raises ValueError naming the strategy, the knob and what it accepts."""
    t = knob.type

    def bad(why: str = "") -> ValueError:
        return ValueError(f"knob {knob.name!r} of strategy {strategy!r} must be {type_name(t)}, got {value!r}"
                          + (f" ({why})" if why else ""))

    inner = _optional_inner(t)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        t = inner
    if isinstance(t, type) and issubclass(t, enum.Enum):
        if isinstance(value, t):
            return value
        if isinstance(value, str):
            for m in t:
                if str(m.value) == value.strip():
                    return m
        raise bad()
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("write true or false")
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad("not an integer") from None
        raise bad()
    if t is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad("not a number") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise bad("not a finite number")
            return float(value)
        raise bad()
    if t is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise ValueError(f"knob {knob.name!r} of strategy {strategy!r} has type {t!r}, which cannot be set this way; "
                     "construct the strategy in Python instead")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name`` or ``name:knob=value,knob=value`` into the name and the knob strings (not yet coerced)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("the strategy spec is empty: write NAME or NAME:KNOB=VALUE,KNOB=VALUE")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"strategy spec {spec!r} has no strategy name before ':'")
    values: dict[str, str] = {}
    if sep:
        if not rest.strip():
            raise ValueError(f"strategy spec {spec!r} has nothing after ':'; write {name}:KNOB=VALUE,... "
                             f"or just {name}")
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key:
                raise ValueError(f"strategy spec {spec!r}: {item.strip()!r} is not KNOB=VALUE")
            if not value:
                raise ValueError(f"strategy spec {spec!r}: knob {key!r} has an empty value")
            if key in values:
                raise ValueError(f"strategy spec {spec!r} sets knob {key!r} twice")
            values[key] = value
    return name, values


def resolve_knobs(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check ``values`` against the knobs of strategy ``name`` and coerce each to its type (see ``coerce_knob``)."""
    known = knobs(name)
    out = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"strategy {name!r} has no knob {key!r}; its knobs are "
                             f"{', '.join(known) or 'none'}")
        out[key] = coerce_knob(name, known[key], value)
    return out


def build_strategy(spec: str, **overrides: Any) -> Any:
    """The strategy a spec names, with its knobs set.

    ``spec`` is ``NAME`` or ``NAME:KNOB=VALUE,KNOB=VALUE`` (``best-of-n:verifier=pyes,n_samples=8``); values are
    parsed by the knob's declared type (``coerce_knob``). ``overrides`` set knobs too (typed values or strings) and
    win over the spec. Unknown strategies and knobs, and values that do not parse or that the strategy refuses,
    raise ValueError naming them.
    """
    name, values = parse_spec(spec)
    kwargs = resolve_knobs(name, {**values, **overrides})
    try:
        return get_strategy(name).factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy {name!r}: {e}") from None


# Knobs whose value names a file the strategy reads (a trained PRM head, an ``auto`` policy): its content changes
# results (eval puts its sha256 in a run's identity), and it lives on the machine that runs the strategy (a server
# lets only its operator set it).
FILE_KNOBS = frozenset({"verifier_path", "policy"})


def check_int(name: str, value: object, *, low: int = 1) -> None:
    """A count or length knob: an integer >= ``low`` (a bool is refused: True is not one sample)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_top_p(value: object) -> None:
    """Nucleus sampling's mass: a number in (0, 1]."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {value!r}")


# the knobs that count samples, in order of preference: ``-n`` in the CLI and ``NAME-N`` on the server set the first
COUNT_KNOBS = ("n_samples", "population", "beam_width", "n_candidates", "n_rollouts")


def count_knob(name: str) -> str | None:
    """The sample-count knob of strategy ``name`` (the first of ``COUNT_KNOBS`` it has), None if it has none."""
    k = knobs(name)
    return next((c for c in COUNT_KNOBS if c in k), None)


def budget_knob(name: str) -> str | None:
    """The knob a budget sweep sets for strategy ``name`` (its ``budget_knob`` ClassVar), None if it has none."""
    return getattr(get_strategy(name).factory, "budget_knob", None)


def budget_scale(name: str, max_tokens: int) -> int:
    """What one unit of a sweep budget is worth to strategy ``name``'s budget knob: ``max_tokens`` (one chain's
    worth of tokens) for a knob that counts tokens (``budget_in_tokens``), else 1 (samples, rounds, beams, ...)."""
    return max_tokens if getattr(get_strategy(name).factory, "budget_in_tokens", False) else 1


def candidates_from(completion: Completion) -> list[Candidate]:
    """One Candidate per sample, with its extracted answer and (when requested) the generator's logprobs."""
    return [Candidate(text=s.text, answer=extract_answer(s.text), completion_tokens=s.completion_tokens,
                      finish_reason=s.finish_reason, logprobs=s.logprobs) for s in completion.samples]


def charge(ledger: Ledger, role: Role, completions: Sequence[Completion]) -> None:
    for c in completions:
        ledger.charge(role, c.usage)


def majority_vote(answers: Sequence[str | None], rng: random.Random) -> tuple[str | None, dict[str, int], bool]:
    """Most frequent normalised answer; ties are broken by ``rng`` among the tied answers (sorted first, so the
    outcome depends only on the seed). Returns (winner, counts, was_tie). ``None`` answers do not vote."""
    counts = Counter(a for a in (normalize_answer(x) for x in answers) if a is not None)
    if not counts:
        return None, {}, False
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    return (tied[0] if len(tied) == 1 else rng.choice(tied)), dict(counts), len(tied) > 1


def affordable_samples(budget: Budget, ledger: Ledger, wanted: int, max_tokens: int) -> int:
    """How many samples of ``max_tokens`` each fit in what is left of the budget (worst case), up to ``wanted``.
    Zero when no call is left or the time is up."""
    n = wanted
    rem = budget.remaining_completion_tokens(ledger)
    if rem is not None:
        n = min(n, max(0, rem) // max_tokens)
    if not fits(budget, ledger, completion_tokens=0, calls=1):
        n = 0
    return n


def remaining_calls(budget: Budget, ledger: Ledger) -> int | None:
    """Backend calls (of every role) left in the budget; None = no limit."""
    if budget.max_calls is None:
        return None
    return max(0, budget.max_calls - ledger.total().calls)


def fits(budget: Budget, ledger: Ledger, *, completion_tokens: int, calls: int = 1) -> bool:
    """Whether a step that may generate up to ``completion_tokens`` (worst case) and charge ``calls`` calls still
    fits in the budget, with time left to start it. A strategy checks this before every backend call."""
    rem = budget.remaining_completion_tokens(ledger)
    if rem is not None and completion_tokens > rem:
        return False
    left = remaining_calls(budget, ledger)
    if left is not None and calls > left:
        return False
    return budget.max_seconds is None or ledger.elapsed_seconds() < budget.max_seconds


def new_seed(rng: random.Random) -> int:
    """A GenRequest seed drawn from the caller's rng (so one rng seed replays a whole run)."""
    return rng.randrange(2**31 - 1)


def chosen_by_vote(candidates: Sequence[Candidate], winner: str | None) -> Candidate | None:
    """The first candidate whose normalised answer is the vote's ``winner`` (None when nobody answered)."""
    if winner is None:
        return None
    return next((c for c in candidates if c.answer is not None and normalize_answer(c.answer) == winner), None)
