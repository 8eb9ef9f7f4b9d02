"""The ``thinkscale`` command. Output and cost reporting are checked on the scripted fake (exact, hand-counted
numbers); a handful of ``model`` tests run the real smallest model end to end; bad input must fail with one
actionable line and, where the input alone shows it is bad, without loading a model."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import thinkscale.backends
import thinkscale.cli
from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.cli import app
from thinkscale.models import CATALOG

# Wide enough that rich never wraps an answer line or a table cell.
ENV = {"COLUMNS": "200"}

# The fake renders "<system> Be brief.\n<user> What is 2 plus 3?": 3 + 6 = 9 prompt words.
ARGS = ["solve", "What is 2 plus 3?", "--system", "Be brief."]
TEXTS = ["Two plus three makes five marmalade. \\boxed{5}",  # 7 words
         "I get \\boxed{5} zeppelin",  # 4 words
         "Maybe \\boxed{6}"]  # 2 words


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env=ENV)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """Make ``solve`` run on a ScriptedBackend holding ``texts``; returns the backend so tests can inspect it."""

    def install(texts: list[str]) -> ScriptedBackend:
        backend = ScriptedBackend(texts)
        monkeypatch.setattr(thinkscale.cli, "_backend", lambda model, base_url, *, quiet: backend)
        return backend

    return install


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test's command if it gets as far as constructing the embedded llama.cpp backend."""
    real = thinkscale.backends.backend_class
    loaded: list[str] = []

    def guarded(kind: str) -> type:
        if kind == "llamacpp":
            loaded.append(kind)
            raise AssertionError("bad input should be rejected before a model is loaded")
        return real(kind)

    monkeypatch.setattr(thinkscale.backends, "backend_class", guarded)
    return loaded


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --- output, on the fake ---------------------------------------------------------------------------------------


def test_json_reports_the_vote_and_exact_usage(scripted):
    """Answers 5, 5, 6: "5" wins. Prompt 9 words computed once; completion 7 + 4 + 2 = 13; one call;
    FLOPs = 2 x 1e6 params x (9 + 13) = 44e6."""
    backend = scripted(TEXTS)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--max-tokens", "24", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["answer"] == "5"
    assert payload["strategy"] == "self-consistency"
    assert [(s["answer"], s["completion_tokens"]) for s in payload["samples"]] == [("5", 7), ("5", 4), ("6", 2)]
    assert all("text" not in s for s in payload["samples"])
    usage = payload["usage"]
    assert (usage["prompt_tokens"], usage["cached_prompt_tokens"], usage["completion_tokens"], usage["calls"],
            usage["flops"]) == (9, 0, 13, 1, 44e6)
    (req,) = backend.requests
    assert (req.n, req.max_tokens, req.temperature) == (3, 24, 0.7)


def test_json_with_show_reasoning_includes_the_texts(scripted):
    scripted(TEXTS)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--json", "--show-reasoning"])
    assert [s["text"] for s in json.loads(result.stdout)["samples"]] == TEXTS


def test_default_output_shows_answer_and_cost_but_not_the_reasoning(scripted):
    scripted(TEXTS)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3"])
    assert result.exit_code == 0, result.stderr
    assert "answer: 5" in result.stdout
    for column in ("calls", "prompt", "cached", "generated", "FLOPs"):
        assert column in result.stdout
    assert "4.4e+07" in result.stdout  # the FLOPs cell
    assert "marmalade" not in result.stdout and "zeppelin" not in result.stdout


def test_show_reasoning_prints_every_sample(scripted):
    scripted(TEXTS)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--show-reasoning"])
    assert result.exit_code == 0, result.stderr
    assert "marmalade" in result.stdout and "zeppelin" in result.stdout and "Maybe" in result.stdout


