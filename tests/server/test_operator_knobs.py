"""Knobs that name server files or resources (a PRM or policy path, the sandbox's limits) are the operator's:
``thinkscale serve --strategy-knobs`` sets them for every request of a strategy; a request that tries is refused."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from typer.testing import CliRunner

from tests.server.harness import MODEL, endless, serve
from thinkscale.cli import app
from thinkscale.server.catalogue import StrategyCatalogue, operator_knobs
from thinkscale.strategies import base as strategies
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.types import GenRequest, Result


def chat(url: str, strategy: str, **params) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is 6 times 7?"}],
            "thinkscale": {"strategy": strategy, **({"params": params} if params else {})}}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(("strategy", "knob", "value"), [
    ("best-of-n", "verifier_path", "/etc/passwd"),
    ("mcts", "verifier_path", "http://169.254.169.254/"),
    ("auto", "policy", "/etc/shadow"),
    ("sc-tir", "code_memory_mb", 100_000),
    ("pal", "code_timeout_seconds", 3600.0),
    ("sc-tir", "sandbox_workers", 64),
])
def test_a_request_cannot_set_a_knob_that_names_a_server_resource(strategy, knob, value):
    be = endless()
    with serve(be) as s:
        r = chat(s.url, strategy, **{knob: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == f"thinkscale.params.{knob}"
    assert "only the server's operator sets it" in err["message"] and "--strategy-knobs" in err["message"]
    assert be.calls == 0


def test_operator_settings_apply_to_every_request_and_plain_knobs_stay_overridable():
    be = endless()
    with serve(be, strategy_knobs=["self-consistency:n_samples=3,temperature=0.3"]) as s:
        assert chat(s.url, "self-consistency").status_code == 200
        assert [(r.n, r.temperature) for r in be.requests] == [(3, 0.3)]
        assert chat(s.url, "self-consistency", n_samples=2).status_code == 200
        assert [(r.n, r.temperature) for r in be.requests[1:]] == [(2, 0.3)]
        # the model list shows the operator's value as the default, and which knobs only the operator sets
        listed = {m["name"]: m for m in httpx.get(f"{s.url}/v1/models").json()["thinkscale"]["strategies"]}
    assert listed["self-consistency"]["knobs"]["n_samples"] == {"type": "an integer", "default": 3,
                                                                 "operator_only": False}
    assert listed["best-of-n"]["knobs"]["verifier_path"]["operator_only"] is True


@pytest.mark.parametrize(("spec", "message"), [
    ("nonesuch:x=1", "unknown strategy 'nonesuch'"),
    ("best-of-n:frobs=2", "has no knob 'frobs'"),
    ("best-of-n:n_samples=many", "n_samples"),
    ("auto:policy=/nonexistent/policy.json", "/nonexistent/policy.json"),
    ("best-of-n", "sets no knob"),
    ("best-of-n:n_samples", "is not KNOB=VALUE"),
])
def test_a_bad_operator_setting_stops_the_server_before_the_model_loads(spec, message):
    with pytest.raises(ValueError) as e:
        StrategyCatalogue(strategy_knobs=[spec])
    assert message in str(e.value) and str(e.value).startswith("--strategy-knobs")
    # the CLI names it too, and exits before loading a model (this one does not exist)
    r = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model.gguf", "--strategy-knobs", spec])
    assert r.exit_code == 2 and message in r.output


def test_one_spec_per_strategy():
    with pytest.raises(ValueError, match="names 'best-of-n' twice"):
        StrategyCatalogue(strategy_knobs=["best-of-n:n_samples=2", "best-of-n:verifier=pyes"])


def test_operator_knobs_are_read_from_the_strategies():
    """The server's list is each strategy's own ``operator_knob`` declarations: the sandbox's limits of sc-tir and
    pal, the verifier files, auto's policy, and nothing a request may legitimately set."""
    cat = StrategyCatalogue()
    assert operator_knobs("sc-tir") >= {"sandbox_workers", "code_memory_mb", "code_timeout_seconds"}
    assert "verifier_path" in operator_knobs("best-of-n") and operator_knobs("auto") == {"policy"}
    assert not operator_knobs("self-consistency") and not operator_knobs("greedy")
    for name in cat.names():
        assert operator_knobs(name) <= set(cat.knobs(name))


@dataclass(frozen=True)
class _Device:
    """A strategy registered only for this test, with a resource knob no hand-kept list could know of."""

    n_samples: int = 2
    max_tokens: int = 16
    gpu_index: int = strategies.operator_knob(0)

    def run(self, ctx: Run) -> Result:
        (c,) = ctx.generate([GenRequest(messages=ctx.problem.messages, n=self.n_samples, max_tokens=self.max_tokens)])
        return ctx.result(candidates_from(c), chosen_index=0)


def test_a_new_strategys_operator_knob_is_refused_from_requests_and_set_by_the_operator():
    strategies.register("device-toy", "test only", "https://example.org")(_Device)
    try:
        be = endless()
        with serve(be, strategy_knobs=["device-toy:gpu_index=1"]) as s:
            refused = chat(s.url, "device-toy", gpu_index=3)
            ok = chat(s.url, "device-toy", n_samples=3)
            listed = {m["name"]: m for m in httpx.get(f"{s.url}/v1/models").json()["thinkscale"]["strategies"]}
    finally:
        strategies.REGISTRY.pop("device-toy")
    assert refused.status_code == 400, refused.text
    assert "only the server's operator sets it" in refused.json()["error"]["message"]
    assert ok.status_code == 200, ok.text
    assert [r.n for r in be.requests] == [3]
    assert listed["device-toy"]["knobs"]["gpu_index"] == {"type": "an integer", "default": 1, "operator_only": True}
    assert listed["device-toy"]["knobs"]["n_samples"]["operator_only"] is False
