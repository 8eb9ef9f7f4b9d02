"""Prometheus metrics of one app, in the app's own registry (two apps in one process never share counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from thinkscale.types import Ledger, Usage

CONTENT_TYPE = CONTENT_TYPE_LATEST
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


class Metrics:
    def __init__(self, *, queued: Callable[[], int], running: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("thinkscale_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("thinkscale_request_latency_seconds", "Time to the last byte of the response",
                                 ["endpoint"], registry=r,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.queue_wait = Histogram("thinkscale_queue_wait_seconds", "Time a request waited for a slot",
                                    registry=r, buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.tokens = Counter("thinkscale_tokens", "Tokens of finished requests, from their ledgers: role = ledger "
                              "role (generator, verifier, tool), kind = prompt, cached_prompt or completion",
                              ["role", "kind"], registry=r)
        self.visible = Counter("thinkscale_completion_tokens_by_visibility", "Completion tokens of finished "
                               "requests: hidden reasoning vs the visible answer", ["visibility"], registry=r)
        self.cancelled = Counter("thinkscale_requests_cancelled", "Requests whose work was cancelled",
                                 ["reason"], registry=r)
        self.cancelled_tokens = Counter("thinkscale_cancelled_completion_tokens", "Completion tokens generated "
                                        "for requests that were cancelled before they finished", registry=r)
        self.rejected = Counter("thinkscale_requests_rejected", "Requests refused before running", ["reason"],
                                registry=r)
        q = Gauge("thinkscale_queue_depth", "Requests waiting for a slot", registry=r)
        q.set_function(lambda: float(queued()))
        g = Gauge("thinkscale_requests_running", "Requests holding a slot", registry=r)
        g.set_function(lambda: float(running()))

    def observe_ledger(self, ledger: Ledger) -> None:
        for role, u in ledger.by_role().items():
            for kind, v in (("prompt", u.prompt_tokens), ("cached_prompt", u.cached_prompt_tokens),
                            ("completion", u.completion_tokens)):
                if v:
                    self.tokens.labels(str(role), kind).inc(v)

    def observe_visibility(self, *, reasoning: int | None, content: int | None) -> None:
        if reasoning:
            self.visible.labels("reasoning").inc(reasoning)
        if content:
            self.visible.labels("content").inc(content)

    def observe_cancelled(self, reason: str, spent: Usage) -> None:
        self.cancelled.labels(reason).inc()
        if spent.completion_tokens:
            self.cancelled_tokens.inc(spent.completion_tokens)

    def endpoint(self, path: str) -> str:
        if path.startswith("/v1/models/"):
            return "/v1/models/{model}"
        return path if path in ENDPOINTS else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)
