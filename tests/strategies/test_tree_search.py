"""Beam search, DVTS and MCTS on the scripted fake: what is kept, what is expanded, the MCTS numbers, terminal steps,
the budget, seeds and the trace. Scores come from a table keyed by step text (``TableVerifier``), so every expected
number can be worked out by hand."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from tests.strategies.helpers import algo_trace
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies._steps import StepKnobs, final_answer
from thinkscale.strategies.base import get_strategy
from thinkscale.strategies.beam_search import BeamSearch
from thinkscale.strategies.dvts import DVTS
from thinkscale.strategies.mcts import MCTS, Rule, Stats, ValueSource, backpropagate, puct, select_child, uct
from thinkscale.strategies.particle_filter import ParticleFilter
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Candidate, GenRequest, Ledger, Problem, Role, Usage
from thinkscale.verifiers import base as vbase
from thinkscale.verifiers.base import VerifierKind

PROBLEM = Problem.from_text("What is 6 times 7?")


@dataclass
class TableVerifier:
    """Scores each step by a table lookup of its text (``default`` when absent). A process verifier returns one score
    per step; an outcome one scores the last step. Charges one call (and the step's words as prompt tokens) per scored
    step, or per candidate for an outcome verifier; records what it was asked."""

    kind: VerifierKind
    table: dict[str, float]
    default: float = 0.5
    seen: list[tuple[str, ...]] = field(default_factory=list)
    name: ClassVar[str] = "table"
    uses_reference: ClassVar[bool] = False

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        """Exactly what ``score`` charges: one call per scored step."""
        return sum(len(c.steps) if self.kind is VerifierKind.PROCESS else min(1, len(c.steps)) for c in candidates)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        out = []
        for c in candidates:
            self.seen.append(c.steps)
            steps = c.steps if self.kind is VerifierKind.PROCESS else c.steps[-1:]
            for s in steps:
                ledger.charge(Role.VERIFIER, Usage(len(s.split()), 0, 0, 1, 0.0, 0.0))
            out.append(tuple(self.table.get(s, self.default) for s in steps))
        return out


@pytest.fixture
def table(monkeypatch):
    """Register a TableVerifier as verifier "table" for one test; returns a function that sets its table."""
    holder: dict[str, TableVerifier] = {}

    def use(scores: dict[str, float], kind: VerifierKind = VerifierKind.PROCESS, default: float = 0.5):
        holder["v"] = TableVerifier(kind, scores, default)
        return holder["v"]

    monkeypatch.setitem(vbase.REGISTRY, "table", vbase.VerifierInfo(
        "table", lambda: holder["v"], VerifierKind.PROCESS, False, "test table"))
    return use


def prefill(req: GenRequest) -> str:
    assert req.messages is not None and req.continue_final
    return req.messages[-1].content


def by_prefill(mapping: dict[str, list[str]]):
    """A script entry answering each sample from the queue ``mapping[prefill]``, in order: a request the test did not
    plan for fails with a KeyError, an extra sample with an IndexError."""
    queues = {k: list(v) for k, v in mapping.items()}

    def entry(req: GenRequest, j: int) -> str:
        return queues[prefill(req)].pop(0)
    return entry


# --- steps ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "answer"), [
    ("So she has \\boxed{18} eggs.", "18"), ("#### 72", "72"), ("The answer is 7.", "7"),
    ("Final answer: 12", "12"), ("3 + 4 = 7 apples", None), ("", None)])
def test_final_answer_needs_an_explicit_marker(text, answer):
    """A number alone does not end a solution (extract_answer would take '7' from '3 + 4 = 7 apples')."""
    assert final_answer(text) == answer


def test_expansion_continues_the_assistant_turn_and_stops_at_a_blank_line(table):
    """Root: one request of n = M x k = 2 x 2 from an empty assistant turn. Round 2: one request per kept beam, each
    prefilled with its steps and the delimiter, n = k, all in one batched call; all seeds come from the rng."""
    table({"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.2, "\\boxed{1}": 0.9, "\\boxed{2}": 0.8, "x": 0.1, "y": 0.1})
    script = by_prefill({"": ["a", "b", "c", "d"],
                         "a\n\n": ["\\boxed{1}", "x"], "c\n\n": ["\\boxed{2}", "y"]})
    backend = ScriptedBackend([script] * 8)
    execute(BeamSearch(verifier="table", beam_width=2, expansions_per_beam=2, max_step_tokens=7),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    r0, r1, r2 = backend.requests
    assert backend.calls == 2
    assert (prefill(r0), r0.n) == ("", 4)
    assert [(prefill(r), r.n) for r in (r1, r2)] == [("a\n\n", 2), ("c\n\n", 2)]
    for r in backend.requests:
        assert r.stop == ("\n\n",) and r.max_tokens == 7 and r.continue_final and r.temperature == 0.8
        assert r.messages[:-1] == PROBLEM.messages
    assert len({r.seed for r in backend.requests}) == 3


def test_each_step_costs_only_its_new_words_on_the_prefix_cache(table):
    """The fake's prefix cache counts common word prefixes with earlier *prompts* (unlike llama.cpp it does not cache
    sampled words): a child's prompt is its parent's plus the step, so every request after the first computes at most
    the step's 5 words, fewer when a sibling's prompt already shared some ("step 1 sample" of two beams)."""
    table({})
    backend = ScriptedBackend([lambda req, j: f"step {prefill(req).count(chr(10)) // 2} sample {j} words"] * 200)
    result = execute(BeamSearch(verifier="table", beam_width=2, expansions_per_beam=2, max_steps=4),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    usages = [u for r, u in result.ledger.entries if r is Role.GENERATOR]
    assert len(usages) == len(backend.requests) == 1 + 3 * 2
    computed = [u.computed_prompt_tokens for u in usages]
    assert computed[0] == len("<user> What is 6 times 7? <assistant>".split())
    assert all(1 <= c <= 5 for c in computed[1:]) and computed.count(5) >= 3


# --- beam search --------------------------------------------------------------------------------------------------


def test_beam_keeps_exactly_the_top_m_children_by_aggregated_score(table):
    """Round 1: children a..d score 0.1 0.9 0.5 0.7, so M=2 keeps b (0.9) and d (0.7), best first. Round 2 (min
    aggregation): b's children b1 (0.3 -> min 0.3) and b2 (0.95 -> 0.9), d's d1 (0.8 -> 0.7) and d2 (0.2 -> 0.2):
    the top two are b2 (0.9) and d1 (0.7), both terminal (a boxed answer), so the search ends; argmax picks b2."""
    table({"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.7, "b1 \\boxed{1}": 0.3, "b2 \\boxed{2}": 0.95,
           "d1 \\boxed{3}": 0.8, "d2 \\boxed{4}": 0.2})
    script = by_prefill({"": ["a", "b", "c", "d"], "b\n\n": ["b1 \\boxed{1}", "b2 \\boxed{2}"],
                         "d\n\n": ["d1 \\boxed{3}", "d2 \\boxed{4}"]})
    backend = ScriptedBackend([script] * 8)
    result = execute(BeamSearch(verifier="table", beam_width=2, expansions_per_beam=2, step_aggregation="min"),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    steps = [e for e in algo_trace(result) if e["event"] == "beam_step"]
    texts = {c_i: c.steps[-1] for c_i, c in enumerate(result.candidates)}
    assert [[texts[i - 1] for i in s["kept"]] for s in steps] == [["b", "d"], ["b2 \\boxed{2}", "d1 \\boxed{3}"]]
    assert result.answer == "2" and result.stop_reason == "done"
    assert result.chosen is not None and result.chosen.steps == ("b", "b2 \\boxed{2}")
    assert result.chosen.scores == (0.9, 0.95)
    assert backend.remaining == 0  # exactly 4 + 2 + 2 samples were asked for
    # the chosen solution is one of the candidates (equal, not the same object), so the eval store can flag it
    assert result.candidates.count(result.chosen) == 1


@pytest.mark.parametrize("search", [BeamSearch, DVTS, MCTS])
@pytest.mark.parametrize("verifier", ["confidence-mean", "confidence-lowest-group"])
def test_a_logprob_confidence_is_refused_as_a_step_scorer(search, verifier):
    """The searches do not request token logprobs, so a confidence verifier could only fail mid-run: refused when
    the strategy is built, with the scorers that work named."""
    with pytest.raises(ValueError, match=f"verifier '{verifier}' scores a whole sampled chain.*prm, prm-http or pyes"):
        search(verifier=verifier)


def test_beam_narrows_as_solutions_finish(table):
    """M=2: a finished child (boxed) among the kept two leaves one beam, so the next round expands one parent only."""
    table({"a \\boxed{5}": 0.9, "b": 0.8, "c": 0.1, "d": 0.0, "b1 \\boxed{6}": 0.4, "b2": 0.3})
    script = by_prefill({"": ["a \\boxed{5}", "b", "c", "d"], "b\n\n": ["b1 \\boxed{6}", "b2"]})
    backend = ScriptedBackend([script] * 6)
    result = execute(BeamSearch(verifier="table", beam_width=2, expansions_per_beam=2),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    steps = [e for e in algo_trace(result) if e["event"] == "beam_step"]
    assert [s["width"] for s in steps] == [1, 0]
    assert len(backend.requests) == 2 and prefill(backend.requests[1]) == "b\n\n"
    assert result.answer == "5"  # a (0.9) beats b1 (0.4) under the default last-step aggregation


def test_beam_keeps_one_copy_of_a_repeated_step(table):
    """Samples a, a, b, c with a best: M=2 keeps a once and b (0.6 > c 0.4), not a twice; a is scored once."""
    v = table({"a": 0.9, "b": 0.6, "c": 0.4, "a1 \\boxed{1}": 0.5, "b1 \\boxed{2}": 0.5})
    script = by_prefill({"": ["a", "a", "b", "c"], "a\n\n": ["a1 \\boxed{1}"] * 2, "b\n\n": ["b1 \\boxed{2}"] * 2})
    backend = ScriptedBackend([script] * 8)
    result = execute(BeamSearch(verifier="table", beam_width=2, expansions_per_beam=2),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    first = next(e for e in algo_trace(result) if e["event"] == "beam_step")
    assert [result.candidates[i - 1].steps for i in first["kept"]] == [("a",), ("b",)]
    assert sorted(prefill(r) for r in backend.requests[1:]) == ["a\n\n", "b\n\n"]
    assert v.seen[:3] == [("a",), ("b",), ("c",)]


def test_beam_ties_are_broken_by_the_rng(table):
    """Four children with the same score, M=1: which one survives depends only on the seed."""
    table({}, default=0.5)
    kept = set()
    for seed in range(12):
        backend = ScriptedBackend([lambda req, j: "abcd"[j] if prefill(req) == "" else "\\boxed{1}"] * 8)
        r = execute(BeamSearch(verifier="table", beam_width=1, expansions_per_beam=4, max_steps=2),
            PROBLEM, backend, Budget(), rng=random.Random(seed))
        kept.add(r.chosen.steps[0])
    assert len(kept) > 1


# --- terminal steps -------------------------------------------------------------------------------------------------


def test_terminal_steps_answer_eos_and_max_steps(table):
    """Three width-1 subtrees: '\\boxed{9}' ends a path (answer); x's next sample is empty, which ends x's solution
    (eos) without a new step or a verifier call; y then z reaches max_steps=2."""
    v = table({})
    script = by_prefill({"": ["\\boxed{9}", "x", "y"], "x\n\n": [""], "y\n\n": ["z"]})
    backend = ScriptedBackend([script] * 5)
    result = execute(DVTS(verifier="table", n_subtrees=3, expansions_per_step=1, max_steps=2),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    nodes = next(e for e in algo_trace(result) if e["event"] == "tree")["nodes"]
    assert [(n["parent"], n["step"], n["depth"], n["terminal"]) for n in nodes] == [
        (None, None, 0, None), (0, "\\boxed{9}", 1, "answer"), (0, "x", 1, None), (0, "y", 1, None),
        (2, None, 1, "eos"), (3, "z", 2, "max_steps")]
    assert v.seen == [("\\boxed{9}",), ("x",), ("y",), ("y", "z")]
    assert result.candidates[3].text == "x" and result.candidates[3].parent == 1
    assert result.stop_reason == "done" and backend.remaining == 0


# --- DVTS -----------------------------------------------------------------------------------------------------------


def test_dvts_subtrees_choose_among_their_own_children_only(table):
    """Subtree 0's children score 0.9 (p) and 0.8 (q), subtree 1's 0.2 (r) and 0.1 (s). Beam search would keep p and
    q; DVTS keeps each subtree's best, p and r, so both prefixes are extended. Then p1 (0.9) and r1 (0.7) finish
    their subtrees, and the weighted vote picks 1."""
    table({"p": 0.9, "q": 0.8, "r": 0.2, "s": 0.1, "p1 \\boxed{1}": 0.9, "p2": 0.1, "r1 \\boxed{2}": 0.7,
           "r2": 0.1})
    script = by_prefill({"": ["p", "q", "r", "s"], "p\n\n": ["p1 \\boxed{1}", "p2"],
                         "r\n\n": ["r1 \\boxed{2}", "r2"]})
    backend = ScriptedBackend([script] * 8)
    result = execute(DVTS(verifier="table", n_subtrees=2, expansions_per_step=2),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    first = next(e for e in algo_trace(result) if e["event"] == "dvts_step")
    assert [[result.candidates[i - 1].steps for i in g] for g in first["children"]] == [[("p",), ("q",)],
                                                                                         [("r",), ("s",)]]
    assert [result.candidates[i - 1].steps for i in first["heads"]] == [("p",), ("r",)]
    assert [(prefill(r), r.n) for r in backend.requests] == [("", 2), ("", 2), ("p\n\n", 2), ("r\n\n", 2)]
    solutions = next(e for e in algo_trace(result) if e["event"] == "subtrees")["solutions"]
    assert [result.candidates[i - 1].steps for i in solutions] == [("p", "p1 \\boxed{1}"), ("r", "r1 \\boxed{2}")]
    assert result.answer == "1" and backend.remaining == 0


# --- MCTS -----------------------------------------------------------------------------------------------------------


def test_uct_and_puct_values_by_hand():
    """UCT: Q + c sqrt(ln N / n): 0.5 + 1.4 sqrt(2.302585 / 4) = 0.5 + 1.4 x 0.758714 = 1.562199; unvisited: inf.
    PUCT: Q + c P sqrt(N) / (1 + n): 0.5 + 2 x 0.25 x sqrt(16) / (1 + 3) = 0.5 + 0.5 = 1.0."""
    assert uct(0.5, 4, 10, 1.4) == pytest.approx(1.562199, abs=1e-6)
    assert uct(0.0, 0, 10, 1.4) == math.inf
    assert puct(0.5, 0.25, 3, 16, 2.0) == pytest.approx(1.0)


def test_select_and_backpropagate_on_a_hand_built_tree():
    """Root 0 with children 1 (N=3, W=1.8: Q=0.6) and 2 (N=1, W=0.2: Q=0.2); root N=4. PUCT, c=1, P=1/2:
    child 1: 0.6 + 0.5 x 2 / 4 = 0.85; child 2: 0.2 + 0.5 x 2 / 2 = 0.7 -> child 1. UCT, c=1:
    child 1: 0.6 + sqrt(1.386294 / 3) = 1.279778; child 2: 0.2 + sqrt(1.386294) = 1.377410 -> child 2.
    Backing up 0.9 along [0, 1] adds one visit and 0.9 to each."""
    s = Stats()
    s.grow(3)
    s.children[0] = [1, 2]
    s.visits[:] = [4, 3, 1]
    s.value_sum[:] = [2.0, 1.8, 0.2]
    child, values = select_child(s, 0, Rule.PUCT, 1.0, random.Random(0))
    assert child == 1 and values == pytest.approx([0.85, 0.7])
    child, values = select_child(s, 0, Rule.UCT, 1.0, random.Random(0))
    assert child == 2 and values == pytest.approx([1.279778, 1.377410], abs=1e-6)
    backpropagate(s, [0, 1], 0.9)
    assert s.visits == [5, 4, 1] and s.value_sum == pytest.approx([2.9, 2.7, 0.2])


def test_mcts_episode_visits_and_values_match_hand_computation(table):
    """Classic simulations (``simulation=step``: one expansion each). PRM values (last step), k=2, PUCT c=1, 3
    simulations.
    sim 0: expand root -> c1 (0.6), c2 (0.2); root N=2 W=0.8.
    sim 1: root: c1 0.6 + 0.5 sqrt(2)/2 = 0.954 > c2 0.554 -> expand c1 -> d1 (0.9, boxed: terminal), d2 (0.3);
           root N=4 W=2.0; c1 N=3 W=1.8.
    sim 2: root: c1 0.6 + 0.5 x 2/4 = 0.85 > c2 0.2 + 0.5 x 2/2 = 0.7; c1: d1 0.9 + 0.5 sqrt(3)/2 = 1.333 >
           d2 0.733 -> d1 is terminal: back up 0.9 again, no call. root N=5 W=2.9; c1 N=4 W=2.7; d1 N=2 W=1.8.
    Most visited: c1 (4 > 1), then d1 (2 > 1): the answer 7."""
    table({"c1": 0.6, "c2": 0.2, "d1 \\boxed{7}": 0.9, "d2": 0.3})
    script = by_prefill({"": ["c1", "c2"], "c1\n\n": ["d1 \\boxed{7}", "d2"]})
    backend = ScriptedBackend([script] * 4)
    result = execute(MCTS(verifier="table", n_simulations=3, expansions_per_node=2, rule="puct", c_explore=1.0,
                          simulation="step"),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    stats = next(e for e in algo_trace(result) if e["event"] == "mcts_stats")
    # node indices: 0 root, 1 c1, 2 c2, 3 d1, 4 d2
    assert stats["visits"] == [5, 4, 1, 2, 1]
    assert stats["value_sum"] == pytest.approx([2.9, 2.7, 0.2, 1.8, 0.3])
    sims = [e for e in algo_trace(result) if e["event"] == "simulation"]
    assert [s["path"] for s in sims] == [[0], [0, 1], [0, 1, 3]] and sims[2]["revisit"] == 3
    assert backend.calls == 2 and result.answer == "7" and result.stop_reason == "done"


def test_mcts_path_simulation_goes_down_to_a_solution_by_hand(table):
    """The default ``simulation=path``, the same tree as above (PUCT c=1, P=1/2, k=2).
    sim 0: expand root -> c1 (0.6), c2 (0.2); root N=2 W=0.8. It goes on from the root: c1 0.6 + 0.5 sqrt(2)/2 =
           0.954 > c2 0.554 -> expand c1 -> d1 (0.9, boxed: terminal), d2 (0.3); root N=4 W=2.0, c1 N=3 W=1.8. On
           from c1: d1 0.9 + 0.5 sqrt(3)/2 = 1.333 > d2 0.733 -> d1 is terminal: the simulation ends there, its
           value already backed up when d1 was made (no second backup).
    sim 1: root: c1 0.6 + 0.5 x 2/4 = 0.85 > c2 0.2 + 0.5 x 2/2 = 0.7; c1: d1 1.333 -> terminal, nothing expanded:
           a revisit backs 0.9 up again. root N=5 W=2.9; c1 N=4 W=2.7; d1 N=2 W=1.8 (= three classic simulations).
    """
    table({"c1": 0.6, "c2": 0.2, "d1 \\boxed{7}": 0.9, "d2": 0.3})
    def script():
        return by_prefill({"": ["c1", "c2"], "c1\n\n": ["d1 \\boxed{7}", "d2"]})

    one = execute(MCTS(verifier="table", n_simulations=1, expansions_per_node=2, rule="puct", c_explore=1.0),
                  PROBLEM, ScriptedBackend([script()] * 4), Budget(), rng=random.Random(0))
    stats = next(e for e in algo_trace(one) if e["event"] == "mcts_stats")
    assert stats["visits"] == [4, 3, 1, 1, 1] and stats["value_sum"] == pytest.approx([2.0, 1.8, 0.2, 0.9, 0.3])
    sims = [e for e in algo_trace(one) if e["event"] == "simulation"]
    assert [(s["i"], s["path"], s["expanded"]) for s in sims] == [(0, [0], 0), (0, [0, 1], 1)]
    assert one.answer == "7" and one.ledger.total(Role.GENERATOR).calls == 2

    backend = ScriptedBackend([script()] * 4)
    two = execute(MCTS(verifier="table", n_simulations=2, expansions_per_node=2, rule="puct", c_explore=1.0),
                  PROBLEM, backend, Budget(), rng=random.Random(0))
    stats = next(e for e in algo_trace(two) if e["event"] == "mcts_stats")
    assert stats["visits"] == [5, 4, 1, 2, 1] and stats["value_sum"] == pytest.approx([2.9, 2.7, 0.2, 1.8, 0.3])
    sims = [e for e in algo_trace(two) if e["event"] == "simulation"]
    assert [(s["i"], s["path"], s["revisit"]) for s in sims] == [(0, [0], None), (0, [0, 1], None), (1, [0, 1, 3], 3)]
    assert backend.calls == 2 and two.answer == "7" and two.stop_reason == "done"


@pytest.mark.parametrize("n", [1, 3])
def test_every_path_simulation_ends_at_a_complete_solution_and_a_step_one_may_not(n, table):
    """Solutions three steps deep (``wordy``): with n path simulations the tree holds at least n terminal nodes'
    worth of finished paths (every simulation ends at one; a revisit adds none but costs nothing) and the answer is
    a stated one; n classic simulations of one step each cannot get three steps down from the root when n < 3."""
    table({})
    path = execute(MCTS(verifier="table", n_simulations=n, expansions_per_node=2),
                   PROBLEM, ScriptedBackend([wordy] * 40), Budget(), rng=random.Random(0))
    sims = [e for e in algo_trace(path) if e["event"] == "simulation"]
    nodes = next(e for e in algo_trace(path) if e["event"] == "tree")["nodes"]
    ends = {s["i"] for s in sims if s["revisit"] is not None} | {
        s["i"] for s in sims for c in s["children"] if nodes[c]["terminal"] == "answer"}
    assert sorted(ends) == list(range(n))
    assert path.chosen is not None and path.chosen.text.endswith(f"\\boxed{{{path.answer}}}")
    step = execute(MCTS(verifier="table", n_simulations=min(n, 2), expansions_per_node=2, simulation="step"),
                   PROBLEM, ScriptedBackend([wordy] * 40), Budget(), rng=random.Random(0))
    assert not any(c["terminal"] for c in next(e for e in algo_trace(step) if e["event"] == "tree")["nodes"])


def test_mcts_best_value_picks_the_best_complete_solution(table):
    """Two simulations: root -> c1, c2; then c1 -> d1 (0.9) and d2 (0.95), both boxed. best_value answers with d2,
    the best-valued complete solution."""
    table({"c1": 0.6, "c2": 0.2, "d1 \\boxed{7}": 0.9, "d2 \\boxed{8}": 0.95})
    script = by_prefill({"": ["c1", "c2"], "c1\n\n": ["d1 \\boxed{7}", "d2 \\boxed{8}"]})
    result = execute(MCTS(verifier="table", n_simulations=2, expansions_per_node=2, final="best_value"),
        PROBLEM, ScriptedBackend([script] * 4), Budget(), rng=random.Random(0))
    assert result.answer == "8"


def test_mcts_rollouts_split_the_first_step_and_score_the_complete_solution(table):
    """Outcome verifier -> rollout values: each sample runs on to the end (no stop string); its first step is the
    child, the rest a rollout node scored as a whole. A sample with no blank line that ended by itself ('stop') is a
    complete one-step solution: the child is terminal and scored directly. Blank segments (a leading or doubled
    blank line) are not steps."""
    v = table({"\\boxed{3}": 0.8, "one \\boxed{4}": 0.3}, kind=VerifierKind.OUTCOME)
    script = by_prefill({"": ["\n\ns1\n\ns2\n\n\n\n\\boxed{3}", "one \\boxed{4}"]})
    backend = ScriptedBackend([script] * 2)
    result = execute(MCTS(verifier="table", n_simulations=1, expansions_per_node=2, rollout_max_tokens=50),
        PROBLEM, backend, Budget(), rng=random.Random(0))
    (req,) = backend.requests
    assert req.stop == () and req.max_tokens == 50
    nodes = next(e for e in algo_trace(result) if e["event"] == "tree")["nodes"]
    assert [(n["kind"], n["step"], n["terminal"], n["parent"]) for n in nodes[1:]] == [
        ("step", "s1", None, 0), ("rollout", None, "eos", 1), ("step", "one \\boxed{4}", "answer", 0)]
    assert v.seen == [("s1", "s2", "\\boxed{3}"), ("one \\boxed{4}",)]
    stats = next(e for e in algo_trace(result) if e["event"] == "mcts_stats")
    assert stats["values"] == {"1": 0.8, "2": 0.8, "3": 0.3}
    assert stats["visits"] == [2, 1, 0, 1] and stats["value_sum"][0] == pytest.approx(1.1)
    assert result.answer == "3"  # most visited: tie 1-1 on visits, s1 has the higher Q; its best rollout answers 3


def test_a_trained_prm_named_by_knobs_scores_every_step_prefix(tmp_path):
    """verifier="prm" with verifier_path loads the head onto the search's own backend (the fake's hidden states).
    Each scored node costs one hidden-state request per step prefix, charged to the verifier: the root's children
    a, b (1 prefix each), then the kept beam's two children (2 prefixes each) = 6 calls, plus 2 generate calls."""
    import numpy as np

    from thinkscale.verifiers.trained_prm import LogisticHead, TrainedPRM

    backend = ScriptedBackend([lambda req, j: "ab"[j] if prefill(req) == "" else f"x{j} \\boxed{{{j}}}"] * 4)
    head = LogisticHead(np.zeros(8), np.ones(8), np.ones(8), 0.0)
    path = tmp_path / "prm.json"
    TrainedPRM(backend, head, {"model": {"fingerprint": backend.info().fingerprint}, "feature_dim": 8}).save(path)
    result = execute(BeamSearch(verifier="prm", verifier_path=str(path), beam_width=1, expansions_per_beam=2),
        PROBLEM, backend, Budget(max_calls=10), rng=random.Random(0))
    assert result.chosen is not None
    kept = result.chosen.steps[0]
    assert [r.continuation for r in backend.hidden_requests] == [
        "a", "b", kept, f"{kept}\n\nx0 \\boxed{{0}}", kept, f"{kept}\n\nx1 \\boxed{{1}}"]
    assert result.ledger.total(Role.VERIFIER).calls == 6 and result.ledger.total().calls == 8
    assert len(result.chosen.scores) == 2 and all(0 < x < 1 for x in result.chosen.scores)


