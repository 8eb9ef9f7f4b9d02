"""``--backend scripted:FILE``: the scripted fake (``ScriptedBackend``) driven by a table, for testing sweeps.

A sweep asks for samples in an order that depends on what is already stored (resume) and on thread timing, so a
script consumed in order would answer differently on every run. This table makes the fake a deterministic function
of the request instead: the answer to a prompt depends only on its user message, the request's seed and the sample
index. The file is JSON::

    {"responses": {"<user message text>": ["sample text 0", "sample text 1", ...], ...},
     "max_samples": 100000,          # the script's length: asking for more raises ScriptExhausted
     "n_params": 1000000,            # for FLOPs (2 x n_params x tokens computed)
     "seconds_per_token": 0.0}       # simulated decode time (the fake sleeps), to make runs take time

A greedy request (temperature 0) gets ``responses[0]``; a sampled request with a seed gets
``responses[sample_seed(j) % len(responses)]`` for sample ``j`` (so N samples are a seeded draw from the list); a
sampled request without a seed is an error, since it would not replay. A request whose last user message is not in
the table is answered from the longest table prompt that one of its user messages contains (an aggregation or
debate turn that restates the problem, or a conversation that started with it); with none, it is an error naming
the prompt. Usage is the fake's: one token per whitespace-separated word.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thinkscale.backends.scripted import ScriptedBackend, ScriptItem
from thinkscale.types import GenRequest

KEYS = {"responses", "max_samples", "n_params", "seconds_per_token"}


def load_table(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        table = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"scripted backend table {p}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"scripted backend table {p}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(table, dict) or "responses" not in table:
        raise ValueError(f"scripted backend table {p}: expected an object with 'responses'")
    unknown = set(table) - KEYS
    if unknown:
        raise ValueError(f"scripted backend table {p}: unknown keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
    responses = table["responses"]
    if not isinstance(responses, dict) or not all(
            isinstance(v, list) and v and all(isinstance(t, str) for t in v) for v in responses.values()):
        raise ValueError(f"scripted backend table {p}: 'responses' must map each prompt to a non-empty list of "
                         "strings")
    return table


def table_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scripted_backend(path: str | Path, *, score_fn: Callable[[str, str], tuple[float, ...]] | None = None
                     ) -> ScriptedBackend:
    """A ScriptedBackend whose every script entry answers from the table at ``path`` (see the module doc);
    ``score_fn`` scores continuations (``ScriptedBackend``'s), for verifiers such as P(yes)."""
    table = load_table(path)
    responses: dict[str, list[str]] = table["responses"]

    def answer(req: GenRequest, j: int) -> ScriptItem:
        assert req.messages is not None or req.prompt is not None
        users = [m.content for m in req.messages or () if m.role == "user"]
        key = users[-1] if users else str(req.prompt)
        if key not in responses:
            inside = [k for k in responses if any(k in u for u in users)]
            if not inside:
                raise ValueError(f"scripted backend table {path} has no responses for the prompt {key[:80]!r}")
            key = max(inside, key=len)
        options = responses[key]
        if req.temperature == 0:
            return ScriptItem(options[0])
        seed = req.sample_seed(j)
        if seed is None:
            raise ValueError("the scripted table backend needs a seed on sampled requests, so that it replays")
        return ScriptItem(options[seed % len(options)])

    max_samples = int(table.get("max_samples", 100_000))
    return ScriptedBackend([answer] * max_samples, n_params=int(table.get("n_params", 1_000_000)),
                           seconds_per_token=float(table.get("seconds_per_token", 0.0)), score_fn=score_fn)
