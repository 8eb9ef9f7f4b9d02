"""Mixture-of-agents: layers of proposers, each layer reading the previous layer's answers, and an aggregator that
writes the final answer.

Wang et al., "Mixture-of-Agents Enhances Large Language Model Capabilities", https://arxiv.org/abs/2406.04692 (open
models only: 65.1% on AlpacaEval 2.0 against GPT-4o's 57.5%); optillm's ``moa``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar

from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.strategies.voting import vote_result
from thinkscale.types import Candidate, Event, GenRequest, Message, Problem, Result
from thinkscale.verifiers.base import problem_text

# Wang et al.'s aggregate-and-synthesize prompt (their appendix), with the problem restated for small models and
# the answer format of Qwen's math prompt (an earlier "\boxed{ANSWER}" was copied verbatim by the 0.5B).
DEFAULT_AGGREGATE_PROMPT = (
    "You have been provided with a set of responses from various models to the latest user query. Your task is to "
    "synthesize these responses into a single, high-quality response. It is crucial to critically evaluate the "
    "information provided in these responses, recognizing that some of it may be biased or incorrect. Your "
    "response should not simply replicate the given answers but should offer a refined, accurate, and "
    "comprehensive reply to the instruction.\n\nQuery:\n{problem}\n\nResponses from models:\n{responses}\n\n"
    "Reason step by step, and put your final answer within \\boxed{{}}.")


@event("moa_layer")
@dataclass(frozen=True)
class MoaLayer(Event):
    """One layer: its proposers' models (empty string: the run's own) and temperatures, the candidates they wrote,
    and the candidates of the previous layer they read (none for the first)."""

    layer: int
    models: tuple[str, ...]
    temperatures: tuple[float, ...]
    wrote: tuple[int, ...]
    read: tuple[int, ...]


@event("moa_aggregate")
@dataclass(frozen=True)
class MoaAggregate(Event):
    """The aggregator's call: its model, the candidates it read and the candidate it wrote (None: the budget left
    no room for it and the last layer's answers were voted on instead). ``fell_back``: the aggregator wrote no
    answer and the last layer's majority answered (``fallback="vote"``)."""

    model: str
    read: tuple[int, ...]
    wrote: int | None
    fell_back: bool = False


FALLBACKS = ("vote", "none")


def _names(text: str, knob: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split("|")) if text.strip() else ()
    if any(not x for x in items):
        raise ValueError(f"{knob} has an empty entry in {text!r}: write NAME|NAME|... (or nothing for the run's "
                         "own model)")
    return items


def aggregate_messages(problem: Problem, responses: list[str], template: str) -> tuple[Message, ...]:
    """The problem's system messages, then one user turn with the problem and the responses (numbered)."""
    body = "\n\n".join(f"{i}. {text.strip()}" for i, text in enumerate(responses, 1))
    user = template.replace("{{", "\0").replace("}}", "\1").replace("{problem}", problem_text(problem)) \
        .replace("{responses}", body).replace("\0", "{").replace("\1", "}")
    return (*(m for m in problem.messages if m.role == "system"), Message("user", user))


@register("moa", "mixture-of-agents: layers of proposers (several models or temperatures), each reading the "
          "previous layer's answers; an aggregator writes the answer", "https://arxiv.org/abs/2406.04692")
