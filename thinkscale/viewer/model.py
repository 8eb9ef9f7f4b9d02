"""What the viewer page shows of one strategy run: plain JSON-ready dicts built from the typed trace events.

``build_view(record)`` reads a ``RunRecord`` (a run's events, its candidates when the source kept them, its cost,
the problem and reference when known) and returns the sections the page draws: the candidates with their answers,
scores, tokens and finish reasons; the vote; the search tree of beam / DVTS / MCTS / particle filtering (layout
included, each node kept or pruned, the chosen path, the right answers); SC-TIR's code runs; auto's features, bin,
action and stop; adaptive-sc's waves (where DeepConf stopped a chain); the cost; and every event as a timeline line.
Everything is computed here, in Python, so the page only draws and the numbers are unit-tested without a browser.
The page shows all text with ``textContent``: nothing built here is ever treated as HTML.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thinkscale.answers.extract import normalize_answer
from thinkscale.strategies.adaptive_sc import Wave
from thinkscale.strategies.auto import Check, DifficultyEstimate, PolicyAction, PolicyInfo
from thinkscale.strategies.beam_search import BeamStep
from thinkscale.strategies.dvts import DvtsStep, Subtrees
from thinkscale.strategies.events import Delegate, Generate, Select, Stop, Tool, Tree, TreeNode, Verify, Vote
from thinkscale.strategies.mcts import MctsStats, Simulation
from thinkscale.strategies.particle_filter import ParticleStep
from thinkscale.strategies.sc_tir import Paths
from thinkscale.types import Event
from thinkscale.verifiers.aggregate import StepAggregation, aggregate_steps


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as a source keeps it (the eval store's ``samples`` row, or a live Result's Candidate)."""

    index: int
    answer: str | None
    text: str | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    scores: tuple[float, ...] = ()
    chosen: bool = False
    correct: bool | None = None  # None: no reference to grade against


@dataclass(frozen=True)
class RunRecord:
    """One strategy run, whatever its source. ``candidates`` is None when the source kept none (a ``--trace`` file:
    then what the events say of them is shown). ``ledger``: ``Ledger.to_dict()``'s form (total, by_role,
    elapsed_seconds). ``knobs``: the strategy's knobs when known (the step aggregation of a tree's scores)."""

    strategy: str
    events: tuple[Event, ...]
    spec: str | None = None
    answer: str | None = None
    stop_reason: str | None = None
    candidates: tuple[CandidateRow, ...] | None = None
    ledger: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    correct: bool | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific facts (budget, model, seed, units)


def build_view(rec: RunRecord) -> dict[str, Any]:
    """The page's model of one run (see the module doc); JSON-ready (non-finite floats are strings)."""
    events = rec.events
    cands = list(rec.candidates) if rec.candidates is not None else candidates_from_events(events)
    chosen = next((c.index for c in cands if c.chosen), None)
    view: dict[str, Any] = {
        "strategy": rec.strategy, "spec": rec.spec, "answer": rec.answer, "stop_reason": rec.stop_reason,
        "stop_detail": _stop_detail(events), "problem": rec.problem, "correct": rec.correct, **rec.extra,
        "texts_kept": rec.candidates is not None and any(c.text is not None for c in cands),
        "candidates": _candidate_rows(cands, events), "chosen": chosen,
        "votes": votes(events, cands), "tree": tree_view(events, cands, chosen, _aggregation(rec.knobs)),
        "code_runs": code_runs(events), "auto": auto_view(events), "waves": waves(events),
        "stops": [{"reason": e.reason, "detail": e.detail} for e in events if isinstance(e, Stop)],
        "cost": cost_rows(rec.ledger), "timeline": [timeline_item(i, e) for i, e in enumerate(events)],
    }
    return jsonable(view)


# ---------------------------------------------------------------------- candidates


