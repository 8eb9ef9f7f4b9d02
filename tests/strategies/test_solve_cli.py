"""``thinkscale solve --strategy SPEC`` with knobs, ``--trace`` and ``thinkscale strategies``, on the scripted fake:
every registered strategy is reachable and documented, and bad knobs fail with one line and exit 2 before any model
is loaded."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import thinkscale.backends
import thinkscale.cli
from tests.strategies.helpers import words, yes_no_score_fn
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.strategies.base import REGISTRY, budget_knob, knobs, load_all

ENV = {"COLUMNS": "250"}
ARGS = ["solve", "What is 2 plus 3?", "--system", "Be brief."]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env=ENV)


@pytest.fixture
def scripted(monkeypatch):
    def install(texts, **kw) -> ScriptedBackend:
        backend = ScriptedBackend(texts, **kw)
        monkeypatch.setattr(thinkscale.cli, "_backend", lambda model, base_url, *, quiet: backend)
        return backend

    return install


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(kind: str) -> type:
        raise AssertionError("bad input should be rejected before a backend is built")

    monkeypatch.setattr(thinkscale.backends, "backend_class", refuse)
    monkeypatch.setattr(thinkscale.cli, "_backend", lambda *a, **k: refuse("any"))


def error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_best_of_n_spec_runs_and_reports_verifier_usage(scripted):
    scripted(["a \\boxed{5}", "b \\boxed{6}", "c \\boxed{6}"],
             score_fn=yes_no_score_fn(lambda p: 0.9 if "a \\boxed{5}" in p else 0.3))
    result = invoke([*ARGS, "--strategy", "best-of-n:n_samples=3,verifier=pyes", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["answer"] == "5" and payload["strategy"] == "best-of-n"
    assert payload["by_role"]["verifier"]["calls"] == 6 and payload["by_role"]["generator"]["calls"] == 1


def test_knob_options_and_shortcuts_reach_the_strategy(scripted):
    """-n is RSA's population; --knob sets the others; --max-tokens its max_tokens."""
    backend = scripted([words(2, "1")] * 6)
    result = invoke([*ARGS, "--strategy", "rsa", "-n", "3", "--knob", "aggregation_size=2", "-k", "rounds=1",
                     "--max-tokens", "9", "--temperature", "0.5", "--json"])
    assert result.exit_code == 0, result.stderr
    first = backend.requests[0]
    assert (first.n, first.max_tokens, first.temperature) == (3, 9, 0.5)
    assert len(backend.requests) == 1 + 3
    assert json.loads(result.stdout)["answer"] == "1"


def test_budget_options_bind(scripted):
    """25 tokens at 10 per chain: 2 of the 3 chains."""
    backend = scripted([words(12, "4")] * 3)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--max-tokens", "10",
                     "--budget-tokens", "25", "--json"])
    assert result.exit_code == 0, result.stderr
    assert backend.requests[0].n == 2
    assert json.loads(result.stdout)["stop_reason"] == "budget"