@dataclass(frozen=True)
class MixtureOfAgents:
    """Args:
        n_proposers: proposers per layer. The budget knob.
        layers: proposer layers (1 = proposers answer the problem, then the aggregator).
        models: the proposers' models, ``|``-separated, cycled over the proposers ("" = the run's own model for
            all); a name is resolved by the run (``thinkscale solve --model`` loads the others from the catalogue).
            Each call is charged to its model (``Ledger.by_model``) with that model's FLOPs.
        temperatures: the proposers' temperatures, ``|``-separated, cycled (one model at several temperatures is
            an ensemble too).
        aggregator_model: the aggregator's model ("" = the run's own); aggregator_temperature its temperature.
        max_tokens: completion tokens per proposal and for the aggregation. top_p: sampling knob.
        aggregate_prompt: the user turn of layers after the first and of the aggregator; ``{problem}`` and
            ``{responses}`` are replaced, ``{{``/``}}`` are literal braces.
        fallback: what answers when the aggregator's text has no answer: "vote" (the last layer's majority; the
            trace's ``moa_aggregate`` says ``fell_back``) or "none" (no answer, as the aggregator wrote).

    The proposers of one layer that share a model go in one batched call. Budget: a layer starts only if the whole
    layer and the aggregation fit in the worst case (``max_tokens`` each, one call per request); otherwise the
    aggregator reads the last complete layer (``stop_reason="budget"``). If the first layer and the aggregation do
    not fit, nothing runs. Should the clock run out before the aggregation, the last layer's majority answers.

    >>> execute(MixtureOfAgents(n_proposers=3, layers=2, temperatures="0.3|0.7|1.0"), problem, backend,
    ...         Budget(max_completion_tokens=8 * 512), rng=random.Random(0))  # doctest: +SKIP
    """

    budget_knob: ClassVar[str] = "n_proposers"

    n_proposers: int = 3
    layers: int = 2
    models: str = ""
    temperatures: str = "0.7"
    aggregator_model: str = ""
    aggregator_temperature: float = 0.0
    max_tokens: int = 512
    top_p: float = 0.95
    aggregate_prompt: str = DEFAULT_AGGREGATE_PROMPT
    fallback: str = "vote"

    def __post_init__(self) -> None:
        check_int("n_proposers", self.n_proposers)
        check_int("layers", self.layers)
        check_int("max_tokens", self.max_tokens)
        check_top_p(self.top_p)
        _names(self.models, "models")
        temps = _names(self.temperatures, "temperatures")
        if not temps:
            raise ValueError("temperatures is empty: give at least one, e.g. 0.7 or 0.3|0.7|1.0")
        for t in temps:
            try:
                v = float(t)
            except ValueError:
                raise ValueError(f"temperatures: {t!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"temperatures: {t!r} must be a finite number >= 0")
        if not math.isfinite(self.aggregator_temperature) or self.aggregator_temperature < 0:
            raise ValueError(f"aggregator_temperature must be a finite number >= 0, got {self.aggregator_temperature}")
        if "{responses}" not in self.aggregate_prompt:
            raise ValueError("aggregate_prompt must contain {responses}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")

    def _proposers(self) -> list[tuple[str, float]]:
        models = _names(self.models, "models") or ("",)
        temps = [float(t) for t in _names(self.temperatures, "temperatures")]
        return [(models[i % len(models)], temps[i % len(temps)]) for i in range(self.n_proposers)]

    def _layer(self, ctx: Run, layer: int, previous: list[int], cands: list[Candidate]) -> list[int]:
        """One layer of proposals (one batched call per model); returns the new candidates' indices."""
        proposers = self._proposers()
        if previous:
            messages = aggregate_messages(ctx.problem, [cands[i].text for i in previous], self.aggregate_prompt)
        else:
            messages = ctx.problem.messages
        by_model: dict[str, list[int]] = defaultdict(list)
        for p, (model, _) in enumerate(proposers):
            by_model[model].append(p)
        wrote: dict[int, Candidate] = {}
        for model, who in by_model.items():
            reqs = [GenRequest(messages=messages, temperature=proposers[p][1], top_p=self.top_p,
                               max_tokens=self.max_tokens, seed=ctx.seed()) for p in who]
            completions = ctx.generate(reqs, tag=f"layer {layer}", model=model or None)
            for p, c in zip(who, completions, strict=True):
                wrote[p] = candidates_from(c)[0]
        first = len(cands)
        cands.extend(wrote[p] for p in range(len(proposers)))
        new = list(range(first, len(cands)))
        ctx.note(MoaLayer(layer, tuple(m for m, _ in proposers), tuple(t for _, t in proposers), tuple(new),
                          tuple(previous)))
        return new

    def run(self, ctx: Run) -> Result:
        n = self.n_proposers
        aggregation = self.max_tokens
        cands: list[Candidate] = []
        last: list[int] = []
        for layer in range(1, self.layers + 1):
            if not ctx.fits(completion_tokens=n * self.max_tokens + aggregation, calls=n + 1):
                break
            last = self._layer(ctx, layer, last, cands)
        if not last:
            ctx.stop("budget", "budget allows no layer of proposals and the aggregation")
            return ctx.result((), stop_reason="budget")
        layers_done = len(cands) // n
        budget_hit = layers_done < self.layers
        if not ctx.fits(completion_tokens=aggregation, calls=1):  # the clock ran out between the checks
            ctx.note(MoaAggregate(self.aggregator_model, tuple(last), None))
            return vote_result(ctx, cands, budget_hit=True, voters=last)
        req = GenRequest(messages=aggregate_messages(ctx.problem, [cands[i].text for i in last],
                                                     self.aggregate_prompt),
                         temperature=self.aggregator_temperature, top_p=self.top_p, max_tokens=aggregation,
                         seed=ctx.seed())
        (final,) = candidates_from(ctx.generate([req], tag="aggregate", model=self.aggregator_model or None)[0])
        cands.append(final)
        fell_back = final.answer is None and self.fallback == "vote"
        ctx.note(MoaAggregate(self.aggregator_model, tuple(last), len(cands) - 1, fell_back))
        if budget_hit:
            ctx.stop("budget", f"{layers_done} of {self.layers} layers fit with the aggregation")
        if fell_back:
            return vote_result(ctx, cands, budget_hit=budget_hit, voters=last)
        return ctx.result(cands, chosen_index=len(cands) - 1, stop_reason="budget" if budget_hit else "done")