def candidates_from_events(events: Sequence[Event]) -> list[CandidateRow]:
    """What the events alone say of the candidates (a trace file keeps no candidate list): a tree's nodes (node i is
    candidate i - 1), else the candidates that verifier calls scored; the last Select's choice marked chosen."""
    chosen = _last_chosen(events)
    tree = _last(events, Tree)
    if tree is not None:
        return [CandidateRow(n.index - 1, n.answer, _path_text(tree.nodes, n.index), n.completion_tokens,
                             n.finish_reason, n.step_scores, n.index - 1 == chosen) for n in tree.nodes[1:]]
    scores = _scores_by_ref(events)
    return [CandidateRow(i, None, scores=scores[i], chosen=i == chosen) for i in sorted(scores)]


def _candidate_rows(cands: Sequence[CandidateRow], events: Sequence[Event]) -> list[dict[str, Any]]:
    """The candidates table: each candidate, with its wave and DeepConf confidence (adaptive-sc) when it had one."""
    per_chain = _wave_of_chain(events)
    out = []
    for c in cands:
        row: dict[str, Any] = {"index": c.index, "answer": c.answer, "text": c.text,
                               "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason,
                               "scores": list(c.scores), "chosen": c.chosen, "correct": c.correct,
                               "stopped_early": c.finish_reason == "low_confidence"}
        row.update(per_chain.get(c.index, {}))
        out.append(row)
    return out


def _scores_by_ref(events: Sequence[Event]) -> dict[int, tuple[float, ...]]:
    """Each candidate's scores from the verifier calls (a later call on the same candidate wins)."""
    out: dict[int, tuple[float, ...]] = {}
    for e in events:
        if isinstance(e, Verify):
            for ref, row in zip(e.refs, e.scores, strict=False):
                out[ref] = tuple(row)
    return out


