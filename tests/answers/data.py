"""Where the test data lives: case tables kept as JSON next to the tests, and the benchmark JSONL files.

The benchmark files are the ones shipped in the package (``thinkscale/eval/data``), so the tests that use them always
run; ``THINKSCALE_DATA`` points them at another folder holding files of the same names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from thinkscale.eval.datasets import data_dir

DATA = Path(os.environ["THINKSCALE_DATA"]) if os.environ.get("THINKSCALE_DATA") else data_dir()
CASES = Path(__file__).parent / "cases"


def load_cases(name: str) -> list[dict[str, Any]]:
    """A table of cases (``cases/<name>.json``): a list of objects, each with a ``why``."""
    cases: list[dict[str, Any]] = json.loads((CASES / f"{name}.json").read_text())
    return cases


def load_rows(name: str) -> list[dict[str, Any]]:
    """The rows of ``<DATA>/<name>.jsonl``. A missing file fails the test: the package ships them."""
    path = DATA / f"{name}.jsonl"
    if not path.is_file():
        pytest.fail(f"{path} not found (the package ships it in thinkscale/eval/data; THINKSCALE_DATA overrides)")
    return [json.loads(line) for line in path.read_text().splitlines()]
