"""FairLock: first come first served, reentrant, a drop-in for RLock under threading.Condition."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from thinkscale.backends.fair_lock import FairLock


def _wait_for(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.001)


def test_waiters_get_the_lock_in_the_order_they_asked_and_before_the_releaser_asks_again():
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        _wait_for(lambda n=i + 1: len(lock.queued()) == n)  # queued one by one: i asked before i + 1
        threads.append(t)
    assert lock.queued() == [t.ident for t in threads]
    lock.release()
    assert not lock.acquire(blocking=False)  # handed to the first in line, not free for the releaser to grab back
    lock.acquire()  # so the releaser queues behind all five
    assert order == [0, 1, 2, 3, 4]
    lock.release()
    for t in threads:
        t.join(10)


def test_reentrant_and_only_the_owner_releases():
    lock = FairLock()
    with lock:
        with lock:
            assert lock._is_owned()
        assert lock._is_owned()
        other: list[object] = []

        def elsewhere() -> None:
            other.append(lock.acquire(blocking=False))
            try:
                lock.release()
            except RuntimeError as e:
                other.append(str(e))

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join(10)
        assert other == [False, "release of a FairLock this thread does not hold"]
        assert lock.queued() == []  # a non-blocking miss does not queue
    assert not lock._is_owned()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_condition_wait_gives_up_every_level_and_takes_them_back():
    cv = threading.Condition(FairLock())
    ready = threading.Event()
    woke: list[bool] = []

    def waiter() -> None:
        with cv:
            with cv:  # depth 2
                ready.set()
                woke.append(cv.wait(10))
                assert cv._is_owned()
            assert cv._is_owned()  # still held at depth 1: wait restored both levels
        woke.append(not cv._is_owned())

    t = threading.Thread(target=waiter)
    t.start()
    ready.wait(10)
    with cv:  # obtainable only because wait() released both levels
        cv.notify_all()
    t.join(10)
    assert woke == [True, True]


def test_an_interrupted_waiter_leaves_the_line():
    lock = FairLock()
    holding, done = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            holding.set()
            _wait_for(lambda: lock.queued() != [])  # the main thread is in line
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # KeyboardInterrupt while it waits
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    holding.wait(10)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert lock.queued() == []
    assert not lock._is_owned()
    done.set()
    t.join(10)
    assert lock.acquire(blocking=False)  # free: the holder's release handed it to no ghost
    lock.release()
