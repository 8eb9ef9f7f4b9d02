"""Endpoint pools: several OpenAI-compatible servers of one model (one vLLM server per GPU node, several
llama-servers) used as one backend by ``OpenAICompatBackend``.

Each HTTP call goes to the healthy endpoint with the fewest calls in flight (ties in turn), so a pool of servers
of unequal speed stays balanced by their own pace. A call that fails in a way worth retrying (refused or reset
connection, timeout, 429, 5xx) marks its endpoint down for a cooldown that doubles with each failure in a row
(``cooldown_s`` .. ``max_cooldown_s``) and is retried at once on another endpoint; only when none is up does the
backend wait its backoff. An endpoint whose cooldown is over is health-checked (``GET {url}/models``; any answer but
a 5xx other than 501 counts as up) before it gets calls again, so a dead server costs one quick probe per cooldown,
not a failed call. A pool of one endpoint is plain retrying: nothing is marked down or probed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def check_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """The pool's base URLs, trailing slashes removed; a clear error for an empty list, a non-http(s) URL, a URL
    with a comma (the sweep's backend spec separates them with commas) or one given twice."""
    out = tuple(u.strip().rstrip("/") for u in urls)
    if not out:
        raise ValueError("an endpoint pool needs at least one base URL such as 'http://127.0.0.1:8000/v1'")
    for u in out:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {u!r}")
        if "," in u:
            raise ValueError(f"base URL {u!r} contains a comma; a pool's URLs are separated by commas")
    twice = sorted({u for u in out if out.count(u) > 1})
    if twice:
        raise ValueError(f"base URLs listed twice: {twice}")
    return out


def read_url_file(path: str | Path) -> list[str]:
    """Base URLs from a pool file: one per line; blank lines and ``#`` comments are skipped."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the pool file {p}: {e.strerror or e}") from None
    urls = [line.split("#", 1)[0].strip() for line in lines]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError(f"the pool file {p} lists no base URL (one per line, e.g. http://10.0.0.2:8000/v1)")
    return urls


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    failures: int = 0  # in a row
    down_until: float = 0.0  # monotonic; an endpoint with failures > 0 past this is probed before use
    calls: int = 0
    failed_calls: int = 0


class EndpointPool:
    """Picks an endpoint per call (see the module doc). ``probe(url) -> bool`` is the health check (the backend's
    ``GET {url}/models``). Thread-safe."""

    def __init__(self, urls: Sequence[str], probe: Callable[[str], bool], *, cooldown_s: float = 1.0,
                 max_cooldown_s: float = 30.0) -> None:
        self.urls = check_urls(urls)
        self._probe = probe
        self._cooldown_s, self._max_cooldown_s = cooldown_s, max_cooldown_s
        self._endpoints = {u: _Endpoint(u) for u in self.urls}
        self._turn = 0
        self._lock = threading.Lock()

    def acquire(self, avoid: frozenset[str] = frozenset()) -> str:
        """The endpoint for the next call: the least loaded healthy one, preferring those not in ``avoid`` (the
        ones that already failed this request). With none up, the one that comes back soonest."""
        if len(self.urls) == 1:
            with self._lock:
                return self._take(self._endpoints[self.urls[0]])
        while True:
            suspect = None
            with self._lock:
                now = time.monotonic()
                up = [e for e in self._endpoints.values() if e.down_until <= now]
                pool = [e for e in up if e.url not in avoid] or up
                if not pool:
                    return self._take(min(self._endpoints.values(), key=lambda e: e.down_until))
                turn = self._turn
                self._turn += 1
                best = min(pool, key=lambda e: (e.in_flight, (self.urls.index(e.url) - turn) % len(self.urls)))
                if best.failures == 0:
                    return self._take(best)
                # back from a cooldown: check it before it gets calls, and keep others off it meanwhile
                best.down_until = now + self._cooldown(best.failures)
                suspect = best
            if self._probe(suspect.url):
                with self._lock:
                    suspect.failures, suspect.down_until = 0, 0.0
                log.info("endpoint %s is up again", suspect.url)
            else:
                with self._lock:
                    suspect.failures += 1
                    suspect.down_until = time.monotonic() + self._cooldown(suspect.failures)

    def _take(self, e: _Endpoint) -> str:
        """(With the lock held.)"""
        e.in_flight += 1
        e.calls += 1
        return e.url

    def release(self, url: str, *, failed: bool = False) -> None:
        """The call to ``url`` is over; ``failed``: it failed in a way that says the server is unwell."""
        with self._lock:
            e = self._endpoints[url]
            e.in_flight -= 1
            if len(self.urls) == 1:
                return
            if not failed:
                e.failures = 0
                return
            e.failed_calls += 1
            e.failures += 1
            e.down_until = time.monotonic() + self._cooldown(e.failures)
        log.warning("endpoint %s marked down for %.1f s after %d failure(s) in a row", url,
                    self._cooldown(e.failures), e.failures)

    def any_up(self, avoid: frozenset[str] = frozenset()) -> bool:
        """Whether an endpoint outside ``avoid`` is up (a retry there needs no backoff)."""
        with self._lock:
            now = time.monotonic()
            return any(e.down_until <= now and e.url not in avoid for e in self._endpoints.values())

    def stats(self) -> dict[str, tuple[int, int]]:
        """Per endpoint: (calls sent, calls failed)."""
        with self._lock:
            return {u: (e.calls, e.failed_calls) for u, e in self._endpoints.items()}

    def _cooldown(self, failures: int) -> float:
        return min(self._max_cooldown_s, self._cooldown_s * 2 ** max(0, failures - 1))
