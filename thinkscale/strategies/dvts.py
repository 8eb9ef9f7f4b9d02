"""Diverse Verifier Tree Search: independent subtrees, each a greedy (width-1) step search guided by the verifier.

Beeching, Tunstall, Rush, "Scaling test-time compute with open models" (Hugging Face, 2024),
https://huggingface.co/spaces/HuggingFaceH4/blogpost-scaling-test-time-compute (DVTS extends the beam search of
Snell et al., https://arxiv.org/abs/2408.03314).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thinkscale.strategies._steps import Node, StepKnobs, StepTree, distinct, enum_knob
from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.beam_search import top_m
from thinkscale.strategies.events import event, migrates
from thinkscale.strategies.run import Run
from thinkscale.types import Event, Result
from thinkscale.verifiers.aggregate import Selection


@event("dvts_step")
@dataclass(frozen=True)
class DvtsStep(Event):
    """One round of DVTS: the subtrees expanded, their new children and their new heads (tree node indices)."""

    step: int
    subtrees: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    heads: tuple[int, ...]


@event("subtrees")
@dataclass(frozen=True)
class Subtrees(Event):
    """Each subtree's solution (tree node index; 0, the root: the subtree never took a step)."""

    solutions: tuple[int, ...]


@migrates("step")
def _old_dvts_step(d: dict[str, Any]) -> DvtsStep | None:
    """A DVTS ``step`` of a store written before the typed events (the same fields, node indices)."""
    if "heads" not in d:
        return None
    return DvtsStep(int(d["step"]), tuple(d["subtrees"]), tuple(tuple(g) for g in d["children"]), tuple(d["heads"]))


@register("dvts", "diverse verifier tree search: independent width-1 step searches, one answer each, then a vote",
          "https://huggingface.co/spaces/HuggingFaceH4/blogpost-scaling-test-time-compute")
@dataclass(frozen=True)
class DVTS(StepKnobs):
    """Args (besides the step knobs of ``StepKnobs``):
        n_subtrees: independent searches; each ends with one solution.
        expansions_per_step: k, next steps sampled from a subtree's current solution each round; the best-scored
            child (ties broken by ``rng``) becomes its solution. Subtrees never compare children with each other,
            which is what keeps them diverse (beam search would let one good prefix take every slot).
        selection: how the answer is chosen among the subtrees' solutions (default: verifier-weighted vote).

    All active subtrees expand in one batched call per round (each its own request and seed; the first round
    samples each subtree's first step from the problem). A subtree stops at a terminal child.

    Budget: a round's worst case is (active subtrees x k) x ``max_step_tokens`` completion tokens, one call per
    subtree plus the verifier's calls; a round that does not fit in full expands the subtrees that fit, in order,
    and when none fits the search stops with ``stop_reason="budget"``; unfinished subtrees answer with their
    current partial solution.

    >>> execute(DVTS(n_subtrees=8, verifier="prm", verifier_path="prm.json"),  # doctest: +SKIP
    ...         problem, backend, Budget(max_completion_tokens=8000), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "n_subtrees"

    n_subtrees: int = 4
    expansions_per_step: int = 4
    selection: Selection = Selection.WEIGHTED_MAJORITY

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_subtrees", self.n_subtrees)
        check_int("expansions_per_step", self.expansions_per_step)
        object.__setattr__(self, "selection", enum_knob("selection", Selection, self.selection))

    def run(self, ctx: Run) -> Result:
        tree = StepTree(ctx, self, ctx.verifier(self.verifier, self.verifier_path))
        heads: list[Node] = [tree.nodes[0]] * self.n_subtrees  # each subtree's current solution
        active = list(range(self.n_subtrees))
        step = 0
        while active:
            plan = tree.affordable([(heads[t].index, self.expansions_per_step) for t in active], self.max_step_tokens)
            if not plan:
                tree.stop_for_budget(f"a step for {len(active)} subtree(s) does not fit")
                break
            expanded = active[:len(plan)]  # the plan is a prefix of what was asked, in subtree order
            groups = [distinct(g) for g in tree.expand(plan)]
            tree.score([c for g in groups for c in g])
            for t, children in zip(expanded, groups, strict=True):
                heads[t] = top_m(children, 1, self.step_aggregation, ctx.rng)[0]
            ctx.note(DvtsStep(step, tuple(expanded), tuple(tuple(c.index for c in g) for g in groups),
                              tuple(heads[t].index for t in expanded)))
            active = [t for t in active if heads[t].terminal is None]
            step += 1
        ctx.note(Subtrees(tuple(h.index for h in heads)))
        return tree.result(tree.choose([h for h in heads if h.index != 0], self.selection))