def test_answers_that_look_like_markup_are_printed_verbatim(scripted):
    """Model output is not rich markup: "[/b]" used to raise MarkupError, "[red]" used to vanish."""
    scripted(["so \\boxed{[/b] x}", "so \\boxed{[/b] x}", "so \\boxed{[red]5}"])
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--show-reasoning"])
    assert result.exit_code == 0, result.exception
    assert "answer: [/b] x" in result.stdout
    assert "[red]5" in result.stdout


# --- real model (smollm2-135m) ---------------------------------------------------------------------------------


@pytest.mark.model
def test_self_consistency_json_on_a_real_model(smollm2_path):
    result = invoke(["solve", "What is 2 plus 3?", "--model", smollm2_path, "--strategy", "self-consistency",
                     "-n", "3", "--max-tokens", "24", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["strategy"] == "self-consistency"
    samples = payload["samples"]
    assert len(samples) == 3
    assert all(1 <= s["completion_tokens"] <= 24 and "answer" in s for s in samples)
    # The winner is one of the samples' normalised answers (None only if no sample had one).
    voted = {normalize_answer(s["answer"]) for s in samples} - {None}
    assert payload["answer"] in voted if voted else payload["answer"] is None
    usage = payload["usage"]
    assert usage["completion_tokens"] == sum(s["completion_tokens"] for s in samples)
    assert usage["prompt_tokens"] > 0
    assert 0 <= usage["cached_prompt_tokens"] <= usage["prompt_tokens"]
    assert usage["calls"] >= 1
    assert usage["wall_seconds"] > 0
    assert usage["flops"] > 0


@pytest.mark.model
def test_default_output_on_a_real_model_hides_the_reasoning(smollm2_path):
    """Greedy is deterministic: read the sample's text from a --json --show-reasoning run, then check the plain
    run shows the same answer and the cost table but not that text."""
    base = ["solve", "What is 2 plus 3?", "--model", smollm2_path, "--max-tokens", "24"]
    full = invoke([*base, "--json", "--show-reasoning"])
    assert full.exit_code == 0, full.stderr
    payload = json.loads(full.stdout)
    text = " ".join(payload["samples"][0]["text"].split())
    assert len(text) >= 10, f"the model said too little to test with: {text!r}"
    plain = invoke(base)
    assert plain.exit_code == 0, plain.stderr
    assert f"answer: {payload['answer']}" in plain.stdout
    assert "generated" in plain.stdout and "FLOPs" in plain.stdout
    assert text not in " ".join(plain.stdout.split())


# --- bad input -------------------------------------------------------------------------------------------------


def test_unknown_model_name_lists_the_catalog(no_model_load):
    line = one_line_error(invoke(["solve", "What is 2 plus 3?", "--model", "no-such-model"]))
    assert "'no-such-model'" in line and "smollm2-135m" in line and ".gguf" in line
    assert no_model_load == []


@pytest.mark.parametrize("problem", ["", "   "])
def test_empty_problem(problem, no_model_load):
    line = one_line_error(invoke(["solve", problem, "--model", "smollm2-135m"]))
    assert "empty" in line and "question" in line
    assert no_model_load == []


@pytest.mark.parametrize(("option", "needle"), [
    (["-n", "0", "--strategy", "self-consistency"], "-n must be at least 1"),
    (["--temperature", "-1", "--strategy", "self-consistency"], "--temperature must be"),
    (["--temperature", "nan", "--strategy", "self-consistency"], "--temperature must be"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--strategy", "self-consistency", "--temperature", "0"], "use --strategy greedy"),
])
def test_bad_knob_fails_before_loading_a_model(option, needle, no_model_load):
    line = one_line_error(invoke(["solve", "What is 2 plus 3?", "--model", "smollm2-135m", *option]))
    assert needle in line
    assert no_model_load == []


def test_missing_gguf_path(tmp_path: Path, no_model_load):
    missing = tmp_path / "nope.gguf"
    line = one_line_error(invoke(["solve", "What is 2 plus 3?", "--model", str(missing)]))
    assert str(missing) in line and "does not exist" in line
    assert no_model_load == []


def test_file_that_is_not_gguf(tmp_path: Path, no_model_load):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    line = one_line_error(invoke(["solve", "What is 2 plus 3?", "--model", str(fake)]))
    assert "not a GGUF file" in line
    assert no_model_load == []


def test_unreachable_server_fails_fast_with_a_hint(no_model_load):
    """Nothing listens on port 9. The backend retries refused connections with backoff (0.5+1+2+4 s);
    the whole command must still end within 10 s. Retry warnings go to the log (pytest captures them)."""
    t0 = time.perf_counter()
    result = invoke(["solve", "What is 2 plus 3?", "--base-url", "http://127.0.0.1:9/v1"])
    elapsed = time.perf_counter() - t0
    line = one_line_error(result)
    assert "cannot reach http://127.0.0.1:9/v1" in line and "server running" in line
    assert elapsed < 10, f"took {elapsed:.1f}s to report an unreachable server"
    assert no_model_load == []


# --- models list -----------------------------------------------------------------------------------------------


def test_models_list_shows_the_catalog(tmp_path: Path):
    """Every catalog entry is listed with its size in MB (bytes / 1e6) and its path under the model home."""
    result = CliRunner().invoke(app, ["models", "list"], env={**ENV, "THINKSCALE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.stderr
    for name, spec in CATALOG.items():
        assert name in result.stdout
        assert f"{spec.size / 1e6:.1f}" in result.stdout
    assert str(tmp_path) in result.stdout


# --- layering: the command line does not load the web stack -----------------------------------------------------


def test_importing_the_cli_does_not_import_the_web_stack():
    """`thinkscale solve` imports thinkscale.cli; the server's FastAPI/uvicorn/starlette load only inside `serve`.
    A fresh interpreter, because this test process has imported the server already."""
    code = ("import thinkscale.cli, sys; "
            "web = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')); "
            "assert not web, web")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_server_does_not_import_the_cli():
    """The dependency goes one way: thinkscale.cli registers `serve`; nothing under thinkscale/server imports it."""
    server = Path(thinkscale.cli.__file__).parent / "server"
    offenders = []
    for path in sorted(server.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[:2] == ["thinkscale", "cli"]]
    assert offenders == []


def test_help_lists_serve_with_its_options():
    """`serve` is imported lazily in its body, not hidden: typer still knows the command and its options."""
    top = invoke(["--help"])
    assert top.exit_code == 0, top.stderr
    assert "serve" in top.stdout
    serve = invoke(["serve", "--help"])
    assert serve.exit_code == 0, serve.stderr
    for option in ("--model", "--host", "--port", "--api-key", "--max-concurrency", "--strategy-knobs"):
        assert option in serve.stdout


def test_errors_from_every_command_module_are_one_escaped_line():
    """One `fail` for every command: `error: ...` on stderr, markup in the message printed as text."""
    result = CliRunner().invoke(app, ["models", "path", "[red]no-such-model"], env=ENV)
    assert result.exit_code == 1
    assert one_line_error(result).startswith("error: ") and "[red]no-such-model" in result.stderr


# --- issue 31: bounded work, visible progress, results never lost to a side file ---------------------------------


@pytest.mark.parametrize(("option", "needle"), [
    (["--strategy", "self-consistency:n_samples=100000", "--max-tokens", "4"], "n_samples=100000"),
    (["--strategy", "self-consistency", "-n", "65"], "n_samples=65 (set by -n)"),
    (["--strategy", "self-consistency", "--knob", "n_samples=1000"], "n_samples=1000 (set by --knob"),
    (["--strategy", "best-of-n:n_samples=500"], "n_samples=500"),
    (["--strategy", "mcts:n_simulations=1000"], "n_simulations=1000"),
    (["--strategy", "adaptive-sc:max_samples=5000"], "max_samples=5000"),
    (["--strategy", "debate", "--knob", "n_agents=100"], "n_agents=100"),
])
def test_a_sample_count_over_the_cap_is_refused_before_the_model_loads(option, needle, no_model_load):
    """The server caps sc-N at 64; solve holds every sample count to the same cap, and says how to go higher."""
    t0 = time.perf_counter()
    line = one_line_error(invoke(["solve", "What is 2 plus 3?", "--model", "smollm2-135m", *option]))
    assert needle in line and "over the cap of 64 samples" in line and "--max-samples" in line
    assert time.perf_counter() - t0 < 10 and no_model_load == []


def test_max_samples_raises_the_cap(scripted):
    scripted(TEXTS * 24)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "70", "--max-samples", "70", "--json"])
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["samples"]) == 70
    assert invoke([*ARGS, "--max-samples", "0"]).exit_code == 2  # a usage error


@pytest.mark.parametrize("json_out", [True, False])
def test_a_trace_that_cannot_be_written_does_not_lose_the_answer(scripted, json_out):
    """The answer is printed first; then the side file fails with one error line and exit 1."""
    scripted(TEXTS)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--trace", "/proc/nope/t.json",
                     *(["--json"] if json_out else [])])
    assert result.exit_code == 1, result.output
    if json_out:
        assert json.loads(result.stdout)["answer"] == "5"
    else:
        assert "answer: 5" in result.stdout
    line = one_line_error(result)
    assert "--trace /proc/nope/t.json" in line and "cannot write the trace" in line