def _wave_of_chain(events: Sequence[Event]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for w in events:
        if isinstance(w, Wave):
            for j in range(w.n):
                info: dict[str, Any] = {"wave": w.wave}
                if w.confidences is not None and j < len(w.confidences):
                    info["confidence"] = w.confidences[j]
                if w.kept is not None and j < len(w.kept):
                    info["kept"] = w.kept[j]
                out[w.first_sample + j] = info
    return out


# ---------------------------------------------------------------------- the vote


def votes(events: Sequence[Event], cands: Sequence[CandidateRow]) -> dict[str, Any] | None:
    """The final selection's weight per answer (the last Vote, else the last Select with a tally): ``kind`` is
    "count" for a majority vote, "score" for verifier scores; each answer is marked right when a right candidate
    gave it (None without a reference)."""
    last = next((e for e in reversed(events) if isinstance(e, Vote) or (isinstance(e, Select) and e.tally)), None)
    if last is None:
        return None
    if isinstance(last, Vote):
        weights, kind, winner = (last.weights or last.counts), ("score" if last.weights else "count"), last.winner
    else:
        weights, kind, winner = last.tally, "score", last.winner
    right = _right_answers(cands)
    items = [{"answer": a, "value": v, "winner": a == winner,
              "correct": None if right is None else a in right}
             for a, v in sorted(weights.items(), key=lambda kv: (-_num(kv[1]), kv[0]))]
    return {"kind": kind, "winner": winner, "items": items}


def _right_answers(cands: Sequence[CandidateRow]) -> set[str] | None:
    if not any(c.correct is not None for c in cands):
        return None
    return {a for c in cands if c.correct and (a := normalize_answer(c.answer)) is not None}


# ---------------------------------------------------------------------- the search tree


def tree_view(events: Sequence[Event], cands: Sequence[CandidateRow], chosen: int | None,
              how: StepAggregation) -> dict[str, Any] | None:
    """The search tree (the last Tree event) laid out for drawing: each node's depth ``y`` and column ``x`` (leaves in
    order, a parent over the middle of its children), its status (``kept``, ``pruned``, ``finished``, ``duplicate``
    never scored, ``root``), its aggregated score, MCTS visits and value, whether it is on the chosen path and
    whether its answer is right (when the reference is known)."""
    tree = _last(events, Tree)
    if tree is None or not tree.nodes:
        return None
    nodes = tree.nodes
    status, algorithm = _node_status(events, len(nodes))
    visits, values = _mcts_numbers(events)
    chosen_node = None if chosen is None else chosen + 1
    on_path = set(_ancestors(nodes, chosen_node))
    by_cand = {c.index: c for c in cands}
    x = _layout(nodes)
    out = []
    for n in nodes:
        c = by_cand.get(n.index - 1)
        out.append({
            "index": n.index, "parent": n.parent, "x": x[n.index], "y": n.depth, "kind": n.kind, "step": n.step,
            "answer": n.answer, "terminal": n.terminal, "step_scores": list(n.step_scores),
            "score": aggregate_steps(n.step_scores, how) if n.step_scores else None,
            "completion_tokens": n.completion_tokens, "finish_reason": n.finish_reason,
            "status": "rollout" if n.kind == "rollout" else status.get(n.index, "duplicate"),
            "visits": visits.get(n.index), "value": values.get(n.index),
            "on_chosen_path": n.index in on_path, "chosen": n.index == chosen_node,
            "correct": None if c is None else c.correct,
            "text": (c.text if c is not None and c.text is not None else _path_text(nodes, n.index)),
        })
    return {"algorithm": algorithm, "aggregation": how.value, "nodes": out, "chosen": chosen_node,
            "width": max(x.values()) + 1, "depth": max(n.depth for n in nodes),
            "counts": dict(sorted(Counter(str(n["status"]) for n in out).items()))}


def _node_status(events: Sequence[Event], n_nodes: int) -> tuple[dict[int, str], str]:
    """Each node's fate in its search: beam (kept in the top M / pruned / finished), DVTS (a subtree's new head /
    pruned), particle filtering (drawn again / not drawn), MCTS (expanded children are all kept; rollouts are
    marked as such). A node made but never compared (a duplicate sample) is ``duplicate``."""
    status = {i: "duplicate" for i in range(n_nodes)}
    status[0] = "root"
    algorithm = "tree"
    for e in events:
        if isinstance(e, BeamStep):
            algorithm = "beam"
            _mark(status, e.children, "pruned")
            _mark(status, e.kept, "kept")
            _mark(status, e.finished, "finished")
        elif isinstance(e, DvtsStep):
            algorithm = "dvts"
            _mark(status, (c for g in e.children for c in g), "pruned")
            _mark(status, e.heads, "kept")
        elif isinstance(e, ParticleStep):
            algorithm = "particle-filter"
            _mark(status, e.particles, "pruned")
            _mark(status, e.resampled, "kept")
        elif isinstance(e, Simulation):
            algorithm = "mcts"
            _mark(status, e.children, "kept")
        elif isinstance(e, Subtrees):
            _mark(status, (s for s in e.solutions if s), "finished")
    return status, algorithm


def _mark(status: dict[int, str], nodes: Iterable[int], what: str) -> None:
    for i in nodes:
        if i in status and status[i] != "root":
            status[i] = what


def _mcts_numbers(events: Sequence[Event]) -> tuple[dict[int, int], dict[int, float]]:
    stats = _last(events, MctsStats)
    if stats is None:
        return {}, {}
    visits = {i: v for i, v in enumerate(stats.visits)}
    values = {int(k): v for k, v in stats.values.items() if k.lstrip("-").isdigit()}
    return visits, values


def _ancestors(nodes: Sequence[TreeNode], index: int | None) -> list[int]:
    """``index`` and its ancestors up to the root, in that order (a malformed tree's cycle is walked once)."""
    by_index = {n.index: n for n in nodes}
    out: list[int] = []
    while index is not None and index in by_index and index not in out:
        out.append(index)
        index = by_index[index].parent
    return out


def _layout(nodes: Sequence[TreeNode]) -> dict[int, float]:
    """Columns for a tidy drawing: leaves take 0, 1, 2, ... in depth-first order (children by index), a parent sits
    over the middle of its first and last child. Iterative, so a deep tree cannot exhaust the stack; a node no root
    reaches (a malformed tree) is placed after the others."""
    children: dict[int, list[int]] = {n.index: [] for n in nodes}
    roots = []
    for n in nodes:
        if n.parent is not None and n.parent in children and n.parent != n.index:
            children[n.parent].append(n.index)
        else:
            roots.append(n.index)
    x: dict[int, float] = {}
    leaves = [0]

    def place(top: int) -> None:
        stack = [(top, iter(children[top]))]
        visiting = {top}
        while stack:
            node, rest = stack[-1]
            child = next((c for c in rest if c not in x and c not in visiting), None)
            if child is not None:
                visiting.add(child)
                stack.append((child, iter(children[child])))
                continue
            stack.pop()
            placed = [x[c] for c in children[node] if c in x]
            if placed:
                x[node] = (placed[0] + placed[-1]) / 2
            else:
                x[node] = float(leaves[0])
                leaves[0] += 1

    for r in roots:
        place(r)
    for n in nodes:
        if n.index not in x:
            place(n.index)
    return x


def _path_text(nodes: Sequence[TreeNode], index: int, delimiter: str = "\n\n") -> str:
    """A node's partial solution: the steps from the root down to it."""
    by_index = {n.index: n for n in nodes}
    steps = [by_index[i].step for i in reversed(_ancestors(nodes, index))]
    return delimiter.join(s for s in steps if s is not None)


# ---------------------------------------------------------------------- SC-TIR, auto, adaptive-sc


def code_runs(events: Sequence[Event]) -> dict[str, Any] | None:
    """SC-TIR / PAL: every sandbox run (path, round, code, output, exit, exception) and how each path ended."""
    runs = [{"path": e.ref, "round": e.round, "code": e.code, "stdout": e.stdout, "exit_code": e.exit_code,
             "exception": e.exception, "timed_out": e.timed_out, "killed_reason": e.killed_reason,
             "wall_seconds": e.wall_seconds} for e in events if isinstance(e, Tool)]
    paths = _last(events, Paths)
    if not runs and paths is None:
        return None
    return {"runs": runs, "ends": list(paths.ends) if paths else None,
            "code_runs": list(paths.code_runs) if paths else None}


def auto_view(events: Sequence[Event]) -> dict[str, Any] | None:
    """auto: the policy, the first wave's features, the difficulty score and bin, the action the policy chose and
    why, each stopping check, the stop, and the sub-strategy it delegated to (its own view)."""
    diff, action, policy = _last(events, DifficultyEstimate), _last(events, PolicyAction), _last(events, PolicyInfo)
    if diff is None and action is None and policy is None:
        return None
    stop = _last(events, Stop)
    sub = _last(events, Delegate)
    return {
        "policy": None if policy is None else {"policy": policy.policy, "fitted_on": policy.fitted_on,
                                               "max_completion_tokens": policy.max_completion_tokens},
        "features": None if diff is None else diff.features,
        "score_kind": None if diff is None else diff.score_kind, "score": None if diff is None else diff.score,
        "bin": None if diff is None else diff.bin, "bins": [] if diff is None else list(diff.bins),
        "edges": [] if diff is None else list(diff.edges),
        "action": None if action is None else action.label, "action_fields": None if action is None else action.action,
        "fitted": None if action is None else action.fitted,
        "checks": [{"samples": c.samples, "P": c.P, "threshold": c.threshold, "counts": c.counts}
                   for c in events if isinstance(c, Check)],
        "stop": None if stop is None else {"reason": stop.reason, "detail": stop.detail},
        "delegate": None if sub is None else build_view(RunRecord(sub.spec, sub.trace, spec=sub.spec,
                                                                  answer=sub.answer, stop_reason=sub.stop_reason)),
    }


def waves(events: Sequence[Event]) -> list[dict[str, Any]] | None:
    """adaptive-sc: each wave's chains, the vote so far and P, and with DeepConf the threshold, how many chains the
    online stop ended early and how many were kept."""
    out = []
    for w in events:
        if isinstance(w, Wave):
            stopped = w.online_stop.get("stopped") if isinstance(w.online_stop, dict) else None
            out.append({"wave": w.wave, "n": w.n, "first_sample": w.first_sample, "counts": w.counts, "P": w.P,
                        "threshold": w.confidence_threshold, "kept": None if w.kept is None else sum(w.kept),
                        "stopped": stopped,
                        "online_stop": w.online_stop if isinstance(w.online_stop, str) else None})
    return out or None


# ---------------------------------------------------------------------- cost and timeline

USAGE_FIELDS = ("prompt_tokens", "cached_prompt_tokens", "completion_tokens", "calls", "seconds", "flops")


def cost_rows(ledger: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cost table from a ledger dict (``Ledger.to_dict()``): one row per role, then the total."""
    if not isinstance(ledger, dict):
        return None
    rows = []
    by_role = ledger.get("by_role")
    if isinstance(by_role, dict):
        rows += [{"role": str(r), **_usage_fields(u)} for r, u in by_role.items()]
    if isinstance(ledger.get("total"), dict):
        rows.append({"role": "total", **_usage_fields(ledger["total"])})
    return {"rows": rows, "wall_seconds": ledger.get("elapsed_seconds")}


def _usage_fields(u: Any) -> dict[str, Any]:
    return {k: (u.get(k) if isinstance(u, dict) else None) for k in USAGE_FIELDS}


def timeline_item(i: int, e: Event) -> dict[str, Any]:
    """One line per event: its kind, a short summary, and the full event (shown as text on click)."""
    return {"i": i, "kind": e.kind, "summary": summary(e), "event": e.to_json()}


def summary(e: Event) -> str:
    """A one-line account of an event: the calls' numbers for the shared events, else its fields, shortened."""
    if isinstance(e, Generate):
        samples = sum(r.n for r in e.requests)
        return (f"{e.role}{' ' + e.tag if e.tag else ''}: {len(e.requests)} request(s), {samples} sample(s), "
                f"{e.usage.completion_tokens} completion tokens")
    if isinstance(e, Verify):
        return f"{e.verifier or 'verifier'}: scored {len(e.refs)} candidate(s) in {e.calls} call(s)"
    if isinstance(e, Tool):
        what = "timed out" if e.timed_out else (e.exception or f"exit {e.exit_code}")
        return f"code run of path {e.ref}, round {e.round}: {what}"
    if isinstance(e, Stop):
        return f"stop: {e.reason}" + (f" ({e.detail})" if e.detail else "")
    if isinstance(e, Tree):
        return f"tree of {len(e.nodes)} nodes"
    if isinstance(e, Vote):
        tally = e.weights or e.counts
        return f"vote: {_short(e.winner)} wins; " + ", ".join(f"{_short(a)}: {v:g}" for a, v in tally.items())
    if isinstance(e, Select):
        among = f" among {len(e.pool)}" if e.pool else ""
        return f"select ({e.how}{among}): candidate {e.chosen}, answer {_short(e.winner)}"
    if isinstance(e, Delegate):
        return f"ran {e.spec}: answer {e.answer!r}, {len(e.trace)} events, {e.stop_reason}"
    data = {k: v for k, v in e.to_json().items() if k != "event" and v is not None}
    text = ", ".join(f"{k}={_short(v)}" for k, v in data.items())
    return text[:200] + ("…" if len(text) > 200 else "")


def _short(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 60 else s[:59] + "…"


# ---------------------------------------------------------------------- helpers


def _last(events: Sequence[Event], kind: type[Any]) -> Any:
    return next((e for e in reversed(events) if isinstance(e, kind)), None)


def _last_chosen(events: Sequence[Event]) -> int | None:
    sel = _last(events, Select)
    return None if sel is None else sel.chosen


def _stop_detail(events: Sequence[Event]) -> str | None:
    stop = _last(events, Stop)
    if stop is None:
        return None
    return stop.reason + (f": {stop.detail}" if stop.detail else "")


def _aggregation(knobs: dict[str, Any]) -> StepAggregation:
    try:
        return StepAggregation(knobs.get("step_aggregation", "last"))
    except ValueError:
        return StepAggregation.LAST


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float as a string ("inf", "nan"): JSON has no such numbers, and a browser's
    JSON.parse refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
