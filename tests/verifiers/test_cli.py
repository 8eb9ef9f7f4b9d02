"""``thinkscale train prm``: options, errors, and a whole run on the scripted fake."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import thinkscale.backends
from tests.verifiers.test_trained_prm import good_bad_policy, rows
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app

runner = CliRunner()


def test_train_prm_runs_and_writes_the_file(tmp_path, monkeypatch):
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(6)))
    fake = ScriptedBackend([good_bad_policy()] * 100, n_embd=2,
                           hidden_fn=lambda p, c: [c.count("good") - c.count("bad"), 0.5])
    monkeypatch.setattr(thinkscale.backends, "load_backend", lambda model, **kw: fake)
    out = tmp_path / "prm.json"
    r = runner.invoke(app, ["train", "prm", "--out", str(out), "--data", str(data), "--problems", "4",
                            "--rollouts", "2", "--solutions", "2", "--rollout-steps", "1", "--heldout", "0.5",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["heldout_auroc"] == 1.0
    meta = json.loads(out.read_text())["metadata"]
    assert meta["data"]["path"] == str(data) and len(meta["data"]["sha256"]) == 64
    assert meta["label_config"]["rollouts"] == 2 and meta["label_config"]["max_rollout_steps"] == 1
    assert len(meta["split"]["heldout_problems"]) == 2
    assert "labelled 4/4" in r.stderr


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKSCALE_DATA_DIR", str(tmp_path))
    r = runner.invoke(app, ["train", "prm", "--out", str(tmp_path / "p.json"), "--data", "gsm8k_train"])
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: dataset 'gsm8k_train' not found") and "gsm8k_train.jsonl" in r.stderr


def test_bad_options_are_refused_before_loading_a_model(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("must not load a model")

    monkeypatch.setattr(thinkscale.backends, "load_backend", boom)
    data = tmp_path / "mini.jsonl"
    data.write_text(json.dumps(rows(1)[0]) + "\n")
    for args, msg in ((["--rollouts", "0"], "rollouts must be >= 1"), (["--problems", "5"], "asked for 5"),
                      (["--temperature", "0"], "temperature > 0")):
        r = runner.invoke(app, ["train", "prm", "--out", str(tmp_path / "p.json"), "--data", str(data),
                                "--problems", "1", *args])
        assert r.exit_code == 2 and msg in r.stderr, (args, r.stderr)
