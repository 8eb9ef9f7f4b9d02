"""The viewer's model of one run (thinkscale.viewer.model), without a browser: a tree's fates, chosen path and layout;
the vote; DeepConf's early stops; SC-TIR's code runs; auto's choices; numbers JSON cannot hold."""

from __future__ import annotations

import json
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies.helpers import PROBLEM, endless
from thinkscale.backends.scripted import ScriptedBackend, ScriptItem
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.beam_search import BeamStep
from thinkscale.strategies.events import Select, Tool, Tree, TreeNode, Vote
from thinkscale.strategies.mcts import MctsStats, Simulation
from thinkscale.strategies.particle_filter import ParticleStep
from thinkscale.strategies.run import execute
from thinkscale.strategies.sc_tir import Paths
from thinkscale.types import GenRequest, Result
from thinkscale.viewer.model import CandidateRow, RunRecord, build_view, jsonable


def node(i: int, parent: int | None, step: str | None, answer: str | None = None, scores: tuple[float, ...] = (),
         kind: str = "step") -> TreeNode:
    depth = 0 if parent is None else 1 if parent == 0 else 2
    return TreeNode(i, parent, kind, step, depth, "answer" if answer else None, answer, scores, 3, "stop")


# root -> 1 "a" (kept), 2 "b" (pruned), 3 "a" again (a duplicate sample); 1 -> 4 (right, pruned), 5 (chosen, finished)
BEAM_TREE = Tree((node(0, None, None), node(1, 0, "a", None, (0.9,)), node(2, 0, "b", None, (0.2,)),
                  node(3, 0, "a"), node(4, 1, "x = \\boxed{7}", "7", (0.9, 0.4)),
                  node(5, 1, "<script>alert(1)</script> \\boxed{8}", "8", (0.9, 0.8))))
BEAM_EVENTS = (BeamStep(0, (1, 2), (1,), (), 1), BeamStep(1, (4, 5), (5,), (5,), 0),
               Select("argmax", (4,), (0.8,), {"8": 0.8}, "8", 4), BEAM_TREE)


def test_beam_tree_marks_kept_pruned_duplicates_and_the_chosen_path() -> None:
    """Step 0 kept node 1 of {1, 2} (node 3 repeats node 1's step: never compared); step 1 kept and finished node
    5 of {4, 5}. The chosen candidate 4 is node 5, so the path is 0 -> 1 -> 5. Only a trace: no candidate is graded,
    and a node's text is its steps from the root."""
    view = build_view(RunRecord("beam", BEAM_EVENTS))
    tree = view["tree"]
    status = {n["index"]: n["status"] for n in tree["nodes"]}
    assert status == {0: "root", 1: "kept", 2: "pruned", 3: "duplicate", 4: "pruned", 5: "finished"}
    assert [n["index"] for n in tree["nodes"] if n["on_chosen_path"]] == [0, 1, 5]
    assert tree["chosen"] == 5 and tree["algorithm"] == "beam" and tree["depth"] == 2
    assert tree["counts"] == {"duplicate": 1, "finished": 1, "kept": 1, "pruned": 2, "root": 1}
    by = {n["index"]: n for n in tree["nodes"]}
    assert by[5]["text"] == "a\n\n<script>alert(1)</script> \\boxed{8}"  # kept verbatim: the page shows it as text
    assert by[4]["score"] == 0.4 and by[0]["score"] is None  # last step's score (the default aggregation)
    assert all(n["correct"] is None for n in tree["nodes"])
    assert view["chosen"] == 4 and [c["index"] for c in view["candidates"]] == [0, 1, 2, 3, 4]


def test_tree_layout_puts_leaves_in_columns_and_parents_over_their_children() -> None:
    """Depth-first leaves: 4, 5 (under 1), then 2, 3 take columns 0..3; node 1 sits at 0.5, the root over 0.5..3."""
    x = {n["index"]: n["x"] for n in build_view(RunRecord("beam", BEAM_EVENTS))["tree"]["nodes"]}
    assert x == {4: 0.0, 5: 1.0, 1: 0.5, 2: 2.0, 3: 3.0, 0: 1.75}


