"""SC-TIR and PAL on the smallest real model (smollm2-135m): the whole loop with a real backend and sandbox.

The PAL test runs by default (marker ``model``; seconds): one greedy program, run in the sandbox, whose output is the
answer. The SC-TIR test is marked slow (opt in with --runslow): on the shared, loaded 2-core machine it was written on
it took 6 minutes of wall time. The model is too small to be right; it checks what must hold whatever it writes: the
ledger matches what the backend reported, no path spends past its cap, and every code block the model stopped at was
run."""

from __future__ import annotations

import json
import random

import pytest

from thinkscale.strategies.pal import Pal
from thinkscale.strategies.run import execute
from thinkscale.strategies.sc_tir import ScTir
from thinkscale.tools import sandbox as sandbox_mod
from thinkscale.tools.sandbox import Limits, Sandbox
from thinkscale.types import Budget, Problem, Role

pytestmark = [pytest.mark.model,
              pytest.mark.skipif(sandbox_mod.shutil.which("bwrap") is None, reason="bubblewrap is not installed")]

PROBLEM = Problem.from_text("What is 17 times 23? Use Python to compute it.")


@pytest.mark.slow
def test_sc_tir_on_a_real_model(llama_backend) -> None:
    with Sandbox(Limits(timeout_seconds=3, cpu_seconds=3), pool_size=1) as sb:
        res = execute(ScTir(n_samples=3, max_tokens=64, max_rounds=2),
            PROBLEM, llama_backend, Budget(max_completion_tokens=3 * 64), rng=random.Random(0), sandbox=sb)
    gen = res.ledger.total(Role.GENERATOR)
    assert len(res.candidates) == 3 and res.stop_reason == "done"
    assert gen.completion_tokens == sum(c.completion_tokens or 0 for c in res.candidates) <= 3 * 64
    assert all((c.completion_tokens or 0) <= 64 for c in res.candidates)
    runs = [e for e in res.trace_json() if e["event"] == "tool"]
    assert res.ledger.total(Role.TOOL).calls == len(runs)
    assert sum(c.text.count("```output\n") for c in res.candidates) == len(runs)
    json.dumps(res.trace_json())


def test_pal_answer_is_what_the_sandbox_printed(llama_backend) -> None:
    """Asked for 17 * 23 without code, smollm2-135m writes 321; given "Print 17 * 23." under PAL's prompt it writes
    ``print(17 * 23)`` (15 tokens, greedy: the same program on 1, 2 and 4 threads, cold or warm cache). So the
    answer 391 can only come from the sandbox running that program: one run, one ``Role.TOOL`` call with its
    seconds and no tokens, recorded as a tool event whose stdout is the answer, its output appended to the text."""
    with Sandbox(Limits(timeout_seconds=5, cpu_seconds=5), pool_size=0, preload=()) as sb:
        res = execute(Pal(max_tokens=48), Problem.from_text("Print 17 * 23."), llama_backend, Budget(),
                      rng=random.Random(0), sandbox=sb)
    (cand,) = res.candidates
    gen, tool = res.ledger.total(Role.GENERATOR), res.ledger.total(Role.TOOL)
    assert gen.calls == 1 and cand.finish_reason == "stop"
    assert gen.completion_tokens == cand.completion_tokens <= 48
    (run,) = [e for e in res.trace_json() if e["event"] == "tool"]
    assert run["exit_code"] == 0 and not run["timed_out"] and "17" in run["code"] and "23" in run["code"]
    assert tool.calls == 1 and tool.seconds > 0 and tool.prompt_tokens == tool.completion_tokens == 0
    assert tool.seconds == pytest.approx(run["call_seconds"], abs=1e-3)
    assert res.answer == "391" == run["stdout"].strip()
    assert cand.text.endswith("```output\n391\n```\n")
    json.dumps(res.trace_json())
