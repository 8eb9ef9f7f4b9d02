"""GRPO on the real smallest model (smollm2-135m), kept to seconds of training: the GGUF round trip (transformers and
llama.cpp agree on the merged model's greedy tokens), and a run killed after its first checkpoint that resumes to the
end with nothing lost or run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thinkscale.rl.agreement import cpp_greedy, hf_greedy

pytestmark = pytest.mark.model

PROMPTS = ["What is 2 + 3?", "Name a color.", "Write one sentence about rain."]


def test_merged_adapter_round_trips_through_gguf(tmp_path: Path, smollm2_path: str) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from thinkscale.backends.llamacpp import LlamaCppBackend
    from thinkscale.rl.export import merged_state, write_gguf
    from thinkscale.rl.weights import load_gguf_model
    from thinkscale.types import Message, ScoreRequest

    torch.manual_seed(0)
    loaded = load_gguf_model(smollm2_path)
    # a random (not zero-initialised) adapter: merging it must change what the model says
    model = get_peft_model(loaded.model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                    init_lora_weights=False))
    out = write_gguf(loaded.gguf, merged_state(model), tmp_path / "model.gguf", out_type="f32")
    merged = model.merge_and_unload().eval()
    expected = [hf_greedy(merged, loaded.tokenizer, p, 12) for p in PROMPTS]
    got = cpp_greedy(out, PROMPTS, 12)
    for e, cpp in zip(expected, got, strict=True):
        assert e.until_tie and cpp.startswith(e.until_tie), (cpp, e.text)  # the same greedy tokens up to a near tie
    # and the same numbers: llama.cpp's logprobs of transformers' greedy tokens
    backend = LlamaCppBackend(str(out), n_ctx=1024, n_threads=1, deterministic=True)
    try:
        scored = backend.score([ScoreRequest(messages=(Message("user", p),), continuation=e.text)
                                for p, e in zip(PROMPTS, expected, strict=True)])
    finally:
        backend.close()
    for e, s in zip(expected, scored, strict=True):
        assert s.logprobs == pytest.approx(e.logprobs, abs=0.03)
    assert cpp_greedy(Path(smollm2_path), PROMPTS, 12) != got  # the adapter did change the GGUF's output
    # the smaller type loads and runs too (its greedy text may differ by rounding)
    q8 = write_gguf(loaded.gguf, merged_state(merged), tmp_path / "model-q8.gguf", out_type="q8_0")
    assert q8.stat().st_size < out.stat().st_size / 3
    assert all(cpp_greedy(q8, PROMPTS[:1], 4))


def _grpo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "thinkscale.cli", "train", "grpo", "--model", "smollm2-135m", "--out", str(out),
            "--problems", "8", "--heldout", "2", "--num-generations", "2", "--max-completion-tokens", "16",
            "--save-every", "1", "--eval-every", "2", "--gguf-type", "f16", "--threads", "1", *extra]


def test_a_killed_run_resumes_to_the_end(tmp_path: Path, smollm2_path: str) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_grpo(run, "--steps", "3"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = run / "checkpoints" / "checkpoint-1" / "trainer_state.json"
    deadline = time.monotonic() + 400
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists(), "no first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (run / "model.gguf").exists()
    done = subprocess.run(_grpo(run, "--steps", "3", "--resume"), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["model"] == str(run / "model.gguf")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # the kill lost no finished step and none ran twice
    held = [json.loads(line)["step"] for line in (run / "heldout.jsonl").read_text().splitlines()]
    assert held == [0, 2, 3]  # before training, every --eval-every steps, and at the end
    meta = json.loads((run / "model.json").read_text())
    assert meta["steps"] == 3 and meta["think_end"] == "</think>" and len(meta["train_problems"]) == 8
    assert (run / "reward.png").stat().st_size > 1000 and (run / "adapter" / "adapter_config.json").exists()
    assert all(cpp_greedy(run / "model.gguf", PROMPTS[:1], 4))
    # a second new run into the same folder is refused, with the way out
    again = subprocess.run(_grpo(run, "--steps", "3"), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_llamacpp_rollout_samples_the_policy_being_trained(tmp_path: Path, smollm2_path: str) -> None:
    """TRL's rollout_func on the embedded backend: the prompt rows come back grouped as TRL repeats them, with the
    backend's own token ids and logprobs, sampled from base + the *current* adapter (greedy here, so it must be the
    merged model's greedy reply) and re-synced when the step changes."""
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig, get_peft_model

    from thinkscale.rl.data import as_rows
    from thinkscale.rl.rewards import think_format
    from thinkscale.rl.rollout import LlamaCppRollout
    from thinkscale.rl.weights import load_gguf_model

    torch.manual_seed(1)
    loaded = load_gguf_model(smollm2_path)
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                    init_lora_weights=False))
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), model=model,
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              args=SimpleNamespace(temperature=0.0, top_p=1.0, max_completion_length=10))
    rollout = LlamaCppRollout(loaded.gguf, tmp_path, threads=1, seed=0)
    try:
        chat = [{"role": "user", "content": PROMPTS[0]}]
        prefilled = as_rows(_problems(), prefill="<think>\n", tokenizer=loaded.tokenizer)[0]["prompt"]
        assert isinstance(prefilled, str) and prefilled.endswith("<think>\n")
        out = rollout([chat, chat, prefilled], trainer)  # TRL hands each prompt once per completion it wants
        assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["logprobs"]) == 3
        chat_text = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert out["prompt_ids"][0] == loaded.tokenizer(chat_text, add_special_tokens=False)["input_ids"]
        assert out["prompt_ids"][2] == loaded.tokenizer(prefilled, add_special_tokens=False)["input_ids"]
        assert all(len(c) == len(lp) >= 1 for c, lp in zip(out["completion_ids"], out["logprobs"], strict=True))
        # the base weights stay 4-bit in llama.cpp, which also rounds activations to 8 bits in those matmuls: its
        # logprobs are within ~0.15 of transformers' (dequantized fp32), so a tie here is a gap under 0.5
        merged = hf_greedy(model.merge_and_unload().eval(), loaded.tokenizer, PROMPTS[0], 10, tie=0.5)
        got = loaded.tokenizer.decode(out["completion_ids"][0], skip_special_tokens=True)
        assert merged.until_tie and got.startswith(merged.until_tie), (got, merged.text)
        assert out["completion_ids"][0] == out["completion_ids"][1]  # greedy: the group's rows agree
        first = (tmp_path / "rollout-lora.gguf").stat().st_mtime_ns
        rollout([chat, chat], trainer)
        assert (tmp_path / "rollout-lora.gguf").stat().st_mtime_ns == first  # same step: no new adapter
        trainer.state.global_step = 1
        rollout([chat, chat], trainer)
        assert (tmp_path / "rollout-lora.gguf").stat().st_mtime_ns != first  # a new step hands over the weights
    finally:
        rollout.close()
    assert think_format(["2 + 3 = 5</think> \\boxed{5}"], ["numeric"], prefill=["<think>\n"]) == [1.0]


