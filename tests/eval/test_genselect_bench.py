"""bench/genselect_select.py on a stored run of the scripted fake: the judged subsets are the harness's, the
majority on them reproduces the store's vote at k = N, a judge that finds the right chain reaches pass@k, one that
names nothing falls back to the vote, and the replies are cached (a second run calls no model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import thinkscale.backends
from tests.helpers.bench import load_bench
from tests.verifiers.test_orm_fit import LIMIT, run  # noqa: F401  (the stored run fixture: 4 chains per problem)
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.types import GenRequest


def knowing_judge(req: GenRequest, j: int) -> str:
    """Names the option whose chain shows the right working ("First add"), else a word that is no option."""
    assert req.messages is not None and req.continue_final
    user = req.messages[-2].content
    for letter, body in re.findall(r"Candidate ([A-Z]) \(final answer: [^)]*\):\n(.*?)(?=\n\nCandidate |\n\nWhich)",
                                   user, re.S):
        if "First add" in body:
            return f" {letter}"
    return " none"


def patch_backend(monkeypatch: pytest.MonkeyPatch, entry, made: list[ScriptedBackend]) -> None:
    def load(model: str, **kw: object) -> ScriptedBackend:
        made.append(ScriptedBackend([entry] * 1000))
        return made[-1]

    monkeypatch.setattr(thinkscale.backends, "load_backend", load)


def test_a_judge_that_finds_the_right_chain_reaches_pass_at_k(run: Path, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch):
    made: list[ScriptedBackend] = []
    patch_backend(monkeypatch, knowing_judge, made)
    bench = load_bench("genselect_select")
    cache, out = tmp_path / "replies.jsonl", tmp_path / "sel.json"
    args = [str(run), "--ks", "2,4", "--subsets", "2", "--cache", str(cache), "--out", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())["by_k"]
    stored = json.loads(out.read_text())
    assert stored["subsets_judged_per_problem"] == 2 and stored["mode"] == "direct"
    at4 = res["4"]
    # k = N: one subset, the majority on it is the store's exact vote
    assert at4["judged_subsets"] == LIMIT and at4["majority_same_subsets"]["accuracy"] == pytest.approx(
        at4["majority_all_subsets"])
    # every problem has a right chain among its 4, the judge finds it: pass@4
    assert at4["genselect"]["accuracy"] == pytest.approx(at4["pass_at_k"]) == 1.0
    assert at4["replies_naming_an_option"] == at4["selection_calls"] > 0
    assert sum(at4["letters_named"].values()) == at4["selection_calls"] and at4["mean_options_shown"] >= 2
    assert at4["verifier_per_problem"]["prompt_tokens"] > 0
    assert res["2"]["judged_subsets"] == 2 * LIMIT
    asked = sum(len(b.requests) for b in made)
    assert asked == at4["selection_calls"] + res["2"]["selection_calls"] == len(cache.read_text().splitlines())
    made.clear()
    assert bench.main(args) == 0  # every reply cached: no model is loaded
    assert made == [] and json.loads(out.read_text())["by_k"] == res


def test_a_judge_that_names_nothing_is_the_vote(run: Path, tmp_path: Path,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch):
    made: list[ScriptedBackend] = []
    patch_backend(monkeypatch, lambda req, j: " I am not sure", made)
    out = tmp_path / "sel.json"
    assert load_bench("genselect_select").main([str(run), "--ks", "4", "--out", str(out)]) == 0
    at4 = json.loads(out.read_text())["by_k"]["4"]
    assert at4["replies_naming_an_option"] == 0 and at4["selection_calls"] > 0
    assert at4["genselect"]["accuracy"] == pytest.approx(at4["majority_same_subsets"]["accuracy"])
    assert at4["genselect_vs_majority"]["diff"] == 0
