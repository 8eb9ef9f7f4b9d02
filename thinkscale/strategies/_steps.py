"""Shared step expansion for the tree searches (beam, DVTS, MCTS): the tree, its budget checks, its scoring.

A partial solution is a path of raw step texts. Extending it by one step is one ``GenRequest`` whose messages are the
problem followed by an assistant turn holding the steps so far (each followed by the delimiter), sent with
``continue_final=True`` and ``stop=(delimiter,)``: the backend continues that turn and stops at the next blank line.
On a prefix-caching backend the prompt of a child is its parent's prompt plus the tokens its parent just *sampled*,
so the child costs only the few tokens at the step boundary (the delimiter and the last prompt token); the k samples
of one expansion share one prefill (``n=k``), and all expansions of a round go in one batched ``generate`` call.

A step ends the solution (the node is terminal) when it states a final answer (``\\boxed{}``, a ``####`` line,
"the answer is"), when the depth reaches ``max_steps``, or when the model has nothing more to say: a sample that
stops before writing anything but whitespace (it emitted end-of-turn or the delimiter at once) marks its parent's
solution as complete. That last rule is how end-of-sequence is seen: backends report ``finish_reason="stop"`` both
for a stop string and for EOS, so a step that ended with EOS is followed by an empty step, which costs ~1 token.

Scores: a process verifier (PRM) scores every step of the path; an outcome verifier (P(yes)) scores the partial
solution as a whole and that score becomes the score of its newest step (a fallback: it was trained on complete
solutions). The aggregated score of a node is ``aggregate_steps(step_scores, step_aggregation)``.

Budget: before every round the worst case is planned with ``Run.plan``: each sample may use ``max_tokens``
completion tokens, each request is one call, and the verifier may charge what its ``max_calls`` declares for
scoring the new children. The run context checks every call again and records it.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeVar

from thinkscale.answers.extract import extract_answer
from thinkscale.strategies.base import check_int, check_top_p, check_verifier_knob, operator_knob
from thinkscale.strategies.events import Select, Stop, Tree, TreeNode
from thinkscale.strategies.run import Run
from thinkscale.types import Candidate, GenRequest, Message, Result, Sample
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select
from thinkscale.verifiers.base import Verifier, VerifierError, VerifierKind, get_verifier, reads_logprobs

# A final answer is stated only by these markers; extract_answer's last-number fallback would end every step.
_FINAL = re.compile(r"\\boxed\{|\\fbox\{|^\s*####\s*\S|(?:final answer|the answer)\s*(?:is|:)", re.IGNORECASE | re.M)

Terminal = Literal["answer", "eos", "max_steps"]
E = TypeVar("E", bound=enum.Enum)


def final_answer(step: str) -> str | None:
    """The answer a step states explicitly (``\\boxed{}``, ``#### n``, "the answer is ..."), else None."""
    if not _FINAL.search(step):
        return None
    return extract_answer(step)


@dataclass
class Node:
    """One node of the search tree: a partial solution. ``raw_steps`` are the steps exactly as sampled (they rebuild
    the prompt token for token); ``steps`` are the same stripped (what verifiers see)."""

    index: int
    parent: int | None
    raw_steps: tuple[str, ...]
    completion_tokens: int | None = 0  # tokens sampled to make this node (its step)
    finish_reason: str | None = None
    terminal: Terminal | None = None
    answer: str | None = None
    step_scores: tuple[float, ...] = ()
    step: str | None = None  # the step this node added (None: the root, or a node that only ends its parent)
    kind: Literal["step", "rollout"] = "step"  # a rollout: a sampled completion to the end, not expanded further

    @property
    def depth(self) -> int:
        return len(self.raw_steps)

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.raw_steps)

    def score(self, how: StepAggregation) -> float:
        return aggregate_steps(self.step_scores, how) if self.step_scores else 0.0


def distinct(nodes: Sequence[Node]) -> list[Node]:
    """The first of each group of nodes with the same solution (two samples of the same step, or two empty steps
    ending the same parent): copies would be scored again and take selection slots without adding a candidate."""
    seen: set[tuple[tuple[str, ...], bool]] = set()
    out = []
    for n in nodes:
        key = (n.raw_steps, n.terminal is not None)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