def test_step_aggregation_knob_and_grades_from_the_candidates() -> None:
    """With step_aggregation=min node 5 scores min(0.9, 0.8); candidates graded by the store mark node 4 right and
    the vote's answer "7" right."""
    cands = tuple(CandidateRow(i, a, correct=a == "7", chosen=i == 4) for i, a in enumerate([None, None, None,
                                                                                                "7", "8"]))
    view = build_view(RunRecord("beam", BEAM_EVENTS, candidates=cands, knobs={"step_aggregation": "min"}))
    by = {n["index"]: n for n in view["tree"]["nodes"]}
    assert by[5]["score"] == 0.8 and by[4]["score"] == 0.4
    assert by[4]["correct"] is True and by[5]["correct"] is False
    assert view["votes"] == {"kind": "score", "winner": "8",
                             "items": [{"answer": "8", "value": 0.8, "winner": True, "correct": False}]}


def test_mcts_visits_values_and_rollouts() -> None:
    nodes = (node(0, None, None), node(1, 0, "s"), node(2, 1, None, "3", kind="rollout"))
    events = (Simulation(0, (0,), expanded=0, children=(1,), values=(0.5,)),
              MctsStats((2, 1, 0), (1.0, 0.5, 0.0), {"1": 0.5, "2": 0.5}), Select("most_visited", (), (), {}, "3", 1),
              Tree(nodes))
    tree = build_view(RunRecord("mcts", events))["tree"]
    assert [(n["status"], n["visits"], n["value"]) for n in tree["nodes"]] == [
        ("root", 2, None), ("kept", 1, 0.5), ("rollout", 0, 0.5)]
    assert tree["algorithm"] == "mcts" and [n["on_chosen_path"] for n in tree["nodes"]] == [True, True, True]


def test_particle_filter_marks_the_particles_drawn_again() -> None:
    nodes = (node(0, None, None), node(1, 0, "p"), node(2, 0, "q"))
    events = (ParticleStep(0, (1, 2), (0.9, 0.1), (0.7, 0.3), (1, 1)), Tree(nodes))
    tree = build_view(RunRecord("particle-filter", events))["tree"]
    assert [n["status"] for n in tree["nodes"]] == ["root", "kept", "pruned"]


def test_vote_counts_and_the_right_answer() -> None:
    cands = (CandidateRow(0, "42", correct=True), CandidateRow(1, "41", correct=False),
             CandidateRow(2, "42.0", correct=True))
    view = build_view(RunRecord("self-consistency", (Vote({"41": 1.0, "42": 2.0}, "42"),), candidates=cands))
    assert view["votes"]["kind"] == "count"
    assert [(i["answer"], i["value"], i["winner"], i["correct"]) for i in view["votes"]["items"]] == [
        ("42", 2.0, True, True), ("41", 1.0, False, False)]
    assert view["tree"] is None and view["code_runs"] is None and view["auto"] is None and view["waves"] is None


def deepconf_run() -> Result:
    """adaptive-sc with the confidence filter on the fake: chains whose words carry logprob -3 (answer 41, about 40%
    of the seeded draws) fall below the first wave's threshold; in later waves the online stop ends them after one
    4-token window (finish reason low_confidence)."""

    def item(req: GenRequest, j: int) -> ScriptItem:
        low = random.Random(req.sample_seed(j)).random() < 0.4
        return ScriptItem("w " * 10 + ("\\boxed{41}" if low else "\\boxed{42}"), (-3.0 if low else -0.05,) * 11)

    return execute(build_strategy("adaptive-sc:confidence_filter=true,confidence_window=4,wave_size=4,max_samples=12,"
                                  "threshold=0.99"), PROBLEM, ScriptedBackend([item] * 100), rng=random.Random(1))


def test_deepconf_waves_say_which_chains_were_stopped_early() -> None:
    res = deepconf_run()
    cands = tuple(CandidateRow(i, c.answer, c.text, c.completion_tokens, c.finish_reason)
                  for i, c in enumerate(res.candidates))
    view = build_view(RunRecord(res.strategy, res.trace, candidates=cands))
    stopped = [c for c in view["candidates"] if c["stopped_early"]]
    assert stopped and all(c["completion_tokens"] == 4 and c["kept"] is False and c["wave"] > 0 for c in stopped)
    assert sum(w["stopped"] or 0 for w in view["waves"]) == len(stopped)
    assert all(c["kept"] for c in view["candidates"] if c["confidence"] > 0.5)