# --- budget, seeds, trace, knobs ------------------------------------------------------------------------------------


def wordy(req: GenRequest, j: int) -> str:
    """A step of 3 words, then a boxed answer at depth 3; content depends on the seed (so seeds matter). Without a
    stop string (a rollout) a 3-step solution of 8 words."""
    if not req.stop:
        return f"a{(req.seed or 0) % 97} b c\n\nd e f\n\ndone \\boxed{{{(req.seed or 0) % 5}}}"
    depth = prefill(req).count("\n\n")
    return f"w{(req.seed or 0) % 97} s{j} d{depth}" if depth < 3 else f"done \\boxed{{{(req.seed or 0) % 5}}}"


STRATEGIES = [
    lambda **k: BeamSearch(beam_width=2, expansions_per_beam=2, **k),
    lambda **k: DVTS(n_subtrees=3, expansions_per_step=2, **k),
    lambda **k: MCTS(n_simulations=6, expansions_per_node=2, **k),
    lambda **k: MCTS(n_simulations=6, expansions_per_node=2, value=ValueSource.ROLLOUT, rollout_max_tokens=9, **k),
    lambda **k: ParticleFilter(n_particles=3, **k),
]
IDS = ["beam", "dvts", "mcts-prm", "mcts-rollout", "particle-filter"]


