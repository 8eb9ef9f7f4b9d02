"""The Strategy protocol, the registry of strategies, and the helpers every strategy shares.

A strategy is a frozen dataclass of knobs with ``run(self, ctx: Run) -> Result`` (``thinkscale.strategies.run``):
the run context makes every call (checked against the budget, charged, recorded as a typed event), so the strategy
keeps only its algorithm. It stops early with ``stop_reason="budget"`` rather than overspend, draws all randomness
from ``ctx.rng``, and returns every candidate. ClassVars describe it to the harness: ``budget_knob`` (the knob a
budget sweep varies), optionally ``budget_in_tokens``, ``prefix_consistent`` with ``prefix_selection`` (how its
answer is chosen among the first k samples, so a sweep scores smaller budgets from one run) and ``count_knob``.
A knob whose value names a file or a resource on the machine that runs it is declared with ``operator_knob()``: a
server lets only its operator set it.

Registration: ``@register(name, summary, paper)`` on the class. Every module in this package is imported on the
first registry lookup (``load_all``), and strategies of other packages are found by their entry point in the group
``thinkscale.strategies`` (``name = "package.module"``): a new strategy is one file.

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
import importlib
import importlib.metadata
import logging
import math
import pkgutil
import random
import re
import types
import typing
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from thinkscale.answers.extract import normalize_answer
from thinkscale.types import Candidate, Result
from thinkscale.verifiers.aggregate import Selection
from thinkscale.verifiers.base import Verifier, check_verifier_spec, require_solve_safe

if TYPE_CHECKING:
    from thinkscale.strategies.run import Run

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "thinkscale.strategies"


class Strategy(Protocol):
    """What every strategy is (``register`` also gives its class ``name``, read with ``strategy_name``)."""

    # the knob a budget sweep sets (n_samples, max_rounds, ...): the eval harness varies it
    budget_knob: ClassVar[str]
    # optional, default False: the budget knob counts tokens (auto's budget_tokens, budget forcing's thinking
    # tokens), so a sweep's budget k sets it to k chains' worth: k x the sweep's max_tokens (see budget_scale)
    budget_in_tokens: ClassVar[bool]

    def run(self, ctx: Run) -> Result: ...


S = TypeVar("S", bound=type)


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    factory: type
    summary: str
    paper: str


REGISTRY: dict[str, StrategyInfo] = {}


def register(name: str, summary: str, paper: str) -> Callable[[S], S]:
    def deco(cls: S) -> S:
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


_loaded = False


def load_all() -> None:
    """Import every module of this package (which registers its strategies) and every module named by an entry
    point of the group ``thinkscale.strategies``. No list to keep: a new strategy file is found."""
    global _loaded
    if _loaded:
        return
    import thinkscale.strategies as package

    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{mod.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except Exception as e:  # a broken plugin must not take the built-in strategies down
            log.error("strategy plugin %s (%s) failed to import: %s", ep.name, ep.value, e)
    _loaded = True


# ---------------------------------------------------------------------- knobs and specs


OPERATOR = "operator"


T = TypeVar("T")


def operator_knob(default: T) -> T:
    """A knob whose value names a file or a resource of the machine that runs the strategy (a trained head, a
    policy file, a sandbox): its content changes results (eval puts a file's sha256 in a run's identity), and a
    server lets only its operator set it."""
    return typing.cast(T, dataclasses.field(default=default, metadata={OPERATOR: True}))


@dataclass(frozen=True)
class KnobInfo:
    """One knob of a strategy: a field of its dataclass. ``type`` is the resolved annotation (``int``, ``float``,
    ``bool``, ``str``, an Enum class, ``X | None``, or something that cannot be written as text); ``default`` is
    None when the knob has none (then ``required`` is True)."""

    name: str
    type: Any
    default: Any
    required: bool = False
    operator: bool = False

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
        out[f.name] = KnobInfo(f.name, hints.get(f.name, object), default, required, bool(f.metadata.get(OPERATOR)))
    return out


def operator_knobs(name: str) -> frozenset[str]:
    """The knobs of strategy ``name`` declared with ``operator_knob``."""
    return frozenset(k for k, info in knobs(name).items() if info.operator)


def _optional_inner(t: Any) -> Any | None:
    """``X`` for an annotation ``X | None`` (one non-None member), else None."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(t) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(t)) == 2:
            return members[0]
    return None


def _text_or_object(t: Any) -> bool:
    """``str | SomeClass`` (e.g. a verifier knob: a registered name as text, or an object from Python)."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = typing.get_args(t)
        return str in args and type(None) not in args and len(args) == 2
    return False


def type_name(t: Any) -> str:
    """How a knob's type is shown to users (CLI help, errors)."""
    if _text_or_object(t):
        other = next(a for a in typing.get_args(t) if a is not str)
        return f"str (a name) or a {getattr(other, '__name__', other)} object"
    inner = _optional_inner(t)
    if inner is not None:
        return f"{type_name(inner)} or none"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "|".join(str(m.value) for m in t)
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(t, "not settable as text")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def coerce_knob(strategy: str, knob: KnobInfo, value: object) -> object:
    """``value`` as the knob's declared type. Strings are parsed (``"8"`` -> 8, ``"true"`` -> True, an Enum's
    value -> the member, ``"none"`` -> None for an optional knob); other values must already have the type (an int
    is accepted for a float). Raises ValueError naming the strategy, the knob and what it accepts."""
    t = knob.type

    def bad(why: str = "") -> ValueError:
        return ValueError(f"knob {knob.name!r} of strategy {strategy!r} must be {type_name(t)}, got {value!r}"
                          + (f" ({why})" if why else ""))

    if _text_or_object(t):
        return value.strip() if isinstance(value, str) else value  # an object is checked by the strategy
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


