"""docs/adding-a-strategy.md is a test: its one code block is a complete strategy in one file. Imported from a
folder outside the package (as a user's plugin would be), it registers itself, builds from a spec, runs on the
scripted fake within its budget, and is found by the registry through an entry point too."""

from __future__ import annotations

import importlib
import importlib.metadata
import random
import re
import sys
from pathlib import Path

import pytest

from tests.strategies.helpers import PROBLEM, words
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies import base
from thinkscale.strategies.events import event_from_json
from thinkscale.strategies.run import execute
from thinkscale.types import Budget

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-strategy.md"


def the_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the page has exactly one code block: the strategy file"
    return blocks[0]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The page's file as module ``greedy_check_plugin`` in a folder on sys.path; the registry as it was after."""
    (tmp_path / "greedy_check_plugin.py").write_text(the_example(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    base.load_all()
    saved = dict(base.REGISTRY)
    from thinkscale.strategies import events

    saved_events = dict(events.EVENTS)
    yield "greedy_check_plugin"
    sys.modules.pop("greedy_check_plugin", None)
    base.REGISTRY.clear()
    base.REGISTRY.update(saved)
    events.EVENTS.clear()
    events.EVENTS.update(saved_events)


def test_the_example_is_one_file_that_registers_and_runs(plugin: str) -> None:
    """Greedy answers 42; all 3 checks agree: the greedy chain is chosen, no vote. Calls: 2 (greedy, one batched
    request of 3); tokens: the scripted words (3 + 3 x 3)."""
    importlib.import_module(plugin)
    strategy = base.build_strategy("greedy-check:n_checks=3", max_tokens=20)
    backend = ScriptedBackend([words(3, "42")] * 4)
    result = execute(strategy, PROBLEM, backend, Budget(), rng=random.Random(0))
    assert result.answer == "42" and result.chosen_index == 0 and result.votes is None
    assert backend.calls == 2 and [r.n for r in backend.requests] == [1, 3]
    assert result.ledger.total().completion_tokens == 12 == sum(c.completion_tokens or 0 for c in result.candidates)
    check = next(e for e in result.trace_json() if e["event"] == "greedy_check")
    assert check == {"event": "greedy_check", "greedy_answer": "42", "checks": 3, "agreeing": 3}
    assert event_from_json(check) == next(e for e in result.trace if e.kind == "greedy_check")
    assert "greedy-check" in base.REGISTRY and base.budget_knob("greedy-check") == "n_checks"


def test_the_example_votes_when_the_checks_disagree_and_keeps_the_budget(plugin: str) -> None:
    """Greedy says 7; checks say 9, 9, 7: 7 has 2 votes, 9 has 2 -> a tie, broken by the rng. A token budget of 25
    at max_tokens 20: the greedy chain fits (20 <= 25) and spends 2, the 23 left pay for one check of 20."""
    importlib.import_module(plugin)
    strategy = base.build_strategy("greedy-check:n_checks=3", max_tokens=20)
    result = execute(strategy, PROBLEM, ScriptedBackend([words(2, "7"), words(2, "9"), words(2, "9"),
                                                         words(2, "7")]), Budget(), rng=random.Random(0))
    assert result.votes == {"7": 2.0, "9": 2.0} and result.answer in ("7", "9")
    backend = ScriptedBackend([words(2, "7"), words(2, "9")])
    capped = execute(strategy, PROBLEM, backend, Budget(max_completion_tokens=25), rng=random.Random(0))
    assert [r.n for r in backend.requests] == [1, 1] and capped.stop_reason == "budget"
    assert (capped.ledger.total().completion_tokens or 0) <= 25


def test_an_entry_point_is_found_by_the_registry(plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy of another package: its module named by an entry point of the group thinkscale.strategies is
    imported by ``load_all``, with no edit to thinkscale."""
    ep = importlib.metadata.EntryPoint("greedy-check", plugin, base.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kw):  # type: ignore[no-untyped-def]
        return [ep] if kw.get("group") == base.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(base, "_loaded", False)
    assert "greedy-check" not in base.REGISTRY
    base.load_all()
    assert base.get_strategy("greedy-check").summary.startswith("a greedy answer checked")