def test_a_long_solve_shows_a_spinner_on_stderr(monkeypatch: pytest.MonkeyPatch):
    """After SPINNER_AFTER_SECONDS a status line with the strategy, model and elapsed seconds is drawn on stderr (a
    terminal); it is gone when the answer is printed."""
    import io

    from rich.console import Console

    import thinkscale.cliutil

    screen = io.StringIO()
    monkeypatch.setattr(thinkscale.cliutil, "err", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setattr(thinkscale.cli, "SPINNER_AFTER_SECONDS", 0.05)
    backend = ScriptedBackend(TEXTS, seconds_per_token=0.02)  # 9 prompt + 13 completion words: about 0.45 s
    monkeypatch.setattr(thinkscale.cli, "_backend", lambda model, base_url, *, quiet: backend)
    result = invoke([*ARGS, "--strategy", "self-consistency", "-n", "3", "--model", "fake", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "5"
    assert "solving with self-consistency on fake" in screen.getvalue()


def test_quick_work_shows_no_spinner():
    import io

    from rich.console import Console

    from thinkscale.cliutil import working

    screen = io.StringIO()
    with working("quick", after=5.0, console=Console(file=screen, force_terminal=True)):
        pass
    assert screen.getvalue() == ""


def test_an_error_message_is_one_printable_line_whatever_it_quotes():
    """fail() keeps `error: ...` on one line: a quoted value's control characters (which terminals obey and Python
    splits lines at) are escaped, a message written on several lines is joined, a 100 KB value is cut."""
    from thinkscale.cliutil import MAX_MESSAGE, one_line

    assert one_line("bad \x1b[31mred\x1e value") == "bad \\x1b[31mred\\x1e value"
    assert one_line("cannot resume:\n  a: 1 vs 2\n  b: 3 vs 4\nuse another") == \
        "cannot resume: a: 1 vs 2; b: 3 vs 4; use another"
    assert one_line("u\u2028v\x85w") == "u\\u2028v\\x85w"
    long = one_line("--out " + "x" * 100_000 + " is a file; give a folder")
    assert len(long) <= MAX_MESSAGE and long.startswith("--out xxx") and long.endswith("is a file; give a folder")
    result = invoke(["export", "\x1b]0;pwned\x07" + "y" * 5000])
    line = one_line_error(result)
    assert "\\x1b]0;pwned\\x07" in line and len(line) <= MAX_MESSAGE + 10