@pytest.mark.parametrize("make", STRATEGIES, ids=IDS)
@pytest.mark.parametrize("budget", [Budget(max_completion_tokens=3), Budget(max_completion_tokens=10),
                                    Budget(max_completion_tokens=40), Budget(max_completion_tokens=200),
                                    Budget(max_calls=1), Budget(max_calls=4), Budget(max_calls=15),
                                    Budget(max_completion_tokens=25, max_calls=9)])
@pytest.mark.parametrize("kind", [VerifierKind.PROCESS, VerifierKind.OUTCOME])
def test_no_budget_is_ever_exceeded(table, make, budget, kind):
    """Token and call limits hold whatever the budget; the verifier's calls count too. When the budget stops the
    search early the result says so."""
    if kind is VerifierKind.PROCESS and make is STRATEGIES[3]:
        pytest.skip("rollout values need an outcome verifier (test_rollouts_refuse_a_process_verifier)")
    table({}, kind=kind)
    result = execute(make(verifier="table", max_step_tokens=5), PROBLEM, ScriptedBackend([wordy] * 500), budget,
                                                            rng=random.Random(1))
    total = result.ledger.total()
    if budget.max_completion_tokens is not None:
        assert total.completion_tokens <= budget.max_completion_tokens
    if budget.max_calls is not None:
        assert total.calls <= budget.max_calls
    if budget in (Budget(max_completion_tokens=3), Budget(max_calls=1)):
        assert result.stop_reason == "budget" and result.candidates == ()
    assert result.ledger.total(Role.VERIFIER).completion_tokens == 0
    if result.candidates:
        assert result.ledger.total(Role.VERIFIER).calls > 0


