"""A reentrant lock granted in the order it was asked for.

The embedded backend's engine thread holds its lock for one decode step at a time and asks for it again at once.
``threading.RLock`` makes no promise of order: the engine, already running, can win the lock back before a
woken caller is scheduled, so how many steps a caller that wants to submit work (or score, or read hidden states)
waits depends on the OS scheduler: on a quiet 2-core VM a caller asking mid-run joined within about 2 steps, but
nothing bounds it. This lock hands itself to the longest waiter on release, so a caller waits at most for the step
in progress (and the engine's next step, if the engine got in line first).

It speaks ``threading.Condition``'s protocol for reentrant locks (``_release_save``, ``_acquire_restore``,
``_is_owned``), so ``Condition(FairLock())`` works as ``Condition(RLock())`` does: ``wait()`` gives up every level
and takes them all back.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class FairLock:
    """Reentrant, first come first served. ``acquire()`` blocks (no timeout); ``acquire(False)`` never queues."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below; held for a few statements only
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[tuple[int, threading.Lock]] = deque()  # (thread id, its closed gate), oldest first

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None:  # nobody queues while the lock is free: release hands it to the next in line
                self._owner, self._depth = me, 1
                return True
            if not blocking:
                return False
            entry = (me, threading.Lock())
            entry[1].acquire()
            self._queue.append(entry)
        try:
            entry[1].acquire()  # opened by the release that makes this thread the owner
        except BaseException:  # interrupted (KeyboardInterrupt in the main thread): leave no ghost in the line
            with self._mutex:
                if entry in self._queue:
                    self._queue.remove(entry)
                    raise
            self.release()  # the lock was handed over as the interrupt arrived: pass it on
            raise
        return True

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._depth -= 1
            if not self._depth:
                self._pass_on()

    def _pass_on(self) -> None:
        """Give the lock to the first in line, or free it (caller holds ``_mutex`` and has let go of every level)."""
        if self._queue:
            self._owner, gate = self._queue.popleft()
            self._depth = 1
            gate.release()
        else:
            self._owner, self._depth = None, 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def queued(self) -> list[int]:
        """Thread ids waiting for the lock, first in line first."""
        with self._mutex:
            return [ident for ident, _ in self._queue]

    # threading.Condition's protocol for reentrant locks
    def _is_owned(self) -> bool:
        return self._owner == threading.get_ident()

    def _release_save(self) -> int:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("wait on a Condition whose FairLock this thread does not hold")
            depth = self._depth
            self._pass_on()
        return depth

    def _acquire_restore(self, depth: int) -> None:
        self.acquire()
        with self._mutex:
            self._depth = depth
