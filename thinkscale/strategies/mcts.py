"""Monte Carlo tree search over reasoning steps: select by UCT/PUCT, expand k sampled next steps, evaluate them with
the verifier (a PRM on the partial solution, or an outcome verifier on a rollout to a final answer), back up. With PRM
values a simulation goes on down, expanding, until it reaches a complete solution (as OpenR's ``vanilla_mcts`` draws
one path per simulation), so n simulations leave about n solutions, as n chains would; ``simulation=step`` is the
classic one expansion per simulation.

Kocsis & Szepesvari, "Bandit based Monte-Carlo Planning" (UCT), https://doi.org/10.1007/11871842_29;
Silver et al., "Mastering the game of Go without human knowledge" (PUCT); over LLM reasoning steps:
Hao et al., "Reasoning with Language Model is Planning with World Model" (RAP), https://arxiv.org/abs/2305.14992.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from thinkscale.strategies._steps import Node, StepKnobs, StepTree, enum_knob
from thinkscale.strategies.base import check_int, register
from thinkscale.strategies.events import Select, event
from thinkscale.strategies.run import Run, verifier_name
from thinkscale.types import Event, Result
from thinkscale.verifiers.base import VerifierKind


@event("simulation")
@dataclass(frozen=True)
class Simulation(Event):
    """One expansion of MCTS simulation ``i`` (a ``path`` simulation notes one per step it adds): the path from the
    root (node indices), and either the leaf it expanded with the new children and their values, or the terminal
    node it revisited with the value backed up again."""

    i: int
    path: tuple[int, ...]
    expanded: int | None = None
    children: tuple[int, ...] = ()
    values: tuple[float, ...] = ()
    revisit: int | None = None
    value: float | None = None


@event("mcts_stats")
@dataclass(frozen=True)
class MctsStats(Event):
    """Visit counts and value sums per node index at the end, and each evaluated node's own value."""

    visits: tuple[int, ...]
    value_sum: tuple[float, ...]
    values: dict[str, float]


class Rule(enum.StrEnum):
    UCT = "uct"  # Q + c * sqrt(ln N_parent / N_child); an unvisited child first
    PUCT = "puct"  # Q + c * P * sqrt(N_parent) / (1 + N_child), P = 1 / siblings (uniform prior)


class ValueSource(enum.StrEnum):
    AUTO = "auto"  # prm for a process verifier, rollout for an outcome verifier
    PRM = "prm"  # the verifier scores the new partial solution
    ROLLOUT = "rollout"  # sample on to the end and score the complete solution


class SimulationKind(enum.StrEnum):
    PATH = "path"  # descend, expanding every leaf met, until a terminal node: each simulation ends in a solution
    STEP = "step"  # one expansion per simulation (classic MCTS); back to the root after it


class FinalChoice(enum.StrEnum):
    MOST_VISITED = "most_visited"  # follow the most-visited child from the root down to a solution
    BEST_VALUE = "best_value"  # the complete solution (terminal node or rollout) with the highest value


@dataclass
class Stats:
    """Visit counts and value sums per node index (Q = value_sum / visits)."""

    visits: list[int] = field(default_factory=list)
    value_sum: list[float] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)

    def grow(self, n_nodes: int) -> None:
        while len(self.visits) < n_nodes:
            self.visits.append(0)
            self.value_sum.append(0.0)
            self.children.append([])

    def q(self, i: int) -> float:
        return self.value_sum[i] / self.visits[i] if self.visits[i] else 0.0


def uct(q: float, visits: int, parent_visits: int, c: float) -> float:
    if visits == 0:
        return math.inf
    return q + c * math.sqrt(math.log(max(parent_visits, 1)) / visits)


def puct(q: float, prior: float, visits: int, parent_visits: int, c: float) -> float:
    return q + c * prior * math.sqrt(parent_visits) / (1 + visits)


def select_child(stats: Stats, parent: int, rule: Rule, c: float, rng: random.Random) -> tuple[int, list[float]]:
    """The child of ``parent`` with the highest UCT/PUCT value (an unvisited child has Q = 0); ties are broken by
    ``rng`` among the tied children in index order. Returns the child and every child's value (for the trace)."""
    kids = stats.children[parent]
    n = stats.visits[parent]
    if rule is Rule.UCT:
        values = [uct(stats.q(i), stats.visits[i], n, c) for i in kids]
    else:
        values = [puct(stats.q(i), 1.0 / len(kids), stats.visits[i], n, c) for i in kids]
    best = max(values)
    tied = [i for i, v in zip(kids, values, strict=True) if v == best]
    return (tied[0] if len(tied) == 1 else rng.choice(tied)), values


def backpropagate(stats: Stats, path: Sequence[int], value: float) -> None:
    """One evaluation of ``value`` seen by every node on ``path`` (root first)."""
    for i in path:
        stats.visits[i] += 1
        stats.value_sum[i] += value