_SPEC_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def _unescape(value: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` in a spec value are a newline, a tab and a backslash (a spec is one line, and its
    values are stripped: ``think_start=<think>\\n``); any other backslash stays as written."""
    return re.sub(r"\\([nt\\])", lambda m: _SPEC_ESCAPES[m.group(1)], value)


def _escape(value: str) -> str:
    """The inverse of ``_unescape``: a newline and a tab written as ``\\n`` and ``\\t``, and a backslash doubled where
    it would otherwise start one of the escapes (``C:\\models`` stays as it is)."""
    return re.sub(r"\\(?=[nt\\\n\t])|\n|\t", lambda m: {"\n": "\\n", "\t": "\\t"}.get(m.group(), "\\\\"), value)


def format_spec(name: str, values: Mapping[str, str]) -> str:
    """``NAME`` or ``NAME:KNOB=VALUE,...``: the spec that ``parse_spec`` reads back as ``(name, values)``."""
    return name + (":" + ",".join(f"{k}={_escape(v)}" for k, v in values.items()) if values else "")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name`` or ``name:knob=value,knob=value`` into the name and the knob strings (not yet coerced);
    ``\\n``, ``\\t`` and ``\\\\`` in a value are decoded after it is stripped (``_unescape``)."""
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
            values[key] = _unescape(value)
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


def build_strategy(spec: str, **overrides: Any) -> Strategy:
    """The strategy a spec names, with its knobs set.

    ``spec`` is ``NAME`` or ``NAME:KNOB=VALUE,KNOB=VALUE`` (``best-of-n:verifier=pyes,n_samples=8``); values are
    parsed by the knob's declared type (``coerce_knob``). ``overrides`` set knobs too (typed values or strings) and
    win over the spec. Unknown strategies and knobs, and values that do not parse or that the strategy refuses,
    raise ValueError naming them.
    """
    name, values = parse_spec(spec)
    kwargs = resolve_knobs(name, {**values, **overrides})
    try:
        return typing.cast(Strategy, get_strategy(name).factory(**kwargs))
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy {name!r}: {e}") from None


# Knobs whose value names a file the strategy reads (a trained PRM head, an ``auto`` policy): its content changes
# results, so eval puts its sha256 in a run's identity.
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
    """The sample-count knob of strategy ``name``: its ``count_knob`` ClassVar, else the first of ``COUNT_KNOBS``
    it has; None if it has none."""
    declared = getattr(get_strategy(name).factory, "count_knob", None)
    if declared is not None:
        return str(declared)
    k = knobs(name)
    return next((c for c in COUNT_KNOBS if c in k), None)


def prefix_selection(name: str) -> Selection | None:
    """How strategy ``name`` chooses among its first k samples when it is ``prefix_consistent`` (its
    ``prefix_selection`` ClassVar; a ``selection`` knob overrides it per instance); None: not declared."""
    return getattr(get_strategy(name).factory, "prefix_selection", None)


def budget_knob(name: str) -> str | None:
    """The knob a budget sweep sets for strategy ``name`` (its ``budget_knob`` ClassVar), None if it has none."""
    return getattr(get_strategy(name).factory, "budget_knob", None)


def budget_scale(name: str, max_tokens: int) -> int:
    """What one unit of a sweep budget is worth to strategy ``name``'s budget knob: ``max_tokens`` (one chain's
    worth of tokens) for a knob that counts tokens (``budget_in_tokens``), else 1 (samples, rounds, beams, ...)."""
    return max_tokens if getattr(get_strategy(name).factory, "budget_in_tokens", False) else 1


def majority_vote(answers: Sequence[str | None], rng: random.Random) -> tuple[str | None, dict[str, int], bool]:
    """Most frequent normalised answer; ties are broken by ``rng`` among the tied answers (sorted first, so the
    outcome depends only on the seed). Returns (winner, counts, was_tie). ``None`` answers do not vote."""
    counts = Counter(a for a in (normalize_answer(x) for x in answers) if a is not None)
    if not counts:
        return None, {}, False
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    return (tied[0] if len(tied) == 1 else rng.choice(tied)), dict(counts), len(tied) > 1


def check_verifier_knob(verifier: str | Verifier, verifier_path: str | None) -> None:
    """A strategy's verifier knob: a registered name (checked now, built by the run on its backend) or a verifier
    object (used as it is; it must not read the reference answer, and takes no ``verifier_path``)."""
    if isinstance(verifier, str):
        check_verifier_spec(verifier, verifier_path)
        return
    require_solve_safe(verifier)
    if verifier_path is not None:
        raise ValueError("verifier_path configures a verifier named by a string; a verifier object is used as it is")


def verifier_label(verifier: str | Verifier) -> str:
    return verifier if isinstance(verifier, str) else getattr(verifier, "name", type(verifier).__name__)


def voted_index(candidates: Sequence[Candidate], winner: str | None,
                among: Sequence[int] | None = None) -> int | None:
    """The index of the first candidate (of ``among``, default all) whose normalised answer is the vote's
    ``winner`` (None when nobody answered)."""
    if winner is None:
        return None
    for i in (range(len(candidates)) if among is None else among):
        a = candidates[i].answer
        if a is not None and normalize_answer(a) == winner:
            return i
    return None