def test_code_runs_of_sc_tir() -> None:
    events = (Tool(0, 0, 0, False, None, None, 0.01, 0.5, 3, 0, "print(6*7)", "42\n"),
              Tool(1, 0, 1, False, None, "ZeroDivisionError", 0.01, 0.5, 0, 90, "print(1/0)", ""),
              Paths(("answered", "length"), (1, 1)))
    cr = build_view(RunRecord("sc-tir", events))["code_runs"]
    assert [(r["path"], r["code"], r["stdout"], r["exception"]) for r in cr["runs"]] == [
        (0, "print(6*7)", "42\n", None), (1, "print(1/0)", "", "ZeroDivisionError")]
    assert cr["ends"] == ["answered", "length"] and cr["code_runs"] == [1, 1]


def test_auto_shows_features_bin_action_checks_and_stop() -> None:
    """auto with the packaged policy on the seeded fake: the first wave's features and bin, the action, each check,
    and why it stopped, all from its typed events."""
    res = execute(build_strategy("auto"), PROBLEM, endless(), rng=random.Random(0))
    auto = build_view(RunRecord(res.strategy, res.trace))["auto"]
    assert auto["bin"] in auto["bins"] and auto["action"] and auto["features"]["n"] >= 1
    assert auto["stop"] is not None and auto["policy"]["policy"]
    assert all(0 <= c["P"] <= 1 for c in auto["checks"])


def test_non_finite_numbers_become_strings() -> None:
    """JSON has no Infinity or NaN (a browser's JSON.parse refuses them): they are sent as text."""
    assert jsonable({"a": [math.inf, -math.inf, 1.5], "b": (math.nan,)}) == {"a": ["inf", "-inf", 1.5], "b": ["nan"]}
    view = build_view(RunRecord("mcts", (MctsStats((1,), (math.inf,), {"0": math.inf}), Tree((node(0, None, None),)))))
    json.dumps(view, allow_nan=False)


small = st.integers(min_value=-2, max_value=12)
scores = st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3).map(tuple)
tree_nodes = st.lists(st.builds(TreeNode, index=small, parent=st.none() | small,
                                kind=st.sampled_from(["step", "rollout"]), step=st.none() | st.text(max_size=8),
                                depth=small, terminal=st.none() | st.just("eos"),
                                answer=st.none() | st.text(max_size=4), step_scores=scores,
                                completion_tokens=st.none() | small, finish_reason=st.none() | st.just("stop")),
                      max_size=10).map(lambda ns: Tree(tuple(ns)))
refs = st.lists(small, max_size=4).map(tuple)
any_event = st.one_of(
    tree_nodes, st.builds(BeamStep, small, refs, refs, refs, small),
    st.builds(ParticleStep, small, refs, scores, scores, refs),
    st.builds(Select, st.just("argmax"), refs, scores, st.dictionaries(st.text(max_size=3), st.floats(), max_size=3),
              st.none() | st.text(max_size=3), st.none() | small),
    st.builds(MctsStats, st.lists(small, max_size=5).map(tuple), scores,
              st.dictionaries(st.text(max_size=3), st.floats(), max_size=3)),
    st.builds(Vote, st.dictionaries(st.text(max_size=3), st.floats(), max_size=3), st.none() | st.text(max_size=3)))


@settings(max_examples=150, deadline=None)
@given(st.lists(any_event, max_size=6), st.none() | st.lists(st.booleans(), max_size=6))
def test_any_well_typed_trace_gives_a_view(events: list, graded: list[bool] | None) -> None:
    """Whatever the events say (parents out of range or in a cycle, steps naming nodes that do not exist, scores
    that are not finite), the view is built and is valid JSON: a damaged trace is never a 500."""
    cands = None if graded is None else tuple(CandidateRow(i, str(i % 2), correct=g, chosen=i == 0)
                                              for i, g in enumerate(graded))
    json.dumps(build_view(RunRecord("x", tuple(events), candidates=cands)), allow_nan=False)