@register("mcts", "Monte Carlo tree search over reasoning steps (UCT/PUCT, PRM or rollout values)",
          "https://arxiv.org/abs/2305.14992")
@dataclass(frozen=True)
class MCTS(StepKnobs):
    """Args (besides the step knobs of ``StepKnobs``):
        n_simulations: select-expand-evaluate-backup rounds.
        expansions_per_node: k, next steps sampled when a leaf is expanded (one request, n=k).
        rule: ``puct`` (uniform prior) or ``uct``; ``c_explore`` is their exploration constant c.
        value: ``prm`` (the verifier scores each new partial solution; value = its aggregated step score),
            ``rollout`` (each of the k samples runs on to the end, up to ``rollout_max_tokens``: its first step is
            the child, the whole sample a complete solution whose outcome-verifier score is the child's value; it
            needs an outcome verifier), or ``auto`` (prm for a process verifier, rollout for an outcome verifier
            such as P(yes)).
        simulation: ``path`` (the default: after an expansion the simulation goes on from the expanded node, by the
            rule, expanding each unexpanded leaf it meets, until it reaches a terminal node, so every simulation ends
            at a complete solution, as one chain would; with ``prm`` values and a handful of simulations a search of
            single expansions ends deep inside unfinished solutions) or ``step`` (one expansion per simulation, the
            classic algorithm). With rollout values each expansion's samples already run to the end, so a simulation
            is one expansion either way.
        final: ``most_visited`` (descend by visits; if that ends at an unfinished node, its best complete
            descendant) or ``best_value`` (the best-valued complete solution anywhere).

    A simulation descends from the root by the rule to a leaf. An unexpanded, non-terminal leaf is expanded; each new
    child is evaluated once (visits 1, value_sum v) and every node on the path to the leaf gets +1 visit and +v
    (``path``: then the descent goes on from that leaf). A terminal leaf costs nothing: when the simulation has
    expanded nothing, its value is backed up again along its path (a revisit); when it got there by expanding, the
    value was already backed up as the node was made.

    Budget: an expansion's worst case is k x ``max_step_tokens`` (prm) or k x ``rollout_max_tokens`` (rollout)
    completion tokens, one call and the verifier's calls (a ``path`` simulation makes one expansion per step it
    adds); if all k do not fit, fewer children are sampled; when none fits the search stops with
    ``stop_reason="budget"`` and answers from the tree it has.

    >>> execute(MCTS(n_simulations=16, verifier="prm", verifier_path="prm.json"),  # doctest: +SKIP
    ...         problem, backend, Budget(max_completion_tokens=8000), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "n_simulations"

    n_simulations: int = 16
    expansions_per_node: int = 3
    rule: Rule = Rule.PUCT
    c_explore: float = 1.0
    value: ValueSource = ValueSource.AUTO
    rollout_max_tokens: int = 512
    simulation: SimulationKind = SimulationKind.PATH
    final: FinalChoice = FinalChoice.MOST_VISITED

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_simulations", self.n_simulations)
        check_int("expansions_per_node", self.expansions_per_node)
        check_int("rollout_max_tokens", self.rollout_max_tokens)
        if not (isinstance(self.c_explore, (int, float)) and math.isfinite(self.c_explore) and self.c_explore >= 0):
            raise ValueError(f"c_explore must be a finite number >= 0, got {self.c_explore!r}")
        for name, kind in (("rule", Rule), ("value", ValueSource), ("simulation", SimulationKind),
                           ("final", FinalChoice)):
            object.__setattr__(self, name, enum_knob(name, kind, getattr(self, name)))

    def run(self, ctx: Run) -> Result:
        verifier = ctx.verifier(self.verifier, self.verifier_path)
        if self.value is ValueSource.ROLLOUT and verifier.kind is VerifierKind.PROCESS:
            raise ValueError(f"value='rollout' scores complete solutions with an outcome verifier; "
                             f"{verifier_name(verifier)!r} is a process verifier, which scores partial solutions: use "
                             "value='prm' (or 'auto')")
        tree = StepTree(ctx, self, verifier)
        rollout = self.value is ValueSource.ROLLOUT or (
            self.value is ValueSource.AUTO and verifier.kind is VerifierKind.OUTCOME)
        stats = Stats()
        values: dict[int, float] = {}  # each evaluated node's own value (a child's is its rollout's)
        for sim in range(self.n_simulations):
            if not self._simulate(tree, stats, values, sim, rollout):
                break
        stats.grow(len(tree.nodes))
        chosen, how = self._final(tree, stats, values, ctx.rng)
        ctx.note(Select(how, (), (), {}, chosen.answer if chosen else None,
                        None if chosen is None else chosen.index - 1),
                 MctsStats(tuple(stats.visits), tuple(stats.value_sum),
                           {str(k): v for k, v in sorted(values.items())}))
        return tree.result(chosen)

    def _simulate(self, tree: StepTree, stats: Stats, values: dict[int, float], sim: int, rollout: bool) -> bool:
        """One simulation (see the class docstring); False when the budget allows no expansion."""
        path, node, expanded = [0], 0, False
        stats.grow(len(tree.nodes))  # the root, on the first simulation; _expand grows it for the nodes it adds
        while True:
            while stats.children[node] and tree.nodes[node].terminal is None:
                node, _ = select_child(stats, node, self.rule, self.c_explore, tree.ctx.rng)
                path.append(node)
            if tree.nodes[node].terminal is not None:
                if not expanded:
                    backpropagate(stats, path, values[node])
                    tree.ctx.note(Simulation(sim, tuple(path), revisit=node, value=values[node]))
                return True
            if not self._expand(tree, stats, values, sim, path, rollout):
                return False
            expanded = True
            if rollout or self.simulation is SimulationKind.STEP:
                return True

    def _expand(self, tree: StepTree, stats: Stats, values: dict[int, float], sim: int, path: list[int],
                rollout: bool) -> bool:
        """Expand the leaf ``path[-1]``, evaluate its children and back each one up along ``path``; False (and the
        budget stop noted) when no child fits."""
        node = path[-1]
        max_tokens = self.rollout_max_tokens if rollout else self.max_step_tokens
        plan = tree.affordable([(node, self.expansions_per_node)], max_tokens)
        if not plan:
            tree.stop_for_budget(f"expanding node {node} by one step does not fit")
            return False
        children = self._expand_rollouts(tree, plan, values) if rollout else self._expand_prm(tree, plan, values)
        stats.grow(len(tree.nodes))
        for child in children:
            stats.children[node].append(child.index)
            stats.visits[child.index] = 1
            stats.value_sum[child.index] = values[child.index]
            backpropagate(stats, path, values[child.index])
        tree.ctx.note(Simulation(sim, tuple(path), expanded=node, children=tuple(c.index for c in children),
                                 values=tuple(values[c.index] for c in children)))
        return True

    def _expand_prm(self, tree: StepTree, plan: list[tuple[int, int]], values: dict[int, float]) -> list[Node]:
        children = tree.expand(plan)[0]
        tree.score(children)
        for c in children:
            values[c.index] = c.score(self.step_aggregation)
        return children

    def _expand_rollouts(self, tree: StepTree, plan: list[tuple[int, int]], values: dict[int, float]) -> list[Node]:
        """One call samples k continuations to the end: each one's first step is a child, the whole continuation a
        rollout node under it (unless the child already ends the solution); the verifier scores the complete ones."""
        (leaf, _), = plan
        (samples,) = tree.generate(plan, max_tokens=self.rollout_max_tokens, stop=False)
        delim = self.step_delimiter
        children, evaluated = [], []
        for s in samples:
            # blank segments are dropped: a continuation that opens with another blank line still has a first step
            first, *rest = [seg for seg in s.text.split(delim) if seg.strip()] or [""]
            child = tree.add_child(leaf, first, s)
            children.append(child)
            if child.terminal is None and not rest and s.finish_reason == "stop":
                child.terminal = "eos"  # the sample ended within its first step: that step ends the solution
            if child.terminal is not None:
                evaluated.append((child, child))
            else:
                evaluated.append((child, tree.add_rollout(child.index, tuple(rest), s.finish_reason)))
        tree.score([e for _, e in evaluated])
        for child, e in evaluated:
            values[child.index] = e.score(self.step_aggregation)
            if e is not child:
                values[e.index] = values[child.index]
        return children

    def _final(self, tree: StepTree, stats: Stats, values: dict[int, float],
               rng: random.Random) -> tuple[Node | None, str]:
        complete = [n for n in tree.nodes[1:] if n.index in values and (n.terminal is not None or n.kind == "rollout")]
        if self.final is FinalChoice.BEST_VALUE and complete:
            return best_valued(complete, values, rng), "best_value"
        node = 0
        while stats.children[node] and tree.nodes[node].terminal is None:
            kids = stats.children[node]
            top = max((stats.visits[i], stats.q(i)) for i in kids)
            tied = [i for i in kids if (stats.visits[i], stats.q(i)) == top]
            node = tied[0] if len(tied) == 1 else rng.choice(tied)
        if node == 0:
            return None, "most_visited"
        end = tree.nodes[node]
        if end.terminal is not None:
            return end, "most_visited"
        below = [n for n in complete if is_descendant(tree, n.index, node)]
        return (best_valued(below, values, rng) if below else end), "most_visited"


def best_valued(nodes: Sequence[Node], values: dict[int, float], rng: random.Random) -> Node:
    """The node of highest value; ties broken by ``rng`` among them in index order."""
    best = max(values[n.index] for n in nodes)
    tied = [n for n in nodes if values[n.index] == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def is_descendant(tree: StepTree, index: int, ancestor: int) -> bool:
    p: int | None = index
    while p is not None:
        if p == ancestor:
            return True
        p = tree.nodes[p].parent
    return False