@dataclass(frozen=True)
class StepKnobs:
    """Knobs every step-level search shares.

    Args:
        verifier: the step scorer, a registered verifier name: ``prm`` (a PRM head trained on this model's hidden
            states), ``prm-http`` (a served PRM), or ``pyes`` (P(yes) of the partial solution: a fallback).
        verifier_path: the trained PRM's file (``verifier="prm"``) or the PRM server's URL (``prm-http``).
        step_aggregation: how a path's step scores become one score (last / min / product / mean).
        step_delimiter: generation of a step stops here (default a blank line, as verifiers split steps).
        max_step_tokens: completion tokens per step at most.
        max_steps: a path this deep is terminal.
        temperature, top_p: sampling knobs of every step.
    """

    budget_knob: ClassVar[str]

    verifier: str | Verifier = "pyes"
    verifier_path: str | None = operator_knob(None)
    step_aggregation: StepAggregation = StepAggregation.LAST
    step_delimiter: str = "\n\n"
    max_step_tokens: int = 256
    max_steps: int = 12
    temperature: float = 0.8
    top_p: float = 0.95

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_aggregation", enum_knob("step_aggregation", StepAggregation,
                                                               self.step_aggregation))
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise ValueError(f"step_delimiter must be a non-empty string, got {self.step_delimiter!r}")
        if self.step_delimiter.strip():
            # steps are stripped for the verifier; a delimiter with text in it would be lost from the solution
            raise ValueError(f"step_delimiter must be whitespace (e.g. a blank line '\\n\\n'), got "
                             f"{self.step_delimiter!r}")
        check_int("max_step_tokens", self.max_step_tokens)
        check_int("max_steps", self.max_steps)
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)) \
                or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (search needs distinct samples), "
                             f"got {self.temperature!r}")
        check_top_p(self.top_p)
        check_verifier_knob(self.verifier, self.verifier_path)
        logprob_scorer = get_verifier(self.verifier).reads_logprobs if isinstance(self.verifier, str) \
            else reads_logprobs(self.verifier)
        if logprob_scorer:
            raise ValueError(f"verifier {self.verifier!r} scores a whole sampled chain from its token logprobs, which "
                             "a step search does not ask for: use a step scorer (prm, prm-http or pyes)")


