"""Admission control: at most ``max_running`` requests hold a slot, at most ``max_queue`` wait for one (first come,
first served), and the rest are refused at once (429 with a Retry-After estimate). Lives on the event loop: every
method but ``release_threadsafe`` must be called from the loop's thread."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Ticket:
    """One admitted request. It holds a queue place, then a slot, until ``release`` (idempotent)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.state = _State.QUEUED
        self.admitted_at = time.perf_counter()
        self.started_at: float | None = None

    @property
    def queue_seconds(self) -> float:
        return (self.started_at or time.perf_counter()) - self.admitted_at

    def release(self) -> None:
        self._admission._release(self)


class Admission:
    def __init__(self, max_running: int, max_queue: int) -> None:
        self.max_running = max_running
        self.max_queue = max_queue
        self.running = 0
        self.queued = 0
        self._waiters: deque[tuple[Ticket, asyncio.Future[None]]] = deque()
        self._service_ewma: float | None = None  # seconds a request holds a slot

    def admit(self) -> Ticket | None:
        """A ticket, or None when every slot is taken and the queue is full."""
        if self.running >= self.max_running and self.queued >= self.max_queue:
            return None
        self.queued += 1
        return Ticket(self)

    def retry_after_seconds(self) -> int:
        """When a refused client should try again: the time for the queue ahead of it to drain, roughly."""
        per = self._service_ewma if self._service_ewma is not None else 1.0
        return max(1, min(120, math.ceil(per * (self.queued / self.max_running + 1))))

    async def acquire(self, ticket: Ticket) -> None:
        """Wait for a slot (FIFO). Cancelling the wait gives the queue place up."""
        if ticket.state is not _State.QUEUED:
            raise RuntimeError(f"ticket is {ticket.state.value}, not queued")
        if self.running < self.max_running and not self._waiters:
            self._start(ticket)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if ticket.state is _State.QUEUED:
                self._waiters = deque(w for w in self._waiters if w[0] is not ticket)
            raise  # a slot granted just before the cancel is given back by the caller's release()

    def _start(self, ticket: Ticket) -> None:
        self.queued -= 1
        self.running += 1
        ticket.state = _State.RUNNING
        ticket.started_at = time.perf_counter()

    def _release(self, ticket: Ticket) -> None:
        if ticket.state is _State.QUEUED:
            self.queued -= 1
            self._waiters = deque(w for w in self._waiters if w[0] is not ticket)
        elif ticket.state is _State.RUNNING:
            self.running -= 1
            held = time.perf_counter() - (ticket.started_at or ticket.admitted_at)
            self._service_ewma = held if self._service_ewma is None else 0.8 * self._service_ewma + 0.2 * held
        ticket.state = _State.DONE
        while self._waiters and self.running < self.max_running:
            t, fut = self._waiters.popleft()
            if not fut.done():
                self._start(t)
                fut.set_result(None)
            elif t.state is _State.QUEUED:
                # its waiter was cancelled but the ticket was never released: count it out
                self.queued -= 1
                t.state = _State.DONE

    def release_threadsafe(self, ticket: Ticket, loop: asyncio.AbstractEventLoop) -> None:
        """Release from a worker thread (when the last piece of a request's work ends)."""
        try:
            loop.call_soon_threadsafe(ticket.release)
        except RuntimeError:  # the loop is closed: the server is gone, and its counters with it
            pass
