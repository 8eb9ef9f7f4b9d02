"""scripts/rl_lib.sh's rule for a GRPO run folder, which both rl scripts follow: a finished run (its adapter, as
`stores.py restore` brings it back from git) is only exported, and only when its model is missing; a started run
resumes; an empty folder trains. `train grpo` and `train export` are stood in for by a script that logs its
arguments, so the rule runs in milliseconds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_rule(tmp_path: Path, out: Path) -> list[str]:
    log = tmp_path / "calls.log"
    fake = tmp_path / "thinkscale"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    script = f'set -euo pipefail; source scripts/rl_lib.sh; TS={fake}; train_or_export {out} --steps 5 --out {out}'
    subprocess.run(["bash", "-c", script], cwd=ROOT, check=True, capture_output=True, text=True)
    return log.read_text().splitlines() if log.exists() else []


def test_an_empty_folder_trains(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_rule(tmp_path, out) == [f"train grpo --steps 5 --out {out}"]


def test_a_started_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text("{}")
    assert run_rule(tmp_path, out) == [f"train grpo --steps 5 --out {out} --resume"]


@pytest.mark.parametrize("exported", [False, True])
def test_a_finished_run_is_exported_only_when_its_model_is_missing(tmp_path: Path, exported: bool) -> None:
    out = tmp_path / "run"
    (out / "adapter").mkdir(parents=True)
    (out / "settings.json").write_text("{}")
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    if exported:
        (out / "model.gguf").write_bytes(b"gguf")
    assert run_rule(tmp_path, out) == ([] if exported else [f"train export {out} --out {out}/model.gguf"])
