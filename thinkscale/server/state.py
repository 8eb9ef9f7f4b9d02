"""What one app's routes share: built by ``create_app``, kept on ``app.state.server``, and handed to every route by
the ``server_state`` dependency. Two apps in one process share nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from thinkscale.server.admission import Admission
from thinkscale.server.engine import ServeEngine, ServerLimits
from thinkscale.server.job import Job
from thinkscale.server.metrics import Metrics


@dataclass(eq=False)
class ServerState:
    """The engine, the limits, admission control, the metrics, the worker pool and the running jobs of one app.

    ``api_key``: when set, every /v1 route and /metrics need ``Authorization: Bearer <api_key>``."""

    engine: ServeEngine
    limits: ServerLimits
    api_key: str | None
    admission: Admission
    metrics: Metrics
    executor: ThreadPoolExecutor
    jobs: set[Job] = field(default_factory=set)  # requests whose threads are running (for /health and tests)

    @classmethod
    def create(cls, engine: ServeEngine, *, api_key: str | None = None,
               limits: ServerLimits | None = None) -> ServerState:
        lim = limits or ServerLimits()
        admission = Admission(lim.max_concurrency, lim.max_queue)
        metrics = Metrics(queued=lambda: admission.queued, running=lambda: admission.running)
        # every choice of every running request has its own thread: strategies block in backend.generate
        executor = ThreadPoolExecutor(max_workers=lim.max_concurrency * lim.max_n,
                                      thread_name_prefix="thinkscale-serve")
        return cls(engine, lim, api_key, admission, metrics, executor)

    def shutdown(self) -> None:
        """Stop every running job and the pool (at the app's shutdown)."""
        for job in list(self.jobs):
            job.stop_work("shutdown")
        self.executor.shutdown(wait=False, cancel_futures=True)


def server_state(request: Request) -> ServerState:
    """The dependency that hands a route its app's state."""
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]
