"""`thinkscale serve` refuses bad limits with a clear message before it binds a port."""

from __future__ import annotations

from typer.testing import CliRunner

from thinkscale.cli import app


def test_max_active_sequences_below_one_is_a_usage_error():
    r = CliRunner().invoke(app, ["serve", "--max-active-sequences", "0"])
    assert r.exit_code == 2
    assert "max-active-sequences" in r.output


def test_max_active_sequences_beyond_llama_cpp_limit_names_the_option(smollm2_path):
    r = CliRunner().invoke(app, ["serve", "--model", smollm2_path, "--max-active-sequences", "300"])
    assert r.exit_code == 1
    assert "max_active_sequences must be in 1..n_seq_max-1" in r.output
