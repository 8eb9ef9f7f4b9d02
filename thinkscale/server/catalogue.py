"""Which strategies the server offers and how a request names one.

The catalogue is read from the strategy registry (``thinkscale.strategies.base.REGISTRY``), so a strategy registered
there shows up in ``/v1/models`` and becomes requestable with no change here. Strategy ids:

- ``<name>``: a registered strategy with its default knobs (``greedy``, ``self-consistency``);
- ``<name>-N`` or ``<alias>-N``: N sets the strategy's sample-count knob (the first of ``COUNT_KNOBS`` it has),
  1 <= N <= ``max_count``; ``sc`` is short for ``self-consistency``, so ``sc-8`` is 8 voted samples.

``reasoning_effort`` maps to a strategy id and a completion-token budget in units of the per-chain ``max_tokens``
(``EFFORTS``), documented in the README and in ``/v1/models``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thinkscale.server.errors import ApiError
from thinkscale.strategies import base as strategies

COUNT_KNOBS = strategies.COUNT_KNOBS
ALIASES = {"sc": "self-consistency"}
# The most samples one strategy run may take (N of "sc-N", a count knob set in thinkscale.params), unless the
# operator raises it; `thinkscale solve` applies the same cap (its --max-samples).
MAX_COUNT = 64


def counted_knobs(name: str) -> frozenset[str]:
    """Knobs of strategy ``name`` that multiply its work (samples, beams, agents, simulations, rounds): its sample
    count (``COUNT_KNOBS``, its declared ``count_knob``) and its budget knob unless that counts tokens. Each is held
    to ``MAX_COUNT`` (the server's ``max_count``; ``thinkscale solve --max-samples``): 100000 would run for hours."""
    known = strategies.knobs(name)
    out = {k for k in COUNT_KNOBS if k in known} | {k for k in (strategies.count_knob(name),) if k}
    budget = strategies.budget_knob(name)
    if budget and "tokens" not in budget and budget in known:
        out.add(budget)
    return frozenset(out)


def operator_knobs(name: str) -> frozenset[str]:
    """Knobs of strategy ``name`` that name files, URLs or resources of the server's machine (a PRM or policy file,
    a PRM server, the code sandbox's limits and pool): the operator sets them (``thinkscale serve
    --strategy-knobs``), requests cannot. Read from the strategy's own declaration (``operator_knob(...)``), so a
    new strategy's resource knobs are protected without a list here."""
    return strategies.operator_knobs(name)


@dataclass(frozen=True)
class Effort:
    strategy: str  # a strategy id
    budget_chains: int  # completion-token budget = budget_chains x per-chain max_tokens


EFFORTS: dict[str, Effort] = {
    "low": Effort("greedy", 1),
    "medium": Effort("sc-4", 4),
    "high": Effort("sc-16", 16),
}
# OpenAI's other effort names, so clients that send them get the nearest level instead of an error.
EFFORT_ALIASES = {"none": "low", "minimal": "low", "xhigh": "high", "max": "high"}


@dataclass(frozen=True)
class StrategyChoice:
    id: str  # as the client wrote it (canonical form), e.g. "sc-8"
    name: str  # registry name, e.g. "self-consistency"
    count: int | None  # N of "<name>-N"


class StrategyCatalogue:
    """The strategies a server offers. ``strategy_knobs``: the operator's settings, one spec per strategy
    (``auto:policy=policy.json``, ``best-of-n:verifier=prm,verifier_path=prm.json``): every request for that strategy
    starts from them. They are the only way to set a strategy's ``operator_knobs``; the others a request may still
    override. Each is checked here, by building the strategy once, so a bad setting stops the server before it
    loads a model.
    """

    def __init__(self, *, aliases: dict[str, str] | None = None, max_count: int = MAX_COUNT,
                 strategy_knobs: Sequence[str] = ()) -> None:
        strategies.load_all()  # importing the strategy modules registers them (one list, in strategies.base)
        self.registry = dict(strategies.REGISTRY)
        self.aliases = {a: n for a, n in (ALIASES if aliases is None else aliases).items() if n in self.registry}
        self.max_count = max_count
        self.pinned: dict[str, dict[str, Any]] = {}
        for spec in strategy_knobs:
            try:
                name, values = strategies.parse_spec(spec)
            except ValueError as e:
                raise ValueError(f"--strategy-knobs: {e}") from None
            if name not in self.registry:
                raise ValueError(f"--strategy-knobs {spec!r}: unknown strategy {name!r}; the strategies are "
                                 f"{', '.join(self.names())}")
            if name in self.pinned:
                raise ValueError(f"--strategy-knobs names {name!r} twice: give all its knobs in one spec")
            if not values:
                raise ValueError(f"--strategy-knobs {spec!r} sets no knob: write {name}:KNOB=VALUE,...")
            try:
                typed = strategies.resolve_knobs(name, values)
                self.registry[name].factory(**typed)
            except (TypeError, ValueError) as e:
                raise ValueError(f"--strategy-knobs {spec!r}: {e}") from None
            self.pinned[name] = typed

    def names(self) -> list[str]:
        return sorted(self.registry)

    def knobs(self, name: str) -> dict[str, strategies.KnobInfo]:
        if name not in self.registry:
            raise KeyError(name)
        return strategies.knobs(name)

    def count_knob(self, name: str) -> str | None:
        knobs = self.knobs(name)
        return next((k for k in COUNT_KNOBS if k in knobs), None)

    def grammar(self) -> str:
        counted = [n for n in self.names() if self.count_knob(n)]
        forms = [*self.names(), *(f"{n}-N" for n in counted),
                 *(f"{a}-N" for a, n in sorted(self.aliases.items()) if n in counted)]
        return f"{', '.join(forms)} (N = samples, 1..{self.max_count})"

    def unknown(self, text: str, param: str) -> ApiError:
        return ApiError(400, f"unknown strategy {text!r} in '{param}': this server offers "
                             f"{', '.join(self.names())}; write one as {self.grammar()}; see GET /v1/models",
                        param=param, code="unknown_strategy")

    def parse(self, text: str, *, param: str) -> StrategyChoice:
        name = self.aliases.get(text, text)
        if name in self.registry:
            return StrategyChoice(text, name, None)
        m = re.fullmatch(r"(.+?)-(\d{1,6})", text)
        if m is None:
            raise self.unknown(text, param)
        base, n = self.aliases.get(m.group(1), m.group(1)), int(m.group(2))
        if base not in self.registry:
            raise self.unknown(text, param)
        if self.count_knob(base) is None:
            raise ApiError(400, f"strategy {base!r} has no sample count: write it as {base!r} without '-{n}'",
                           param=param, code="unknown_strategy")
        if not 1 <= n <= self.max_count:
            raise ApiError(400, f"{text!r}: the sample count must be in 1..{self.max_count}, got {n}",
                           param=param, code="invalid_value")
        return StrategyChoice(text, base, n)

    def build(self, choice: StrategyChoice, knobs: dict[str, tuple[Any, str]]) -> Any:
        """The strategy instance. ``knobs``: knob -> (value, the request field that set it, for errors). Knobs the
        strategy does not have are skipped when they came from a generic field (temperature, top_p, max_tokens),
        and are an error when the client named them in ``thinkscale.params``."""
        known = self.knobs(choice.name)
        kwargs: dict[str, Any] = dict(self.pinned.get(choice.name, {}))
        fields: dict[str, str] = {k: "model" for k in kwargs}
        count = self.count_knob(choice.name)
        if choice.count is not None and count is not None:
            kwargs[count], fields[count] = choice.count, "model"
        for k, (v, field) in knobs.items():
            if k not in known:
                if field.startswith("thinkscale.params"):
                    raise ApiError(400, f"strategy {choice.name!r} has no knob {k!r}; its knobs are "
                                        f"{', '.join(sorted(known)) or 'none'}", param=field, code="invalid_value")
                continue
            if k in operator_knobs(choice.name):
                raise ApiError(400, f"knob {k!r} of {choice.name!r} names a file or resource on the server: only "
                                    "the server's operator sets it (thinkscale serve --strategy-knobs "
                                    f"'{choice.name}:{k}=...')", param=field, code="invalid_value")
            if not _fits(v, known[k].type):
                raise ApiError(400, f"knob {k!r} of {choice.name!r} must be {_type_name(known[k].type)}, "
                                    f"got {v!r}", param=field, code="invalid_value")
            kwargs[k], fields[k] = v, field
        try:
            return self.registry[choice.name].factory(**kwargs)
        except (ValueError, TypeError) as e:
            msg = str(e)
            blamed = next((fields[k] for k in sorted(fields, key=len, reverse=True) if k in msg), "model")
            raise ApiError(400, f"{choice.name}: {msg}", param=blamed, code="invalid_value") from None

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            info = self.registry[name]
            operator = operator_knobs(name)
            out.append({
                "name": name,
                "summary": info.summary,
                "paper": info.paper,
                "ids": [name] + ([f"{name}-N"] + [f"{a}-N" for a, n in self.aliases.items() if n == name]
                                 if self.count_knob(name) else []),
                "count_knob": self.count_knob(name),
                # default: the operator's setting where there is one; operator_only: requests cannot set it
                "knobs": {k.name: {"type": _type_name(k.type),
                                   "default": _jsonable(self.pinned.get(name, {}).get(k.name, k.default)),
                                   "operator_only": k.name in operator}
                          for k in self.knobs(name).values()},
            })
        return out


def _fits(v: Any, t: Any) -> bool:
    if t is bool:
        return isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is float:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if t is str:
        return isinstance(v, str)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return isinstance(v, str) and v in {str(m.value) for m in t}  # the strategy turns the value into the member
    return False  # optional values, callables, nested objects: not settable over HTTP


def _type_name(t: Any) -> str:
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "one of " + ", ".join(repr(str(m.value)) for m in t)
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(t, "not settable")


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, int | float | str | bool) or v is None else repr(v)
