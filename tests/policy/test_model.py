"""Policy files: a valid one loads; bad ones are refused with the file and the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.policy.helpers import policy_dict
from thinkscale.strategies.auto_policy import DEFAULT_POLICY_FILE, PolicyError, SampleAction, StopAction, load_policy

GOOD = dict(choices={"easy": {"kind": "stop"}, "hard": {"kind": "sample", "max_samples": 16, "threshold": 0.95}},
            caps=(2048, 4096))


def write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "policy.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_a_valid_policy_loads_and_picks_rows_and_bins(tmp_path: Path) -> None:
    pol = load_policy(write(tmp_path, policy_dict(**GOOD)))
    assert pol.row_for(None).max_completion_tokens == 4096 and pol.row_for(3000).max_completion_tokens == 2048
    assert pol.row_for(100).max_completion_tokens == 2048
    assert pol.difficulty.bin_of(0.0) == "easy" and pol.difficulty.bin_of(0.375) == "hard"
    assert pol.budgets[0].choices["easy"].action == StopAction()
    assert pol.budgets[0].choices["hard"].action == SampleAction(max_samples=16, threshold=0.95)


def mutate(path: str, value: object) -> dict:
    doc = policy_dict(**GOOD)
    *parents, last = path.split(".")
    node: object = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    if value is KeyError:
        del node[last]  # type: ignore[arg-type, attr-defined]
    else:
        node[int(last) if isinstance(node, list) else last] = value  # type: ignore[index]
    return doc


@pytest.mark.parametrize(("path", "value", "message"), [
    ("format", "thinkscale-policy/0", "format: expected 'thinkscale-policy/1'"),
    ("sampling.temperature", 0, "sampling.temperature"),
    ("sampling.wave_size", KeyError, "sampling.wave_size: Field required"),
    ("sampling.extra", 1, "sampling.extra: Extra inputs are not permitted"),
    ("difficulty.edges", [0.5, 0.25], "difficulty: Value error, edges must be finite and strictly increasing"),
    ("difficulty.edges", [float("nan")], "difficulty: Value error, edges must be finite"),
    ("difficulty.bins", ["easy"], "1 edges need 2 bins"),
    ("difficulty.score", "vibes", "difficulty.score"),
    ("budgets.0.choices.hard.action.kind", "pray", "budgets.0.choices.hard.action"),
    ("budgets.0.choices.hard.action.threshold", 1.5, "budgets.0.choices.hard.action.sample.threshold"),
    ("budgets.0.choices.hard.action", {"kind": "sample", "max_samples": 2}, "below the first wave's 4 chains"),
    ("budgets.0.choices.hard.action", {"kind": "strategy", "spec": "nope"}, "unknown strategy 'nope'"),
    ("budgets.0.choices.hard.action", {"kind": "strategy", "spec": "self-consistency:n_samples=x"},
     "n_samples"),
    ("budgets.0.choices.hard.action", {"kind": "strategy", "spec": "auto"}, "cannot run auto inside auto"),
    ("budgets.1.choices", {}, "budgets.1.choices: needs exactly the bins"),
    ("budgets.1.max_completion_tokens", 1000, "max_completion_tokens must be strictly increasing"),
    ("fitted_on", KeyError, "fitted_on: Field required"),
])
def test_bad_policy_files_are_refused_naming_the_field(tmp_path: Path, path: str, value: object,
                                                       message: str) -> None:
    p = write(tmp_path, mutate(path, value))
    with pytest.raises(PolicyError) as e:
        load_policy(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_unreadable_and_non_json_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="missing.json: cannot read it"):
        load_policy(tmp_path / "missing.json")
    with pytest.raises(PolicyError, match=r"not valid JSON \(.*line 1\)"):
        load_policy(write(tmp_path, "{nope"))


@pytest.mark.usefixtures("unshipped_default_policy")
def test_the_default_policy_is_not_invented() -> None:
    """Where no policy fitted on GSM8K train results is packaged, loading the default fails and says what to do."""
    with pytest.raises(PolicyError, match="no default policy is shipped.*thinkscale fit-policy"):
        load_policy(None)


def test_a_packaged_default_policy_was_fitted_on_training_data_for_the_default_model() -> None:
    """The packaged policy (when one is shipped) is valid, for the default model, and says it was fitted on a
    training split: never on the test problems it is judged on."""
    from importlib import resources

    from thinkscale.models import DEFAULT_MODEL

    if not resources.files("thinkscale.policy").joinpath(DEFAULT_POLICY_FILE).is_file():
        pytest.skip("no default policy is packaged yet (thinkscale fit-policy on a gsm8k-train run makes it)")
    pol = load_policy(None)
    assert pol.fitted_on.model == DEFAULT_MODEL
    assert pol.fitted_on.dataset.endswith("-train") and not pol.fitted_on.test_data
