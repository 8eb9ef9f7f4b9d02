"""Step-level beam search with a process verifier: extend M partial solutions one reasoning step at a time and keep
the M best by aggregated step score.

Snell et al., "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters",
https://arxiv.org/abs/2408.03314 (section 5; the beam search of huggingface/search-and-learn).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from thinkscale.strategies._steps import Node, StepKnobs, StepTree, distinct, enum_knob
from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.events import event, migrates
from thinkscale.strategies.run import Run
from thinkscale.types import Event, Result
from thinkscale.verifiers.aggregate import Selection, StepAggregation


@event("beam_step")
@dataclass(frozen=True)
class BeamStep(Event):
    """One round of beam search: the new children, the kept ones, the finished ones (tree node indices: node i is
    candidate i - 1) and the width left."""

    step: int
    children: tuple[int, ...]
    kept: tuple[int, ...]
    finished: tuple[int, ...]
    width: int


@migrates("step")
def _old_beam_step(d: dict[str, Any]) -> BeamStep | None:
    """A beam search ``step`` of a store written before the typed events (the same fields, node indices)."""
    if "width" not in d:
        return None
    return BeamStep(int(d["step"]), tuple(d["children"]), tuple(d["kept"]), tuple(d["finished"]), int(d["width"]))


def top_m(nodes: Sequence[Node], m: int, how: StepAggregation, rng: random.Random) -> list[Node]:
    """The ``m`` nodes with the highest aggregated score, best first. Equal scores are ordered by ``rng`` (a seeded
    shuffle before a stable sort), so which of two tied nodes survives depends only on the seed."""
    order = list(nodes)
    rng.shuffle(order)
    order.sort(key=lambda n: -n.score(how))
    return order[:m]


@register("beam", "step-level beam search: keep the top-M partial solutions by PRM step score",
          "https://arxiv.org/abs/2408.03314")
@dataclass(frozen=True)
class BeamSearch(StepKnobs):
    """Args (besides the step knobs of ``StepKnobs``: verifier, step_aggregation, step_delimiter, max_step_tokens,
    max_steps, temperature, top_p):
        beam_width: M, the partial solutions kept after each step.
        expansions_per_beam: k, next steps sampled from each kept solution (the first step: M x k from the problem).
        selection: how the answer is chosen among the finished solutions (argmax of the aggregated score, or a
            (weighted) vote).

    Each round samples k next steps for every beam in one batched call, scores the children with the verifier and
    keeps the top M of them by aggregated score (ties broken by ``rng``; duplicate solutions count once). Kept
    children that are terminal (a final answer, end of sequence, ``max_steps``) are finished and the beam narrows by
    one for each, as in classic beam search; the search ends when M solutions are finished or no beam is left.

    Budget: a round's worst case is (beams x k) x ``max_step_tokens`` completion tokens, one call per beam plus the
    verifier's calls. A round that does not fit in full is cut down (the best beams are expanded first); when nothing
    fits the search stops with ``stop_reason="budget"`` and answers from what it has (finished solutions, else the
    current beams).

    >>> execute(BeamSearch(beam_width=4, verifier="prm", verifier_path="prm.json"),  # doctest: +SKIP
    ...         problem, backend, Budget(max_completion_tokens=8000), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "beam_width"

    beam_width: int = 4
    expansions_per_beam: int = 4
    selection: Selection = Selection.ARGMAX

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("beam_width", self.beam_width)
        check_int("expansions_per_beam", self.expansions_per_beam)
        object.__setattr__(self, "selection", enum_knob("selection", Selection, self.selection))

    def run(self, ctx: Run) -> Result:
        tree = StepTree(ctx, self, ctx.verifier(self.verifier, self.verifier_path))
        k = self.expansions_per_beam
        beams: list[Node] = [tree.nodes[0]]
        width = self.beam_width
        finished: list[Node] = []
        step = 0
        while beams and width > 0:
            wanted = [(0, width * k)] if step == 0 else [(b.index, k) for b in beams]
            plan = tree.affordable(wanted, self.max_step_tokens)
            if not plan:
                tree.stop_for_budget(f"a step of {self.max_step_tokens} tokens for {len(beams)} beam(s) does not fit")
                break
            children = distinct([c for group in tree.expand(plan) for c in group])
            tree.score(children)
            kept = top_m(children, width, self.step_aggregation, ctx.rng)
            done = [c for c in kept if c.terminal is not None]
            finished.extend(done)
            width -= len(done)
            beams = [c for c in kept if c.terminal is None]
            ctx.note(BeamStep(step, tuple(c.index for c in children), tuple(c.index for c in kept),
                              tuple(c.index for c in done), width))
            step += 1
        return tree.result(tree.choose(finished or beams, self.selection))
