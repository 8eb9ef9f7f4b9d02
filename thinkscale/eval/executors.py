"""Where a sweep's jobs run: threads of this process (``LocalExecutor``) or replicas on a Ray cluster
(``RayExecutor``, ``thinkscale eval --executor ray``; Ray is the optional extra ``thinkscale[ray]``).

Either way the calling thread of ``run_sweep`` alone grades each finished job and writes it to the store in one
transaction, so the crash guarantees do not depend on the executor: a job is stored whole or not at all, and a
killed sweep resumes with nothing lost or duplicated. A job's result is a function of its key (its rng is seeded
from it), so it does not matter which thread or replica runs it.

Ray. Each replica is an actor that builds the model's backend once with the sweep's backend factory (embedded
llama.cpp on a GGUF, an OpenAI-compatible endpoint or pool, the scripted fake) and runs the jobs the driver sends
it, ``workers`` at a time. An actor that dies (``ray.kill``, a crashed process, a lost node) loses only the jobs in
flight on it: they are sent again to another replica and a new actor takes the dead one's place (at most
``max_replacements`` times per model: a backend that kills every process it runs in is an error, not bad luck). The
actors belong to the driver: when the driver dies Ray ends them, and the resumed sweep starts new ones.

Sample sharing with Ray. A replica cannot read the driver's index of stored chains, so the driver sends each job
the chains of committed jobs on the same problem (sharing matches prompts, and a problem's jobs are the ones that
ask for its prompts); the replica serves the job from those. What is shared is what the local executor shares:
only chains of jobs committed before the job was sent. Two problems with identical text do not share chains.

Time. ``busy_now`` of a Ray run is the mean over replicas of the time each had a backend call in flight, so the
sweep's harness overhead (1 - busy / wall) is the share of replica time spent outside model calls: scheduling,
serialization, grading and store writes on the driver, replicas waiting for work.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from thinkscale.backends.base import Backend, BackendError
from thinkscale.eval.chains import ChainIndex, StoredChain
from thinkscale.eval.runner import (
    BackendFactory,
    Job,
    OtherModels,
    Outcome,
    Sandboxes,
    TimedBackend,
    model_identity,
    run_job,
)

log = logging.getLogger(__name__)

# A job's chains for a replica: (request id, place in the seeded draw, the stored chain).
ShippedChains = list[tuple[str, int, StoredChain]]


class ModelRun(Protocol):
    """One model's backend(s), loaded, running that model's jobs."""

    identity: dict[str, Any]  # what ``Store.bind_model`` checks: fingerprint, parameters

    def outcomes(self, jobs: list[Job], stop: threading.Event | None,
                 shared: ChainIndex[StoredChain] | None) -> Iterator[Outcome]:
        """Outcomes of ``jobs`` as they finish; no new job starts once ``stop`` is set (the ones in flight finish
        and are yielded). ``shared`` holds the committed jobs' chains; the caller adds each job's once stored."""
        ...

    def busy_now(self) -> float:
        """Seconds with a backend call in flight so far (see the module doc for Ray)."""
        ...

    def close(self) -> None: ...


class Executor(Protocol):
    # threads of each embedded llama.cpp backend the sweep's default factory makes (None: all cores it may use)
    backend_threads: int | None

    def start(self, model: str, factory: BackendFactory, *, serialize: bool) -> ModelRun:
        """Load ``model`` (with ``factory``; ``serialize``: one call at a time, for backends that are not
        thread-safe) and return the run of its jobs."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- local threads


class LocalExecutor:
    """Jobs on ``workers`` threads of this process (one: in the calling thread, so Ctrl-C interrupts the job in
    flight), one backend per model (the llama.cpp backend batches concurrent calls)."""

    backend_threads: int | None = None

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def start(self, model: str, factory: BackendFactory, *, serialize: bool) -> LocalRun:
        inner = factory(model)
        try:
            return LocalRun(model, inner, factory, serialize, self.workers)
        except BaseException:
            inner.close()
            raise

    def close(self) -> None:
        pass