@pytest.mark.parametrize("make", STRATEGIES[:3] + STRATEGIES[4:], ids=IDS[:3] + IDS[4:])
def test_a_seconds_budget_stops_before_the_next_call(table, make):
    """The fake sleeps 0.02 s per computed token: the first call (a ~9-word prompt and 3-word steps) takes well over
    the 0.05 s allowed, so no second call is started."""
    table({})
    backend = ScriptedBackend([wordy] * 500, seconds_per_token=0.02)
    result = execute(make(verifier="table", max_step_tokens=5), PROBLEM, backend, Budget(max_seconds=0.05),
                                                            rng=random.Random(1))
    assert backend.calls == 1 and result.stop_reason == "budget" and result.candidates


def test_rollouts_refuse_a_process_verifier(table):
    table({})
    with pytest.raises(ValueError, match="outcome verifier"):
        execute(STRATEGIES[3](verifier="table"), PROBLEM, ScriptedBackend([wordy]), Budget(), rng=random.Random(0))


@pytest.mark.parametrize("make", STRATEGIES, ids=IDS)
def test_unlimited_runs_finish_and_charge_generator_and_verifier_apart(table, make):
    table({}, kind=VerifierKind.OUTCOME if make is STRATEGIES[3] else VerifierKind.PROCESS)
    backend = ScriptedBackend([wordy] * 500)
    result = execute(make(verifier="table", max_step_tokens=5), PROBLEM, backend, Budget(), rng=random.Random(1))
    assert result.stop_reason == "done" and result.answer is not None
    gen = result.ledger.total(Role.GENERATOR)
    assert gen.calls == len(backend.requests)
    assert gen.completion_tokens == sum(c.completion_tokens for c in result.candidates)
    assert result.ledger.total(Role.VERIFIER).prompt_tokens > 0


