"""scripts/stores.py keeps a training run in git (save-rl) and puts it back on a new machine (restore): the run's
logs and settings, and its final adapter or, while unfinished, its newest finished checkpoint whole, so
``train grpo --resume`` goes on from it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from thinkscale.eval.store import StoreError

ROOT = Path(__file__).resolve().parents[2]


def _stores() -> object:
    spec = importlib.util.spec_from_file_location("stores_script", ROOT / "scripts" / "stores.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(run: Path, step: int, finished: bool = True) -> Path:
    ckpt = run / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(bytes([step]) * 64)
    (ckpt / "optimizer.pt").write_bytes(b"adam" * step)
    (ckpt / "tokenizer.json").write_text("{}")  # the base model's: left out
    if finished:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_unfinished_run_keeps_its_newest_finished_checkpoint_and_restores_whole(tmp_path: Path) -> None:
    stores = _stores()
    run = tmp_path / "runs" / "rl" / "think"
    run.mkdir(parents=True)
    (run / "settings.json").write_text('{"steps": 80}\n')
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    _checkpoint(run, 5)
    _checkpoint(run, 10)
    _checkpoint(run, 15, finished=False)  # a kill in the middle of writing it
    (_checkpoint(run, 20, finished=False) / "trainer_state.json").write_text('{"global_')  # being written now
    kept = tmp_path / "stores"
    stores.save_rl(run, kept)  # type: ignore[attr-defined]
    assert (run / "checkpoints" / "checkpoint-20").is_dir()  # a reader beside the training deletes nothing
    assert sorted(_files(kept / "rl" / "think")) == [
        "checkpoints/checkpoint-10/adapter_model.safetensors", "checkpoints/checkpoint-10/optimizer.pt",
        "checkpoints/checkpoint-10/trainer_state.json", "metrics.jsonl", "settings.json"]

    fresh = tmp_path / "fresh"
    stores.restore_rl(fresh, kept)  # type: ignore[attr-defined]
    assert _files(fresh / "rl" / "think") == _files(kept / "rl" / "think")
    stores.restore_rl(fresh, kept)  # a run that exists is kept, not overwritten
    assert _files(fresh / "rl" / "think") == _files(kept / "rl" / "think")


def test_a_finished_run_replaces_its_checkpoint_with_the_final_adapter(tmp_path: Path) -> None:
    stores = _stores()
    run = tmp_path / "think"
    run.mkdir()
    (run / "settings.json").write_text("{}\n")
    _checkpoint(run, 5)
    stores.save_rl(run, tmp_path / "stores")  # type: ignore[attr-defined]
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"final")
    (run / "model.json").write_text("{}\n")
    stores.save_rl(run, tmp_path / "stores")  # type: ignore[attr-defined]
    assert sorted(_files(tmp_path / "stores" / "rl" / "think")) == [
        "adapter/adapter_model.safetensors", "model.json", "settings.json"]


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    stores = _stores()
    with pytest.raises(StoreError, match="not a train grpo run"):
        stores.save_rl(tmp_path, tmp_path / "stores")  # type: ignore[attr-defined]
    (tmp_path / "settings.json").write_text("{}\n")
    _checkpoint(tmp_path, 5, finished=False)
    with pytest.raises(StoreError, match="neither a final adapter nor a finished checkpoint"):
        stores.save_rl(tmp_path, tmp_path / "stores")  # type: ignore[attr-defined]
    kept = tmp_path / "kept"
    (kept / "rl" / "think").mkdir(parents=True)
    (kept / "rl" / "think" / "settings.json").write_text("{}\n")
    clash = tmp_path / "runs" / "rl" / "think"
    clash.mkdir(parents=True)
    (clash / "stray.txt").write_text("x")
    with pytest.raises(StoreError, match="exists without settings.json"):
        stores.restore_rl(tmp_path / "runs", kept)  # type: ignore[attr-defined]