class LocalRun:
    def __init__(self, model: str, inner: Backend, factory: BackendFactory, serialize: bool, workers: int) -> None:
        self.identity = model_identity(model, inner)
        self._inner, self._workers = inner, workers
        self._backend = TimedBackend(inner, serialize=serialize)
        self._sandboxes = Sandboxes(self._backend, workers)
        self._others = OtherModels(factory, serialize, (model, self._backend))

    def busy_now(self) -> float:
        return self._backend.busy_now()

    def outcomes(self, jobs: list[Job], stop: threading.Event | None,
                 shared: ChainIndex[StoredChain] | None) -> Iterator[Outcome]:
        args = (self._backend, shared, self._sandboxes, self._others)
        if self._workers == 1:
            for job in jobs:
                if stop is not None and stop.is_set():
                    return
                yield run_job(job, *args)
            return
        it = iter(jobs)
        pool = cf.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="eval")
        running: set[cf.Future[Outcome]] = set()
        try:
            while True:
                while len(running) < self._workers and not (stop is not None and stop.is_set()):
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    running.add(pool.submit(run_job, nxt, *args))
                if not running:
                    break
                finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for f in finished:
                    yield f.result()
        except BaseException:
            # Abandoned (a second Ctrl-C, a job that raised, a caller that stopped reading): the jobs in flight are
            # not waited for. Their results would be dropped anyway; closing the run (the caller's next step) closes
            # the backend, which fails their calls, so their threads end at once.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def close(self) -> None:
        try:
            self._sandboxes.close()
            self._others.close()
        finally:
            self._inner.close()


# ---------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """The ``ray`` module, or an error that says how to get it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("the Ray executor needs Ray, an optional dependency: pip install 'thinkscale[ray]' (or "
                          f"pip install ray); run without --executor ray to use this machine only ({e})") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """``address``: a running cluster to attach to (``ray.init(address=...)``: ``auto``, ``HOST:PORT``,
    ``ray://HOST:10001``); None starts a local one with ``replicas x cpus_per_replica`` CPUs. ``replicas``: actors
    per model, each with its own backend; ``cpus_per_replica``: the CPUs Ray reserves for each (fractions allowed;
    a llama.cpp replica should get the threads it uses); ``workers``: jobs in flight per replica;
    ``max_replacements``: dead actors replaced per model before the sweep fails (default 2 x replicas)."""

    address: str | None = None
    replicas: int = 2
    cpus_per_replica: float = 1.0
    workers: int = 1
    max_replacements: int | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if not (self.cpus_per_replica > 0 and math.isfinite(self.cpus_per_replica)):
            raise ValueError(f"cpus_per_replica must be a number > 0, got {self.cpus_per_replica}")
        if self.workers < 1:
            raise ValueError(f"workers (jobs in flight per replica) must be >= 1, got {self.workers}")
        if self.max_replacements is not None and self.max_replacements < 0:
            raise ValueError(f"max_replacements must be >= 0, got {self.max_replacements}")


