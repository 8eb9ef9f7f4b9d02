"""Trace events: their JSON form reads back to the same event, and old stores' free-form traces are converted."""

from __future__ import annotations

import json
import random

import pytest

from tests.strategies.helpers import PROBLEM, endless
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.beam_search import BeamStep
from thinkscale.strategies.dvts import DvtsStep
from thinkscale.strategies.events import (
    Generate,
    Legacy,
    RequestInfo,
    Select,
    Stop,
    Tool,
    TraceError,
    Verify,
    Vote,
    event_from_json,
    parse_trace,
)
from thinkscale.strategies.run import execute
from thinkscale.types import Budget, Usage


@pytest.mark.parametrize("spec", ["greedy", "self-consistency:n_samples=3", "adaptive-sc:max_samples=6",
                                  "rsa:population=3,rounds=1", "self-refine:max_rounds=1",
                                  "budget-forcing:max_thinking_tokens=30,min_thinking_tokens=10"])
def test_every_event_reads_back_from_its_json(spec: str) -> None:
    result = execute(build_strategy(spec, max_tokens=20) if "budget-forcing" not in spec else build_strategy(spec),
                     PROBLEM, endless(), Budget(), rng=random.Random(0))
    assert result.trace
    for e in result.trace:
        assert event_from_json(json.loads(json.dumps(e.to_json()))) == e
    assert parse_trace(result.trace_json()) == result.trace  # the current form parses as it is


def test_an_unknown_kind_or_field_is_an_error_and_parse_trace_keeps_it_verbatim() -> None:
    with pytest.raises(TraceError, match="unknown trace event 'nope'"):
        event_from_json({"event": "nope"})
    with pytest.raises(TraceError, match="no field"):
        event_from_json({"event": "stop", "reason": "budget", "bogus": 1})
    assert parse_trace([{"event": "nope", "x": 1}]) == (Legacy({"event": "nope", "x": 1}),)


def test_old_free_form_traces_are_converted() -> None:
    """The forms stores written before the typed events hold (one of each that the committed stores have)."""
    usage = {"prompt_tokens": 6, "cached_prompt_tokens": 0, "completion_tokens": 9, "calls": 1, "seconds": 0.5,
             "flops": 1.0}
    old = [
        {"event": "generate", "n": 3, "seed": 17, "usage": usage},  # self-consistency, best-of-n
        {"event": "generate", "n": 1, "max_tokens": 512, "usage": usage},  # greedy
        {"event": "generate", "expand": [[0, 4], [2, 2]], "stop_at_step": True, "max_tokens": 256,
         "seeds": [5, 6], "usage": [usage, usage]},  # tree searches
        {"event": "generate", "round": 1, "paths": [0, 2], "seeds": [7, 8], "usage": usage},  # sc-tir
        {"event": "score", "verifier": "pyes", "scored": 2, "scores": [0.25, 0.75], "step_aggregation": "last",
         "calls": 4},
        {"event": "select", "selection": "argmax", "tally": {"3": 0.75}, "winner": "3", "index": 1,
         "tie_broken_by_rng": False},
        {"event": "select", "how": "argmax", "pool": [3, 5], "scores": [0.5, 0.9], "tally": {"2": 0.9},
         "tie_broken_by_rng": False, "chosen": 5},  # a tree search: node indices
        {"event": "step", "step": 0, "children": [1, 2], "kept": [2], "finished": [], "width": 1},
        {"event": "step", "step": 0, "subtrees": [0, 1], "children": [[1], [2]], "heads": [1, 2]},
        {"event": "tool", "round": 0, "path": 1, "exit_code": 0, "timed_out": False, "killed_reason": None,
         "exception": None, "wall_seconds": 0.1, "call_seconds": 0.2, "stdout_bytes": 4, "stderr_bytes": 0},
        {"event": "stop", "reason": "budget", "detail": "no room", "spent": {"calls": 3}},
        {"event": "vote", "counts": {"3": 2}, "tie_broken_by_rng": False, "winner": "3"},
    ]
    new = parse_trace(old)
    u = Usage(6, 0, 9, 1, 0.5, 1.0)
    assert new[0] == Generate("generator", (RequestInfo(3, 17),), u)
    assert new[1] == Generate("generator", (RequestInfo(1, None, 512),), u)
    assert new[2] == Generate("generator", (RequestInfo(4, 5, 256, continue_final=True),
                                            RequestInfo(2, 6, 256, continue_final=True)), u + u, "expand", (0, 2))
    assert new[3].requests == (RequestInfo(1, 7, continue_final=True), RequestInfo(1, 8, continue_final=True))
    assert isinstance(new[4], Verify) and new[4].refs == (0, 1) and new[4].scores == ((0.25,), (0.75,))
    assert new[5] == Select("argmax", (), (), {"3": 0.75}, "3", 1)
    assert isinstance(new[6], Select) and new[6].pool == (2, 4) and new[6].chosen == 4  # candidate = node - 1
    assert new[7] == BeamStep(0, (1, 2), (2,), (), 1)
    assert new[8] == DvtsStep(0, (0, 1), ((1,), (2,)), (1, 2))
    assert isinstance(new[9], Tool) and new[9].ref == 1 and new[9].round == 0
    assert new[10] == Stop("budget", "no room; spent={'calls': 3}")
    assert new[11] == Vote({"3": 2.0}, "3")
