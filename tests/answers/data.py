"""Where the test data lives: case tables kept as JSON next to the tests, and the benchmark JSONL files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

DATA = Path(os.environ.get("THINKSCALE_DATA", "/work/shared/data"))
CASES = Path(__file__).parent / "cases"


def load_cases(name: str) -> list[dict[str, Any]]:
    """A table of cases (``cases/<name>.json``): a list of objects, each with a ``why``."""
    cases: list[dict[str, Any]] = json.loads((CASES / f"{name}.json").read_text())
    return cases


def load_rows(name: str) -> list[dict[str, Any]]:
    """The rows of ``<DATA>/<name>.jsonl``; skips the test when the data folder is not there."""
    path = DATA / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (set THINKSCALE_DATA to the benchmark data folder)")
    return [json.loads(line) for line in path.read_text().splitlines()]
