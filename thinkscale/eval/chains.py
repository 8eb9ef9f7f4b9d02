"""Stored chains: which generate request a stored sample answers, and serving requests from a run's own chains (and
from other runs' stores of the same model: ``SweepConfig.share_chains_from``).

One matcher for everything that serves stored chains (``thinkscale.eval.replay`` and the sweep runner's sample
sharing). Sample ``j`` of a seeded request is sample ``first_sample + j`` of one seeded draw (``GenRequest
.sample_seed``), whatever ``n`` is, so a stored chain answers a request when the request's prompt messages and
sampling knobs (``request_key``: temperature, top_p, top_k, min_p, max_tokens, stop, seed, continue_final) are the
ones that drew it and the chain's place in the draw is one the request asks for. ``n``, ``first_sample`` and
``logprobs`` are not part of the key: they say which chains and what else a request wants.

``SharingBackend`` is what a sweep job sees when sample sharing is on (``SweepConfig.share_samples``): it records
every keyed request's chains (``ChainRow``, stored with the job) and serves a request from ``ChainIndex``, which
holds only chains of jobs already committed to the store (this run's, then those of the runs named in
``share_chains_from``). A request is served when every chain it asks for is
stored; when only its first chains are, those are served and the rest generated with ``first_sample`` set (exact,
by the above); otherwise, or when it asks for logprobs (the store keeps only a summary of them), the model
generates it. A served request is charged as the chains cost when they were generated: their completion tokens,
the prompt tokens and cached prompt tokens of the request that drew them, and their shares (1/n each) of that
request's seconds and FLOPs; a split request is charged the model call for the rest plus those shares, its prompt
once (as that call counted it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from thinkscale.backends.base import Backend, BackendProxy
from thinkscale.eval.store import ChainRow
from thinkscale.types import Completion, GenRequest, Message, Sample, Usage

RequestKey = tuple[tuple[Message, ...], float, float, int, float, int, tuple[str, ...], int | None, bool]


def request_key(req: GenRequest) -> RequestKey | None:
    """What a stored chain's request must match: prompt, sampling knobs and seed (not n, not first_sample, not
    logprobs). A raw-prompt request, a sampled request without a seed (it would not replay), or one with a
    ``confidence_stop`` (its chains may end early: they are not the draw's chains) has no key."""
    if req.messages is None or (req.seed is None and req.temperature != 0) or req.confidence_stop is not None:
        return None
    return (req.messages, float(req.temperature), float(req.top_p), req.top_k, float(req.min_p), req.max_tokens,
            req.stop, req.seed, req.continue_final)


def request_id(req: GenRequest) -> str | None:
    """``request_key`` as the store keeps it: a sha256 of its JSON."""
    key = request_key(req)
    if key is None:
        return None
    messages, *rest = key
    text = json.dumps([[[m.role, m.content] for m in messages], *[list(x) if isinstance(x, tuple) else x
                                                                   for x in rest]])
    return hashlib.sha256(text.encode()).hexdigest()


T = TypeVar("T")


class ChainIndex(Generic[T]):
    """Stored chains by request id and place in the seeded draw. Thread-safe: sweep workers read it while the
    runner adds the chains of each job it commits."""

    def __init__(self) -> None:
        self._chains: dict[str, dict[int, T]] = {}
        self._lock = threading.Lock()

    def add(self, rid: str, place: int, chain: T) -> T | None:
        """Store ``chain`` unless the place holds one already; returns that earlier chain (None when added)."""
        with self._lock:
            held = self._chains.setdefault(rid, {})
            if place in held:
                return held[place]
            held[place] = chain
            return None

    def stored(self, req: GenRequest) -> dict[int, T]:
        """Every chain held for ``req``'s key, by place (empty when none or when it has no key)."""
        rid = request_id(req)
        return self.held(rid) if rid is not None else {}

    def held(self, rid: str) -> dict[int, T]:
        """Every chain held under the request id ``rid``, by place (empty when none)."""
        with self._lock:
            return dict(self._chains.get(rid, {}))

    def items(self) -> list[tuple[str, int, T]]:
        """Every (request id, place, chain) held."""
        with self._lock:
            return [(rid, place, c) for rid, held in self._chains.items() for place, c in held.items()]

    def prefix(self, req: GenRequest) -> list[T]:
        """The chains ``req`` asks for (places ``first_sample``, ``first_sample + 1``, ...) up to the first one not
        held: all ``req.n`` of them when the request can be served whole."""
        held = self.stored(req)
        out = []
        for place in range(req.first_sample, req.first_sample + req.n):
            if place not in held:
                break
            out.append(held[place])
        return out


@dataclass(frozen=True)
class StoredChain:
    """A chain a committed job generated (its stored row, with what its request cost), and that job: of this run, or
    of the run ``run`` (another store, ``SweepConfig.share_chains_from``), on problem ``problem_id``."""

    row: ChainRow
    job_id: int
    run: str | None = None
    problem_id: str | None = None


def _total(values: Sequence[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


class SharingBackend(BackendProxy):
    """One job's view of the model backend: records its chains and serves what ``index`` holds (see the module
    doc). ``index=None`` records only (sharing off). ``rows`` are the job's chains, in request order."""

    def __init__(self, inner: Backend, index: ChainIndex[StoredChain] | None) -> None:
        super().__init__(inner)
        self.index = index
        self.rows: list[ChainRow] = []
        self._calls = 0  # keyed requests recorded so far

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        served: list[list[StoredChain]] = []
        asked: list[GenRequest | None] = []  # what goes to the model for each request (None: nothing)
        for req in requests:
            got = [] if self.index is None or req.logprobs else self.index.prefix(req)
            if got and len(got) < req.n and req.seed is None:
                got = []  # an unseeded (greedy) request cannot be continued with first_sample
            served.append(got)
            asked.append(None if len(got) == req.n else
                         dataclasses.replace(req, n=req.n - len(got), first_sample=req.first_sample + len(got)))
        todo = [a for a in asked if a is not None]
        generated = iter(self.inner.generate(todo) if todo else [])
        out = []
        for req, got, sub in zip(requests, served, asked, strict=True):
            out.append(self._complete(req, got, None if sub is None else next(generated)))
        return out

    def _complete(self, req: GenRequest, got: list[StoredChain], fresh: Completion | None) -> Completion:
        """The request's completion from its served chains and the model's completion of the rest, recorded."""
        rows = [c.row for c in got]
        samples = [Sample(r.text, r.completion_tokens, r.finish_reason, None)  # type: ignore[arg-type]
                   for r in rows]
        if fresh is not None:
            samples += fresh.samples
        if rows:
            stored = Usage(prompt_tokens=rows[0].prompt_tokens, cached_prompt_tokens=rows[0].cached_prompt_tokens,
                           completion_tokens=_total([r.completion_tokens for r in rows]), calls=1,
                           seconds=_total([r.seconds for r in rows]), flops=_total([r.flops for r in rows]))
            usage = stored if fresh is None else dataclasses.replace(
                fresh.usage + stored, prompt_tokens=fresh.usage.prompt_tokens,
                cached_prompt_tokens=fresh.usage.cached_prompt_tokens, calls=fresh.usage.calls)
        else:
            assert fresh is not None
            usage = fresh.usage
        self._record(req, got, fresh)
        return Completion(tuple(samples), usage)

    def _record(self, req: GenRequest, got: list[StoredChain], fresh: Completion | None) -> None:
        rid = request_id(req)
        if rid is None:
            return
        call = self._calls
        self._calls += 1
        for j, c in enumerate(got):
            self.rows.append(dataclasses.replace(
                c.row, call=call, pos=j, request_key=rid, place=req.first_sample + j,
                source_job=c.job_id if c.run is None else None, source_run=c.run,
                source_run_job=None if c.run is None else c.job_id))
        if fresh is None:
            return
        u, k = fresh.usage, len(fresh.samples)
        for j, s in enumerate(fresh.samples, start=len(got)):
            self.rows.append(ChainRow(call, j, rid, req.first_sample + j, s.text, s.finish_reason,
                                      s.completion_tokens, u.prompt_tokens, u.cached_prompt_tokens,
                                      None if u.seconds is None else u.seconds / k,
                                      None if u.flops is None else u.flops / k, None))
