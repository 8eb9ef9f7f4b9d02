"""Strategy specs (``NAME:KNOB=VALUE,...``): parsing, coercion by the knob's declared type, and the errors that name
what is wrong. Built on the registered strategies and on a small test-only dataclass for the types none uses."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pytest

from thinkscale.strategies import base
from thinkscale.strategies.base import (
    KnobInfo,
    build_strategy,
    coerce_knob,
    format_spec,
    knobs,
    load_all,
    parse_spec,
    type_name,
)
from thinkscale.strategies.greedy import Greedy
from thinkscale.strategies.self_consistency import SelfConsistency


class Colour(enum.StrEnum):
    RED = "red"
    DARK_BLUE = "dark_blue"


def knob(t, name="k"):
    return KnobInfo(name, t, None)


def test_name_alone_builds_the_defaults():
    assert build_strategy("self-consistency") == SelfConsistency()
    assert build_strategy("greedy") == Greedy()


def test_spec_knobs_are_coerced_to_their_types():
    s = build_strategy("self-consistency:n_samples=3,temperature=0.9, max_tokens = 64")
    assert s == SelfConsistency(n_samples=3, temperature=0.9, max_tokens=64)
    assert type(s.n_samples) is int and type(s.temperature) is float


def test_overrides_win_over_the_spec_and_may_be_typed_or_text():
    assert build_strategy("self-consistency:n_samples=3", n_samples=5).n_samples == 5
    assert build_strategy("self-consistency", n_samples="6", temperature=1).temperature == 1.0


@pytest.mark.parametrize(("spec", "needles"), [
    ("", ["empty"]),
    ("nope", ["'nope'", "greedy", "self-consistency"]),
    ("nope:n_samples=3", ["'nope'"]),
    (":n_samples=3", ["no strategy name"]),
    ("self-consistency:", ["nothing after ':'"]),
    ("self-consistency:n_samples", ["'n_samples'", "KNOB=VALUE"]),
    ("self-consistency:=3", ["KNOB=VALUE"]),
    ("self-consistency:n_samples=", ["'n_samples'", "empty value"]),
    ("self-consistency:n_samples=3,n_samples=4", ["'n_samples'", "twice"]),
    ("self-consistency:beam_width=3", ["'self-consistency'", "no knob 'beam_width'", "n_samples"]),
    ("self-consistency:n_samples=three", ["'n_samples'", "'self-consistency'", "int", "'three'"]),
    ("self-consistency:n_samples=2.5", ["'n_samples'", "int"]),
    ("self-consistency:temperature=hot", ["'temperature'", "float"]),
    ("self-consistency:temperature=nan", ["'temperature'", "finite"]),
    ("self-consistency:temperature=inf", ["'temperature'", "finite"]),
    ("self-consistency:n_samples=0", ["'self-consistency'", "n_samples must be an integer >= 1"]),
    ("greedy:max_tokens=0", ["'greedy'", "max_tokens"]),
])
def test_bad_specs_raise_a_value_error_naming_what_is_wrong(spec, needles):
    with pytest.raises(ValueError) as info:
        build_strategy(spec)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_typed_overrides_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError, match="'n_samples'.*int"):
        build_strategy("self-consistency", n_samples=2.0)
    with pytest.raises(ValueError, match="'n_samples'.*int"):
        build_strategy("self-consistency", n_samples=True)


def test_parse_spec_splits_without_coercing():
    assert parse_spec("best-of-n:verifier=pyes,n_samples=8") == ("best-of-n", {"verifier": "pyes", "n_samples": "8"})
    assert parse_spec(" greedy ") == ("greedy", {})
    # a spec is one line whose values are stripped: \n, \t and \\ spell a newline, a tab and a backslash
    assert parse_spec(r"budget-forcing:think_start=<think>\n,wait=\tWait,answer_prefix=a\\nb") == (
        "budget-forcing", {"think_start": "<think>\n", "wait": "\tWait", "answer_prefix": "a\\nb"})
    assert parse_spec(r"x:verifier_path=C:\models\prm.json")[1] == {"verifier_path": r"C:\models\prm.json"}


@pytest.mark.parametrize("value", ["<think>\n", "\tWait", "a\\nb", "a\\\nb", "C:\\models\\prm.json", "a\\", "0.7"])
def test_format_spec_is_read_back_by_parse_spec(value: str) -> None:
    spec = format_spec("budget-forcing", {"wait": value, "n": "2"})
    assert "\n" not in spec and "\t" not in spec  # one line
    assert parse_spec(spec) == ("budget-forcing", {"wait": value, "n": "2"})
    assert format_spec("greedy", {}) == "greedy"
    assert format_spec("x", {"verifier_path": "C:\\models"}) == "x:verifier_path=C:\\models"  # as written before


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("True", True), ("yes", True), ("1", True), ("on", True),
    ("false", False), ("NO", False), ("0", False), ("off", False),
])
def test_bool_values(text, value):
    assert coerce_knob("s", knob(bool), text) is value


def test_bool_refuses_other_words():
    with pytest.raises(ValueError, match="true or false"):
        coerce_knob("s", knob(bool), "maybe")
    with pytest.raises(ValueError, match="bool"):
        coerce_knob("s", knob(bool), 1)


def test_enum_values_and_their_errors_list_the_choices():
    assert coerce_knob("s", knob(Colour), "dark_blue") is Colour.DARK_BLUE
    assert coerce_knob("s", knob(Colour), Colour.RED) is Colour.RED
    with pytest.raises(ValueError) as info:
        coerce_knob("s", knob(Colour, "colour"), "green")
    assert "'colour'" in str(info.value) and "red|dark_blue" in str(info.value)


def test_optional_knobs_take_none():
    assert coerce_knob("s", knob(str | None), "none") is None
    assert coerce_knob("s", knob(str | None), "prm.json") == "prm.json"
    assert coerce_knob("s", knob(int | None), "7") == 7
    assert type_name(int | None) == "int or none"


def test_a_type_that_text_cannot_express_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="cannot be set"):
        coerce_knob("s", knob(list[int]), "1")


def test_knobs_come_from_the_dataclass_fields_in_order():
    k = knobs("self-consistency")
    assert list(k) == ["n_samples", "temperature", "top_p", "max_tokens", "prefill"]
    assert k["n_samples"] == KnobInfo("n_samples", int, 8, False)
    assert k["temperature"].type is float
    assert "prefix_consistent" not in k and "budget_knob" not in k  # ClassVars are not knobs


def test_required_knobs_are_marked(monkeypatch):
    @dataclass(frozen=True)
    class Needy:
        path: str
        n: int = 2

    monkeypatch.setitem(base.REGISTRY, "needy", base.StrategyInfo("needy", Needy, "test", ""))
    k = knobs("needy")
    assert k["path"].required and not k["n"].required
    assert build_strategy("needy:path=x") == Needy("x")
    with pytest.raises(ValueError, match="'needy'.*path"):
        build_strategy("needy")


def test_every_registered_strategy_declares_a_budget_knob_that_is_one_of_its_knobs():
    load_all()
    for name, info in base.REGISTRY.items():
        bk = getattr(info.factory, "budget_knob", None)
        assert bk in knobs(name), (name, bk)
        assert base.budget_knob(name) == bk


def test_the_server_catalogue_uses_the_same_knobs_and_takes_enum_values():
    """The server builds strategies from JSON values: an enum knob takes its value as a string, and the sample
    count of ``NAME-N`` goes to the shared count knob (RSA's population)."""
    from thinkscale.server.catalogue import StrategyCatalogue
    from thinkscale.server.errors import ApiError

    cat = StrategyCatalogue()
    assert cat.knobs("best-of-n") == knobs("best-of-n")
    built = cat.build(cat.parse("best-of-n-4", param="model"), {"step_aggregation": ("min", "thinkscale.params.x")})
    assert built.n_samples == 4 and built.step_aggregation == "min" and type(built.step_aggregation) is not str
    assert cat.build(cat.parse("rsa-5", param="model"), {}).population == 5
    with pytest.raises(ApiError, match="step_aggregation"):
        cat.build(cat.parse("best-of-n", param="model"), {"step_aggregation": ("median", "thinkscale.params.x")})


def _int_knobs() -> list[tuple[str, str]]:
    load_all()
    return [(name, k.name) for name in sorted(base.REGISTRY) for k in knobs(name).values() if k.type is int]


@pytest.mark.parametrize(("name", "knob_name"), _int_knobs())
def test_every_integer_knob_refuses_a_bool_and_a_negative_number_naming_itself(name, knob_name):
    """Typed overrides skip the text parser, so each strategy's own check is what stands between a caller (or a
    server request) and True samples or -1 rounds."""
    factory = base.REGISTRY[name].factory
    for bad in (True, -1):
        with pytest.raises(ValueError, match=knob_name):
            factory(**{knob_name: bad})