class RayExecutor:
    """Jobs on Ray actors (see the module doc). Connects on first use; ``close`` shuts down a local cluster it
    started (a cluster it attached to, or one this process had already joined, is left running)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        # an embedded llama.cpp replica decodes on the CPUs Ray reserved for it, not on every core of its node
        self.backend_threads: int | None = max(1, int(self.options.cpus_per_replica))
        self._owns_ray = False
        self.current: RayRun | None = None  # the model being run (tests kill its actors)

    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            o = self.options
            if o.address is not None:
                ray.init(address=o.address, log_to_driver=False)
            else:
                ray.init(num_cpus=math.ceil(o.replicas * o.cpus_per_replica), include_dashboard=False,
                         log_to_driver=False)
            self._owns_ray = True
        return ray

    def start(self, model: str, factory: BackendFactory, *, serialize: bool) -> RayRun:
        ray = self._connect()
        self.current = RayRun(ray, self.options, model, factory, serialize)
        return self.current

    def close(self) -> None:
        if self._owns_ray:
            import_ray().shutdown()
            self._owns_ray = False


class Replica:
    """A Ray actor's state: one model's backend, built once by ``load``, and the jobs it runs (``run``, called by
    up to ``workers`` threads of the actor at once)."""

    def __init__(self, model: str, factory: BackendFactory, serialize: bool, workers: int) -> None:
        self._model, self._factory, self._serialize, self._workers = model, factory, serialize, workers
        self._inner: Backend | None = None

    def load(self) -> dict[str, Any]:
        """Build the backend; returns the model's identity (the driver checks every replica's is the same)."""
        from thinkscale.strategies.base import load_all

        load_all()  # the strategy modules, imported now rather than in the first job (the driver did so planning)
        self._inner = self._factory(self._model)
        self._backend = TimedBackend(self._inner, serialize=self._serialize)
        self._sandboxes = Sandboxes(self._backend, self._workers)
        self._others = OtherModels(self._factory, self._serialize, (self._model, self._backend))
        return model_identity(self._model, self._inner)

    def run(self, job: Job, chains: ShippedChains | None) -> tuple[Outcome, float]:
        """Run ``job``, served from ``chains`` (None: sample sharing off); returns its outcome and this replica's
        busy seconds so far."""
        index: ChainIndex[StoredChain] | None = None
        if chains is not None:
            index = ChainIndex()
            for rid, place, chain in chains:
                index.add(rid, place, chain)
        outcome = run_job(job, self._backend, index, self._sandboxes, self._others)
        return outcome, self._backend.busy_now()

    def where(self) -> dict[str, Any]:
        """The node, host and process this replica runs in."""
        import os
        import socket

        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

    def close(self) -> None:
        if self._inner is not None:
            try:
                self._sandboxes.close()
                self._others.close()
            finally:
                self._inner.close()


@dataclass
class _Slot:
    """One replica as the driver sees it: its actor, whether it has loaded, its jobs in flight."""

    actor: Any
    index: int
    ready: bool = False
    in_flight: int = 0


class RayRun:
    """One model's replicas on the cluster and the driver's side of running jobs on them."""

    def __init__(self, ray: Any, options: RayOptions, model: str, factory: BackendFactory, serialize: bool) -> None:
        self._ray, self._o, self._model = ray, options, model
        self._actor_class = ray.remote(Replica).options(
            num_cpus=options.cpus_per_replica, max_concurrency=options.workers, max_restarts=0,
            scheduling_strategy="SPREAD")
        self._factory, self._serialize = factory, serialize
        self._rids: dict[str, set[str]] = {}  # problem id -> request ids of the stored chains on it
        self._busy: dict[int, float] = {}  # per replica (ever started), its last reported busy seconds
        self._loading: dict[Any, _Slot] = {}
        self._slots: list[_Slot] = []
        self.replaced = 0  # dead actors replaced so far
        self._max_replacements = 2 * options.replicas if options.max_replacements is None \
            else options.max_replacements
        self._retries: collections.Counter[tuple[Any, ...]] = collections.Counter()
        self.identity: dict[str, Any] = {}
        need, have = options.replicas * options.cpus_per_replica, ray.cluster_resources().get("CPU", 0.0)
        if need > have:
            log.warning("%d replicas x %g CPUs need %g CPUs and the cluster has %g: some wait until it has room "
                        "(an autoscaler may add nodes); lower --replicas or --cpus-per-replica otherwise",
                        options.replicas, options.cpus_per_replica, need, have)
        try:
            for _ in range(options.replicas):
                self._spawn()
            # every replica loads before the first job: a model that cannot load fails the sweep here, once
            while self._loading:
                ready, _ = ray.wait(list(self._loading), num_returns=1, timeout=60)
                if not ready:
                    log.warning("%d replicas of %s still starting (loading the model, or waiting for CPUs)",
                                len(self._loading), model)
                for ref in ready:
                    self._loaded(ref)
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> None:
        index = len(self._busy)
        self._busy[index] = 0.0
        slot = _Slot(self._actor_class.remote(self._model, self._factory, self._serialize, self._o.workers), index)
        self._slots.append(slot)
        self._loading[slot.actor.load.remote()] = slot

    def _loaded(self, ref: Any) -> None:
        """A replica's load finished: it takes jobs from now on. A load that raised fails the sweep (a model that
        cannot load on one node); an actor that died while loading is replaced like one that died in a job."""
        slot = self._loading.pop(ref)
        ray = self._ray
        try:
            identity: dict[str, Any] = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except ray.exceptions.RayActorError as e:
            if not self.identity:
                raise BackendError(f"a replica of {self._model!r} died while loading it: {e}") from None
            self._lost(slot, None, e)
            return
        if not self.identity:
            self.identity = identity
        elif identity != self.identity:
            raise BackendError(f"replica {slot.index} loaded model {self._model!r} as {identity}, but another has "
                               f"{self.identity}: every node must serve the same model")
        slot.ready = True

    def busy_now(self) -> float:
        return sum(self._busy.values()) / self._o.replicas

    def actors(self) -> list[Any]:
        """The live replicas' actors."""
        return [s.actor for s in self._slots]

    def busy_replicas(self) -> list[Any]:
        """The actors with a job in flight now."""
        return [s.actor for s in self._slots if s.in_flight]

    def outcomes(self, jobs: list[Job], stop: threading.Event | None,
                 shared: ChainIndex[StoredChain] | None) -> Iterator[Outcome]:
        queue = collections.deque(jobs)
        flying: dict[Any, tuple[_Slot, Job]] = {}
        for rid, _, chain in shared.items() if shared is not None else ():  # the stored chains, by their problem
            if chain.problem_id is not None:
                self._rids.setdefault(chain.problem_id, set()).add(rid)
        while True:
            while queue and not (stop is not None and stop.is_set()):
                slot = min((s for s in self._slots if s.ready and s.in_flight < self._o.workers),
                           key=lambda s: s.in_flight, default=None)
                if slot is None:
                    break
                job = queue.popleft()
                flying[slot.actor.run.remote(job, self._chains_for(job, shared))] = (slot, job)
                slot.in_flight += 1
            if not flying:
                if queue and not (stop is not None and stop.is_set()):  # only replicas loading: wait for one
                    if not self._loading:
                        raise BackendError(f"no replica of {self._model!r} is left to run the sweep's jobs")
                    [ref], _ = self._ray.wait(list(self._loading), num_returns=1)
                    self._loaded(ref)
                    continue
                return
            [ref], _ = self._ray.wait(list(flying) + list(self._loading), num_returns=1)
            if ref in self._loading:
                self._loaded(ref)
                continue
            slot, job = flying.pop(ref)
            slot.in_flight -= 1
            outcome = self._result(ref, slot, job, queue)
            if outcome is not None:
                yield outcome

    def _result(self, ref: Any, slot: _Slot, job: Job, queue: collections.deque[Job]) -> Outcome | None:
        """The job's outcome; None when its replica died (the job goes back to the front of the queue)."""
        ray = self._ray
        try:
            outcome, busy = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None  # the job's own error, as a local run raises it
        except ray.exceptions.RayActorError as e:
            self._lost(slot, job, e)
            queue.appendleft(job)
            return None
        self._busy[slot.index] = busy
        if outcome.chains:  # learned now, looked up in ``shared`` (which holds only committed chains) when used
            self._rids.setdefault(job.problem.id, set()).update(c.request_key for c in outcome.chains)
        return outcome  # type: ignore[no-any-return]

    def _lost(self, slot: _Slot, job: Job | None, error: Exception) -> None:
        """``slot``'s actor died (with ``job`` in flight): a new actor takes its place, within the limits."""
        if job is not None:
            self._retries[job.key] += 1
            if self._retries[job.key] > 2:
                raise BackendError(f"job {job.key} was in flight on {self._retries[job.key]} replicas that died; "
                                   f"it may be what kills them (last: {error})")
        if slot in self._slots:
            self._slots.remove(slot)
            with contextlib.suppress(Exception):  # it may be unreachable rather than dead: make sure
                self._ray.kill(slot.actor)
            if self.replaced >= self._max_replacements:
                raise BackendError(f"{self.replaced} replicas of {self._model!r} died and were replaced; giving up "
                                   f"(last: {error}). Finished jobs are stored: fix the cluster and resume")
            self.replaced += 1
            log.warning("replica %d of %s died (%s); its jobs go to other replicas and a new one starts",
                        slot.index, self._model, type(error).__name__)
            self._spawn()

    def _chains_for(self, job: Job, shared: ChainIndex[StoredChain] | None) -> ShippedChains | None:
        if shared is None:
            return None
        return [(rid, place, chain) for rid in sorted(self._rids.get(job.problem.id, ()))
                for place, chain in sorted(shared.held(rid).items())]

    def close(self) -> None:
        ray = self._ray
        actors = [s.actor for s in self._slots]
        # a replica still loading (or waiting for a node with room) has nothing to close: it is just ended
        closing = [s.actor.close.remote() for s in self._slots if s.ready]
        self._slots, self._loading = [], {}
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        for a in actors:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(a)
