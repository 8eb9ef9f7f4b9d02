"""Verifier scores of stored chains, each computed once: what rescoring a run with a verifier selector
(``thinkscale.eval.select``) reads.

``ScoreCache`` keeps a chain's scores and what computing them cost in one SQLite file, keyed by the verifier's
identity (``verifier_identity``: its name, the content of the file it was built from, a trained head's metadata, the
model's fingerprint), the conversation and the chain's text. A rerun, another selector on the same verifier, or
another k computes nothing again. ``LazyBackend`` is the run's model, loaded only when a chain is not in the cache,
so a rerun on a fully cached run needs no model at all.

Each chain is scored in a call of its own: its cost is then its own (a batch's usage cannot be split between its
chains exactly), and an interrupted scoring keeps every chain it finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkscale import backends
from thinkscale.backends.base import Backend, BackendError, Capabilities, ModelInfo
from thinkscale.eval.store import StoreError
from thinkscale.types import Candidate, Ledger, Message, Problem, Role, Usage
from thinkscale.verifiers.base import Verifier, VerifierKind, check_scores


class ScoreCache:
    """Verifier scores by (verifier identity, conversation, chain text), with what computing each cost. ``path``
    None: in memory, for one invocation."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.db = sqlite3.connect(":memory:" if self.path is None else self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, scores TEXT NOT NULL, "
                        "usage TEXT NOT NULL)")
        self.hits = self.computed = 0  # this session's lookups found, and scores written

    @staticmethod
    def key(identity: str, messages: Sequence[Message], text: str) -> str:
        blob = json.dumps([identity, [[m.role, m.content] for m in messages], text], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> tuple[tuple[float, ...], Usage] | None:
        row = self.db.execute("SELECT scores, usage FROM scores WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return tuple(json.loads(row[0])), Usage(**json.loads(row[1]))

    def put(self, key: str, scores: Sequence[float], usage: Usage) -> None:
        self.db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)",
                        (key, json.dumps([float(s) for s in scores]), json.dumps(usage.to_dict())))
        self.computed += 1

    def close(self) -> None:
        self.db.close()


def verifier_identity(name: str, path: str | None, verifier: Verifier, fingerprint: str) -> str:
    """What makes two verifiers score alike: the registered name, the file it was built from by content (else the
    path or URL as given), a trained head's metadata (the packaged default ORM has no path), and the model."""
    source: str | None = path
    if path is not None and Path(path).is_file():
        source = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    meta = getattr(verifier, "metadata", None)
    return json.dumps([name, source, meta, fingerprint], sort_keys=True, default=str)


class LazyBackend:
    """The run's model, made by ``make`` on the first call that needs it. Until then ``info()`` answers from the
    fingerprint the run recorded, and ``capabilities`` are those of the backend kind, so verifiers are built and
    cache keys computed without loading anything. Once loaded, a model other than the run's is refused."""

    def __init__(self, make: Callable[[], Backend], kind: str, name: str, fingerprint: str | None) -> None:
        self._make, self.name, self.fingerprint = make, name, fingerprint
        self.capabilities: Capabilities = backends.backend_class(kind).capabilities  # type: ignore[attr-defined]
        self.inner: Any = None

    @property
    def loaded(self) -> bool:
        return self.inner is not None

    def info(self) -> ModelInfo:
        if self.inner is None and self.fingerprint is not None:
            return ModelInfo(self.name, None, None, None, self.fingerprint)
        return self._load().info()  # type: ignore[no-any-return]

    def generate(self, requests: Any) -> Any:
        return self._load().generate(requests)

    def score(self, requests: Any) -> Any:
        return self._load().score(requests)

    def hidden_states(self, requests: Any) -> Any:
        return self._load().hidden_states(requests)

    def tokenize(self, text: str) -> list[int]:
        return self._load().tokenize(text)  # type: ignore[no-any-return]

    def _load(self) -> Any:
        if self.inner is None:
            self.inner = self._make()
            have = self.inner.info().fingerprint
            if self.fingerprint is not None and have != self.fingerprint:
                raise StoreError(f"{self.name} loads as model {have}, but the run was sampled by {self.fingerprint}; "
                                 "verifier scores of its chains need the model that drew them")
        return self.inner

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def backend_kind(spec: str) -> str:
    """The backend kind of a sweep's backend spec (``llamacpp``, ``openai:URL``, ``scripted:FILE``)."""
    kind = spec.partition(":")[0]
    if spec.startswith("scripted:sha256="):
        raise ValueError("this run was drawn by the scripted fake, whose table the store keeps only as a hash: give "
                         "--backend scripted:TABLE.json")
    backends.backend_class(kind)  # ValueError naming the kinds
    return kind


def score_chains(problem: Problem, chains: Sequence[Candidate], verifier: Verifier, identity: str,
                 cache: ScoreCache) -> tuple[list[tuple[float, ...]], list[Usage]]:
    """Each chain's scores and what computing them cost (when cached: the cost then), computing only what
    ``cache`` lacks, one chain per call."""
    scores, costs = [], []
    for chain in chains:
        key = ScoreCache.key(identity, problem.messages, chain.text)
        hit = cache.get(key)
        if hit is None:
            ledger = Ledger()
            rows = verifier.score(problem, [chain], ledger=ledger)
            check_scores(rows, [chain], type(verifier).__name__)
            hit = (tuple(float(s) for s in rows[0]), ledger.total(Role.VERIFIER))
            cache.put(key, *hit)
        scores.append(hit[0])
        costs.append(hit[1])
    return scores, costs


@dataclass(frozen=True)
class CachedVerifier:
    """``inner`` with every chain's scores computed once (``score_chains``: one chain per call, what ``cache``
    lacks); the cost recorded when a chain was scored is charged again when it is read back, so a replayed run
    accounts for what scoring cost. Named as ``inner`` is."""

    inner: Verifier
    identity: str
    cache: ScoreCache = field(repr=False)

    @property
    def name(self) -> str:  # the protocol's class attribute, here the inner verifier's
        return str(getattr(self.inner, "name", type(self.inner).__name__))

    @property
    def kind(self) -> VerifierKind:
        return self.inner.kind

    @property
    def uses_reference(self) -> bool:
        return self.inner.uses_reference

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return self.inner.max_calls(candidates)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        scores, costs = score_chains(problem, candidates, self.inner, self.identity, self.cache)
        for cost in costs:
            ledger.charge(Role.VERIFIER, cost)
        return scores


SCORING_ERRORS = (BackendError, NotImplementedError)  # the model could not score: the work failed, not the input