def test_trace_file_holds_the_json_trace_and_knobs(scripted, tmp_path):
    scripted(["d0 \\boxed{4}", "VERDICT: CORRECT"])
    path = tmp_path / "trace.json"
    result = invoke([*ARGS, "--strategy", "self-refine:max_rounds=2", "--trace", str(path)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(path.read_text())
    assert doc["strategy"] == "self-refine" and doc["knobs"]["max_rounds"] == 2
    assert [e["event"] for e in doc["trace"]] == ["generate", "draft", "generate", "critique", "stop"]
    assert doc["ledger"]["total"]["calls"] == 2


@pytest.mark.parametrize(("args", "needles"), [
    (["--strategy", "nope"], ["'nope'", "best-of-n", "self-refine"]),
    (["--strategy", "self-consistency:n_samples=3", "-n", "4"], ["'n_samples'", "twice"]),
    (["--strategy", "self-consistency", "-k", "n_samples=3", "-k", "n_samples=4"], ["'n_samples'", "twice"]),
    (["--strategy", "self-consistency", "--knob", "beam=3"], ["no knob 'beam'", "n_samples"]),
    (["--strategy", "self-consistency", "--knob", "n_samples"], ["KNOB=VALUE"]),
    (["--strategy", "rsa", "--knob", "rounds=many"], ["'rounds'", "'rsa'", "int"]),
    (["--strategy", "best-of-n:verifier=reference"], ["reference answer"]),
    (["--strategy", "budget-forcing", "--max-tokens", "10"], ["no max_tokens knob", "max_thinking_tokens"]),
    (["--temperature", "0.5"], ["'greedy'", "temperature"]),
    (["-n", "3"], ["greedy takes one sample"]),
    (["--strategy", "self-refine", "-n", "3"], ["'self-refine'", "max_rounds"]),
    (["--strategy", "rsa", "--temperature", "0"], ["temperature", "use --strategy greedy"]),
    (["--budget-tokens", "0"], ["--budget-tokens must be > 0"]),
])
def test_bad_strategy_input_fails_with_exit_2_before_loading(args, needles, no_model_load):
    line = error_line(invoke([*ARGS, "--model", "smollm2-135m", *args]))
    for needle in needles:
        assert needle in line, (needle, line)


def test_help_documents_every_strategys_knobs():
    load_all()
    text = " ".join(invoke(["solve", "--help"]).stdout.split())
    for name in REGISTRY:
        assert f"{name}: {REGISTRY[name].summary}" in text
        for k in knobs(name):
            assert re.search(rf"\b{re.escape(k)}\*?=", text), (name, k)
        assert f"{budget_knob(name)}*=" in text


def test_strategies_lists_names_descriptions_budget_knobs_and_papers():
    load_all()
    table = invoke(["strategies"])
    assert table.exit_code == 0
    rows = json.loads(invoke(["strategies", "--json"]).stdout)
    assert {r["name"] for r in rows} == set(REGISTRY)
    for r in rows:
        assert r["name"] in table.stdout and r["paper"] in table.stdout
        assert r["paper"].startswith("https://") and r["summary"] == REGISTRY[r["name"]].summary
        assert r["budget_knob"] in r["knobs"]
    sc = next(r for r in rows if r["name"] == "best-of-n")
    assert sc["knobs"]["step_aggregation"] == {"type": "last|min|product|mean", "default": "last", "required": False}


def test_table_output_splits_cost_by_role_and_shows_scores(scripted):
    """Weighted vote: 5 has 0.9, 6 has 0.3 + 0.3 = 0.6, so 5 wins. Cost rows: generator 1 call, 3 x 2 = 6 tokens
    generated; verifier 6 P(yes) calls, 0 generated; total 7 calls, 6 generated."""
    scripted(["a \\boxed{5}", "b \\boxed{6}", "c \\boxed{6}"],
             score_fn=yes_no_score_fn(lambda p: 0.9 if "a \\boxed{5}" in p else 0.3))
    result = invoke([*ARGS, "--strategy", "weighted-sc:n_samples=3"])
    assert result.exit_code == 0, result.stderr
    assert "answer: 5" in result.stdout
    assert "scores {'5': 0.9, '6': 0.6}" in result.stdout
    rows = {line.split()[1]: line.split()[2:] for line in result.stdout.splitlines()
            if line.startswith("│") and line.split()[1] in ("generator", "verifier", "total")}
    cells = {role: [c for c in cols if c != "│"] for role, cols in rows.items()}
    assert cells["generator"][0] == "1" and cells["generator"][3] == "6"
    assert cells["verifier"][0] == "6" and cells["verifier"][3] == "0"
    assert cells["total"][0] == "7" and cells["total"][3] == "6"


def test_a_knob_value_with_commas_goes_through_knob(scripted):
    backend = scripted(["d0 \\boxed{4}", "fine, VERDICT: CORRECT"])
    prompt = "Check it, step by step, and end with {correct} or {incorrect}."
    result = invoke([*ARGS, "--strategy", "self-refine", "--knob", f"critique_prompt={prompt}"])
    assert result.exit_code == 0, result.stderr
    assert backend.requests[1].messages[-1].content == \
        "Check it, step by step, and end with VERDICT: CORRECT or VERDICT: INCORRECT."


def test_moa_on_two_models_loads_the_other_one_and_bills_each(monkeypatch) -> None:
    """solve --model a --strategy moa:models=a|b: the proposers on b load like --model (once), a's calls go to the
    loaded model; --json shows the cost by model."""
    built: dict[str, ScriptedBackend] = {}

    def load(model, base_url, *, quiet):  # type: ignore[no-untyped-def]
        assert model not in built, f"{model} loaded twice"
        built[model] = ScriptedBackend(["x \\boxed{3}"] * 4)
        return built[model]

    monkeypatch.setattr(thinkscale.cli, "_backend", load)
    result = invoke(["solve", "What is 1 + 2?", "--model", "a", "--strategy",
                     "moa:n_proposers=2,layers=1,models=a|b,max_tokens=20", "--json"])
    assert result.exit_code == 0, result.stderr
    assert sorted(built) == ["a", "b"] and built["b"].calls == 1 and built["a"].calls == 2  # proposer + aggregator
    payload = json.loads(result.stdout)
    assert payload["answer"] == "3" and payload["by_model"]["b"]["calls"] == 1
    assert payload["by_model"]["a"]["calls"] == 2 and payload["by_model"]["a"]["completion_tokens"] == 4