@pytest.mark.parametrize("make", STRATEGIES, ids=IDS)
def test_same_seed_same_search_and_the_trace_is_json(table, make):
    table({}, kind=VerifierKind.OUTCOME)

    def run(seed: int):
        backend = ScriptedBackend([wordy] * 500)
        r = execute(make(verifier="table", max_step_tokens=5), PROBLEM, backend, Budget(), rng=random.Random(seed))
        return r, [q.seed for q in backend.requests]

    (a, seeds_a), (b, seeds_b), (c, seeds_c) = run(3), run(3), run(4)
    assert [x.steps for x in c.candidates] != [x.steps for x in a.candidates]
    assert seeds_a == seeds_b and a.candidates == b.candidates and a.answer == b.answer
    dump = json.dumps(algo_trace(a))
    assert json.loads(dump) == json.loads(json.dumps(algo_trace(b)))
    assert seeds_c != seeds_a
    assert any(e["event"] == "tree" for e in json.loads(dump))


def test_knobs_are_checked(table):
    table({})
    with pytest.raises(ValueError, match="beam_width"):
        BeamSearch(verifier="table", beam_width=0)
    with pytest.raises(ValueError, match="unknown verifier"):
        DVTS(verifier="no-such")
    with pytest.raises(ValueError, match="step_delimiter"):
        BeamSearch(verifier="table", step_delimiter="Step")
    with pytest.raises(ValueError, match="takes no file"):
        MCTS(verifier="pyes", verifier_path="x.json")
    with pytest.raises(ValueError, match="reads the reference"):
        MCTS(verifier="reference")
    with pytest.raises(ValueError, match="c_explore"):
        MCTS(verifier="table", c_explore=-1)
    with pytest.raises(ValueError, match="rule must be one of uct, puct"):
        MCTS(verifier="table", rule="bogus")
    with pytest.raises(ValueError, match="simulation must be one of path, step; got 'rollout'"):
        MCTS(verifier="table", simulation="rollout")
    with pytest.raises(ValueError, match="temperature"):
        DVTS(verifier="table", temperature=0)


def test_registered_with_their_budget_knobs():
    for name, knob in (("beam", "beam_width"), ("dvts", "n_subtrees"), ("mcts", "n_simulations")):
        info = get_strategy(name)
        assert issubclass(info.factory, StepKnobs) and info.factory.budget_knob == knob
        assert knob in {f for f in info.factory.__dataclass_fields__}
        assert info.paper.startswith("https://")