def enum_knob(name: str, kind: type[E], value: object) -> E:
    """``value`` as a member of the Enum ``kind`` (members and their string values are accepted)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)  # type: ignore[attr-defined]
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


@dataclass
class StepTree:
    """The search state one ``run`` builds on its run context: nodes and the shared expand/score/plan operations.
    Node 0 is the root (the empty solution); it is not a candidate: node i > 0 is candidate i - 1."""

    ctx: Run
    knobs: StepKnobs
    verifier: Verifier
    nodes: list[Node] = field(default_factory=list)
    budget_hit: bool = False
    tally: dict[str, float] | None = None  # the final selection's score per answer

    def __post_init__(self) -> None:
        self.nodes.append(Node(0, None, ()))

    # ------------------------------------------------------------------ prompts

    def prefill(self, node: Node) -> str:
        """The assistant turn so far: every step followed by the delimiter (so the model writes the next one)."""
        return "".join(s + self.knobs.step_delimiter for s in node.raw_steps)

    def request(self, node: Node, n: int, *, max_tokens: int, stop: bool = True) -> GenRequest:
        messages = (*self.ctx.problem.messages, Message("assistant", self.prefill(node)))
        return GenRequest(messages=messages, n=n, temperature=self.knobs.temperature, top_p=self.knobs.top_p,
                          max_tokens=max_tokens, stop=(self.knobs.step_delimiter,) if stop else (),
                          seed=self.ctx.seed(), continue_final=True)

    def text(self, node: Node) -> str:
        return self.knobs.step_delimiter.join(node.raw_steps)

    # ------------------------------------------------------------------ budget

    def affordable(self, wanted: Sequence[tuple[int, int]], max_tokens: int) -> list[tuple[int, int]]:
        """How many of the ``wanted`` (node, samples) expansions fit the budget's worst case, in order (see
        ``Run.plan``): each sample may spend ``max_tokens``, each request is one call, and scoring the samples of a
        node may charge what the verifier declares for that many candidates one step deeper."""
        def calls(index: int, n: int) -> int:
            probe = Candidate(text="x", answer=None, steps=("x",) * (self.nodes[index].depth + 1))
            return 1 + self.verifier.max_calls([probe] * n)

        return self.ctx.plan(wanted, max_tokens, calls=calls)

    def stop_for_budget(self, why: str) -> None:
        self.budget_hit = True
        self.ctx.note(Stop("budget", why))

    # ------------------------------------------------------------------ expansion

    def generate(self, plan: Sequence[tuple[int, int]], *, max_tokens: int, stop: bool = True) -> list[list[Sample]]:
        """One batched call: ``n`` samples from each planned node's prompt. Charged to the generator."""
        requests = [self.request(self.nodes[i], n, max_tokens=max_tokens, stop=stop) for i, n in plan]
        completions = self.ctx.generate(requests, tag="expand" if stop else "rollout", refs=[i for i, _ in plan])
        return [list(c.samples) for c in completions]

    def add_child(self, parent: int, step: str, sample: Sample) -> Node:
        """The child of ``parent`` that ``step`` (a sampled text cut at the delimiter) makes, with its terminal
        reason. A whitespace-only step adds no step: its node repeats the parent's solution, marked complete."""
        p = self.nodes[parent]
        node = Node(len(self.nodes), parent, p.raw_steps, completion_tokens=sample.completion_tokens,
                    finish_reason=sample.finish_reason, step_scores=p.step_scores)
        if not step.strip():
            node.terminal = "eos"
        else:
            node.raw_steps = p.raw_steps + (step,)
            node.step = step
            node.step_scores = ()
            if final_answer(step) is not None:
                node.terminal = "answer"
            elif node.depth >= self.knobs.max_steps:
                node.terminal = "max_steps"
        node.answer = extract_answer(self.text(node))
        self.nodes.append(node)
        return node

    def add_rollout(self, parent: int, more_steps: tuple[str, ...], finish_reason: str) -> Node:
        """A rollout under ``parent``: its solution continued by ``more_steps`` to the end (``finish_reason`` "stop")
        or to the token limit ("length"). Its tokens are counted on ``parent``, the step its sample made."""
        p = self.nodes[parent]
        node = Node(len(self.nodes), parent, p.raw_steps + more_steps, completion_tokens=0,
                    finish_reason=finish_reason, kind="rollout", terminal="eos" if finish_reason == "stop" else None)
        node.answer = extract_answer(self.text(node))
        self.nodes.append(node)
        return node

    def expand(self, plan: Sequence[tuple[int, int]]) -> list[list[Node]]:
        """Sample one next step ``n`` times for each planned (node, n); returns the new children per node."""
        out = []
        for (index, _), samples in zip(plan, self.generate(plan, max_tokens=self.knobs.max_step_tokens), strict=True):
            out.append([self.add_child(index, s.text, s) for s in samples])
        return out

    # ------------------------------------------------------------------ scoring

    def candidate(self, node: Node) -> Candidate:
        parent = node.parent if node.parent else None  # the root is not a candidate
        return Candidate(text=self.text(node), answer=node.answer, steps=node.steps, scores=node.step_scores,
                         completion_tokens=node.completion_tokens, finish_reason=node.finish_reason,  # type: ignore[arg-type]
                         parent=None if parent is None else parent - 1)

    def score(self, nodes: Sequence[Node]) -> None:
        """Set ``step_scores`` of every node that has none (in one verifier call); charged to the verifier."""
        todo = [n for n in nodes if not n.step_scores and n.raw_steps]
        if not todo:
            return
        rows = self.ctx.verify(self.verifier, [self.candidate(n) for n in todo], refs=[n.index - 1 for n in todo])
        for node, row in zip(todo, rows, strict=True):
            if self.verifier.kind is VerifierKind.PROCESS:
                if len(row) != node.depth:
                    raise VerifierError(f"{type(self.verifier).__name__} returned {len(row)} step scores for a "
                                        f"{node.depth}-step solution")
                node.step_scores = tuple(row)
            else:
                # the outcome score of this partial solution is the score of its newest step; a rollout is scored
                # whole and inherits nothing
                inherit = node.kind == "step" and node.parent is not None
                parent_scores = self.nodes[node.parent].step_scores if inherit else ()  # type: ignore[index]
                node.step_scores = parent_scores + (row[-1],)

    # ------------------------------------------------------------------ result

    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(self.candidate(n) for n in self.nodes[1:])

    def choose(self, pool: Sequence[Node], how: Selection) -> Node | None:
        """The answer among ``pool`` by ``how`` on aggregated scores; with no answered node, the best-scored one.
        Records the ``Select`` event (candidate indices: node i is candidate i - 1). The root is never chosen."""
        pool = [n for n in pool if n.index != 0]
        if not pool:
            self.ctx.note(Select(Selection(how).value, (), (), {}, None, None))
            return None
        scores = [n.score(self.knobs.step_aggregation) for n in pool]
        choice = select([n.answer for n in pool], scores, how, rng=self.ctx.rng)
        if choice.index is not None:
            chosen = pool[choice.index]
        else:
            chosen = pool[max(range(len(pool)), key=lambda i: (scores[i], -i))]
        self.ctx.note(Select(Selection(how).value, tuple(n.index - 1 for n in pool), tuple(scores),
                             dict(choice.tally), choice.answer, chosen.index - 1, choice.tie))
        self.tally = dict(choice.tally)
        return chosen

    def tree(self) -> Tree:
        """The tree as an event: one entry per node (index 0 is the root, the empty solution)."""
        return Tree(tuple(TreeNode(n.index, n.parent, n.kind, n.step, n.depth, n.terminal, n.answer,
                                   tuple(n.step_scores), n.completion_tokens, n.finish_reason) for n in self.nodes))

    def result(self, chosen: Node | None) -> Result:
        """The search's Result: every node after the root a candidate, the chosen node's answer, the tree event."""
        self.ctx.note(self.tree())
        return self.ctx.result(self.candidates(), chosen_index=None if chosen is None else chosen.index - 1,
                               votes=self.tally or None, votes_kind="score" if self.tally else None,
                               stop_reason="budget" if self.budget_hit else "done")
