"""SC-TIR and PAL against the scripted fake backend, with code run in a real (warm) sandbox.

The fake counts one token per whitespace-separated word and cuts a scripted text at the first stop string, as a
real backend does; expected token counts below are word counts of the kept text.
"""

from __future__ import annotations

import json
import random

import pytest

from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies._tir import CODER_SYSTEM, NUMINA_INSTRUCTION, TirFormat, code_to_run, scan_blocks
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.pal import Pal
from thinkscale.strategies.run import OwnSandboxes, execute
from thinkscale.strategies.sc_tir import ScTir
from thinkscale.tools.sandbox import Limits, Sandbox
from thinkscale.types import Budget, GenRequest, Problem, Role

PROBLEM = Problem.from_text("What is 17 times 23?")
CODE_PATH = "Let me compute.\n```python\nprint(17*23)\n```\nIt prints 999, so \\boxed{999}"


@pytest.fixture(scope="module")
def sb():
    box = Sandbox(Limits(timeout_seconds=2, cpu_seconds=2, memory_bytes=512 << 20), pool_size=2)
    box.warm()
    yield box
    box.close()


def test_a_code_block_is_run_and_its_output_fed_back(sb: Sandbox) -> None:
    """Path 0 writes code; generation stops at the closing fence (5 words kept: "Let me compute. ```python
    print(17*23)"), the sandbox prints 391, and round 1 continues the same assistant turn after the output block.
    Path 1 answers without code (2 words). The script's "It prints 999" never happens: the stop string cuts it."""
    be = ScriptedBackend([CODE_PATH, "Directly: \\boxed{391}", "So the answer is \\boxed{391}."])
    res = execute(ScTir(n_samples=2), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert res.answer == "391" and res.stop_reason == "done"
    assert be.calls == 2 and len(be.requests) == 2
    cont = be.requests[1]
    assert cont.continue_final and cont.messages[-1].role == "assistant"
    assert cont.messages[-1].content == "Let me compute.\n```python\nprint(17*23)\n```\n```output\n391\n```\n"
    assert cont.max_tokens == 1024 - 5 and cont.stop == ("\n```\n", "```output")
    assert res.candidates[0].text.endswith("```output\n391\n```\nSo the answer is \\boxed{391}.")
    assert [c.completion_tokens for c in res.candidates] == [5 + 5, 2]
    tool = res.ledger.total(Role.TOOL)
    assert tool.calls == 1 and tool.completion_tokens == 0 and tool.seconds is not None and tool.seconds > 0
    assert res.ledger.total(Role.GENERATOR).completion_tokens == 12
    assert res.ledger.total().calls == 2 + 1  # two backend requests, one sandbox run
    json.dumps(res.trace_json())
    assert [e["exit_code"] for e in res.trace_json() if e["event"] == "tool"] == [0]


def test_cells_are_stateful_and_errors_show_the_last_traceback_line(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nx = 20\nprint(x)\n```\n",
                          "```python\nprint(x + 1)\n```\n",
                          "```python\nprint(y)\n```\n",
                          "Done: \\boxed{21}"])
    res = execute(ScTir(n_samples=1), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    text = res.candidates[0].text
    assert "```output\n20\n```" in text and "```output\n21\n```" in text
    assert "```output\nNameError: name 'y' is not defined\n```" in text
    assert res.answer == "21" and res.ledger.total(Role.TOOL).calls == 3


def test_stateless_cells_do_not_see_earlier_variables(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nx = 20\n```\n", "```python\nprint(x)\n```\n", "\\boxed{0}"])
    res = execute(ScTir(n_samples=1, stateful=False), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert "NameError: name 'x' is not defined" in res.candidates[0].text


def test_a_path_ends_after_max_rounds_code_runs(sb: Sandbox) -> None:
    """max_rounds=1: the first block runs, the second is written but not run, and no third request is made."""
    be = ScriptedBackend(["```python\nprint(1)\n```\n", "```python\nprint(2)\n```\n"])
    res = execute(ScTir(n_samples=1, max_rounds=1), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert be.calls == 2 and res.ledger.total(Role.TOOL).calls == 1
    assert next(e for e in res.trace_json() if e["event"] == "paths")["ends"] == ["rounds"]


def test_stopping_at_a_model_written_output_fence_runs_the_block(sb: Sandbox) -> None:
    """NuminaMath-style models write ```output themselves: that is a stop string too."""
    be = ScriptedBackend(["Compute:\n```python\nprint(2**10)\n```\n```output\n5\n```\n", "\\boxed{1024}"])
    res = execute(ScTir(n_samples=1, prompt=TirFormat.NUMINA), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert be.requests[1].messages[-1].content == "Compute:\n```python\nprint(2**10)\n```\n```output\n1024\n```\n"
    assert be.requests[0].messages[-1].content.endswith(NUMINA_INSTRUCTION)
    assert all(m.role != "system" for m in be.requests[0].messages)
    assert res.answer == "1024"


def test_coder_format_adds_the_protocol_after_the_problems_system_message(sb: Sandbox) -> None:
    problem = Problem.from_text("What is 2+2?", system="Be brief.")
    be = ScriptedBackend(["\\boxed{4}"])
    execute(ScTir(n_samples=1), problem, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert be.requests[0].messages[0].content == "Be brief.\n\n" + CODER_SYSTEM


def test_a_hanging_program_is_reported_to_the_model_as_a_timeout(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nwhile True:\n    pass\n```\n", "\\boxed{0}"])
    res = execute(ScTir(n_samples=1), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert "TimeoutError: the program" in res.candidates[0].text
    # CPU limit = wall-clock limit here: a busy loop meets either first, and both read as a timeout to the model
    assert next(e for e in res.trace_json() if e["event"] == "tool")["killed_reason"] in ("timeout", "cpu")


def test_long_output_is_cut_for_the_model(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nprint('a' * 5000)\n```\n", "\\boxed{0}"])
    res = execute(ScTir(n_samples=1, max_output_chars=100), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert "a" * 100 + "\n... (output cut: 4901 more characters)" in res.candidates[0].text
    assert "a" * 101 not in res.candidates[0].text


def test_token_budget_limits_the_paths_started(sb: Sandbox) -> None:
    """2048 tokens allow two paths of max_tokens=1024 in the worst case, not four."""
    be = ScriptedBackend(["\\boxed{1}", "\\boxed{1}"])
    res = execute(ScTir(n_samples=4), PROBLEM, be, Budget(max_completion_tokens=2048), rng=random.Random(0), sandbox=sb)
    assert res.stop_reason == "budget" and len(res.candidates) == 2 and res.answer == "1"


def test_call_budget_counts_sandbox_runs_and_stops_before_overspending(sb: Sandbox) -> None:
    """max_calls=2: round 0 (1 request) and one sandbox run fit; round 1 would be a third call, so it stops."""
    be = ScriptedBackend(["```python\nprint(5)\n```\n"])
    res = execute(ScTir(n_samples=1), PROBLEM, be, Budget(max_calls=2), rng=random.Random(0), sandbox=sb)
    assert res.stop_reason == "budget" and res.ledger.total().calls == 2 and be.remaining == 0
    assert res.answer == "5"  # the output block's number is the last number of the turn


def test_no_token_left_after_a_block_means_it_is_not_run(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python print(1)\n```\n"])  # 2 words: the whole max_tokens
    res = execute(ScTir(n_samples=1, max_tokens=2), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert res.ledger.total(Role.TOOL).calls == 0 and be.calls == 1


def test_same_seed_same_run(sb: Sandbox) -> None:
    def script(req: GenRequest, j: int) -> str:
        r = random.Random(f"{req.sample_seed(j)}")
        if req.continue_final:
            return f"\\boxed{{{r.randint(0, 2)}}}"
        return f"```python\nprint({r.randint(0, 2)})\n```\n"

    runs = []
    for _ in range(2):
        be = ScriptedBackend([script] * 20)
        res = execute(ScTir(n_samples=4), PROBLEM, be, Budget(), rng=random.Random(7), sandbox=sb)
        runs.append(([c.text for c in res.candidates], res.answer, [r.seed for r in be.requests]))
    assert runs[0] == runs[1]


def test_the_first_k_paths_of_an_n_path_run_are_a_k_path_run(sb: Sandbox) -> None:
    """Prefix consistency (what lets a sweep score k paths from an N-path job): round 0 seeds path i as sample i of
    one draw and every later round from that draw's seed, the path and the round, never from how many paths run."""
    def script(req: GenRequest, j: int) -> str:
        r = random.Random(f"{req.sample_seed(j)}")
        if r.random() < 0.8:
            return f"step {r.randint(0, 99)}\n```python\nprint({r.randint(0, 9)})\n```\n"
        return f"\\boxed{{{r.randint(0, 3)}}}"

    def texts(n: int) -> list[str]:
        be = ScriptedBackend([script] * 50)
        res = execute(ScTir(n_samples=n, max_rounds=3), PROBLEM, be, Budget(), rng=random.Random(11), sandbox=sb)
        return [c.text for c in res.candidates]

    four = texts(4)
    assert sum("```output" in t for t in four) >= 2  # the script does go through code rounds
    assert texts(1) == four[:1] and texts(2) == four[:2] and texts(3) == four[:3]


def test_bad_knobs_are_refused(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match="temperature"):
        ScTir(temperature=0)
    with pytest.raises(ValueError, match="max_rounds"):
        ScTir(max_rounds=-1)
    with pytest.raises(ValueError, match="code_memory_mb"):
        ScTir(code_memory_mb=10)
    with pytest.raises(ValueError, match="sandbox= or sandboxes="):
        execute(ScTir(), PROBLEM, ScriptedBackend([]), Budget(), rng=random.Random(0), sandbox=sb,
                sandboxes=OwnSandboxes())
    with pytest.raises(ValueError, match="n_samples > 1 needs temperature"):
        Pal(n_samples=2)
    with pytest.raises(ValueError, match="prompt"):
        build_strategy("sc-tir:prompt=llama")


def test_pal_answer_is_the_last_printed_line(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nx = 17 * 23\nprint('result:')\nprint(x)\n```\nThe answer is 5."])
    res = execute(Pal(), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert res.answer == "391" and be.requests[0].temperature == 0 and be.calls == 1
    assert res.ledger.total(Role.TOOL).calls == 1 and res.candidates[0].text.endswith("```output\nresult:\n391\n```\n")


def test_pal_votes_and_failed_programs_do_not_answer(sb: Sandbox) -> None:
    be = ScriptedBackend(["```python\nprint(4)\n```\n", "```python\n1/0\n```\n", "```python\nprint(4)\n```\n",
                          "no code here: 7"])
    res = execute(Pal(n_samples=4, temperature=0.7), PROBLEM, be, Budget(), rng=random.Random(0), sandbox=sb)
    assert [c.answer for c in res.candidates] == ["4", None, "4", None]
    assert res.answer == "4" and res.ledger.total(Role.TOOL).calls == 3
    assert next(e for e in res.trace_json() if e["event"] == "vote")["counts"] == {"4": 2}


def test_block_scanning() -> None:
    assert scan_blocks("a\n```python\nx=1").open_code == "x=1"
    assert scan_blocks("```\nnot code\n```\nb").open_code is None
    b = scan_blocks("t\n```python\nprint(1)\n```\n")
    assert (b.open_code, b.last_closed, b.tail.strip()) == (None, "print(1)", "")
    assert code_to_run("x", "```python\nprint(1)", "length") is None  # cut by max_tokens: incomplete, not run
    assert code_to_run("```text\nhi", "```text\nhi", "stop") is None  # a non-python block
    assert code_to_run("\\boxed{1}", "\\boxed{1}", "stop") is None