def _problems():  # noqa: ANN202 - two GSM8K training problems
    from thinkscale.rl.data import split_problems

    return split_problems("gsm8k-train", problems=2, heldout=0, seed=0, system="think").train


def test_export_of_step_0_is_the_base_model(tmp_path: Path, smollm2_path: str) -> None:
    """`train export RUN --checkpoint 0` writes the run's base model through the same export (the control for a
    trained model's comparison): llama.cpp's greedy tokens on it are transformers' on the base, up to a near tie."""
    from typer.testing import CliRunner

    from thinkscale.cli import app
    from thinkscale.rl.grpo import Settings
    from thinkscale.rl.weights import load_gguf_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps(Settings(model="smollm2-135m").to_json()))
    done = CliRunner().invoke(app, ["train", "export", str(run), "--checkpoint", "0", "--gguf-type", "f32"])
    assert done.exit_code == 0, done.output
    assert done.output.rstrip().endswith(str(run / "model-0.gguf")) and (run / "model-0.gguf").is_file()
    loaded = load_gguf_model(smollm2_path)
    for prompt, cpp in zip(PROMPTS, cpp_greedy(run / "model-0.gguf", PROMPTS, 12), strict=True):
        hf = hf_greedy(loaded.model.eval(), loaded.tokenizer, prompt, 12)
        assert hf.until_tie and cpp.startswith(hf.until_tie), (cpp, hf.text)
    bad = CliRunner().invoke(app, ["train", "export", str(run), "--checkpoint", "-1"])
    assert bad.exit_code == 2
    none = CliRunner().invoke(app, ["train", "export", str(run), "--checkpoint", "5"])
    assert none.exit_code != 0 and "no complete checkpoint at step 5" in none.output
