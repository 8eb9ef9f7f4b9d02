"""Symbolic equivalence (math-verify) off the caller's process, with a hard wall-clock limit per verdict.

Why another process: math-verify's own timeouts use ``signal.alarm``, which works only in the main thread, and
sympy can sit inside one C call for minutes (``10^{10^{10}}`` builds a ten-billion-digit integer) where no
Python-level timeout can interrupt it; only killing a process stops it.

Design: one long-lived worker subprocess (this file run as a script) has imported and warmed up math-verify and
speaks JSON lines over stdin/stdout. It never compares anything itself: for each request it forks a child (~5 ms,
copy-on-write, sympy already loaded), the child compares and writes its verdict to a pipe, and the worker waits on
that pipe until the deadline, then SIGKILLs the child and answers ``timeout``. So a hostile answer costs the limit
and nothing more: the worker never has to be restarted (a restart costs ~1-2 s of imports), and back-to-back
hostile answers each return within the limit. The caller keeps its own deadline (the limit plus a grace period) as a
backstop: if the worker itself stops answering it is killed and restarted, and the verdict is ``timeout``.

The worker imports nothing from thinkscale, so it starts fast and never re-runs the caller's ``__main__`` (which
multiprocessing's spawn would). Inside it, math-verify's signal timeouts are off, stdout is reserved for the
protocol, memory is capped (RLIMIT_AS), and each child also carries a SIGALRM with the default action, which ends
it even inside a C call if the worker is gone. Waiting for the worker to start has its own, long limit and raises
``RuntimeError`` on failure: "math-verify could not start" is an installation problem, not a verdict.

Protocol, one JSON object per line: the worker first writes ``{"ready": true}`` (or ``{"fatal": "..."}``), then for
each request ``{"id": n, "gold": str, "pred": str, "timeout_s": float}`` answers ``{"id": n, "verdict":
"equivalent" | "not_equivalent" | "timeout", "error": str | null}``, and to ``{"id": n, "warmup": true}`` (a worker
started without its warm-up) ``{"id": n, "warmed": true}`` once warm. POSIX only (fork, selectors on pipes).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from typing import IO, Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1.0
# A verdict that needs longer than this is not coming; it also keeps the deadline arithmetic within floats' range.
MAX_TIMEOUT_S = 3600.0
DEFAULT_STARTUP_TIMEOUT_S = 60.0
# The caller waits this much longer than the limit before it gives up on the worker itself (fork + kill + reply
# take milliseconds; the margin absorbs scheduling on a busy machine).
BACKSTOP_GRACE_S = 0.5
# The pre-check in equivalence.py keeps real answers far below this; it bounds what may be written to the pipe.
MAX_REQUEST_CHARS = 100_000
WORKER_MEMORY_BYTES = 2 * 1024**3
# A child still running this many times past its limit kills itself (only matters once its worker has died).
_SELF_DESTRUCT_FACTOR = 10

# Representative answers compared once at start-up, so that first-use imports and caches inside sympy and
# latex2sympy (matrices, intervals, sets) are in the worker before it forks, not in each child's time limit.
_WARMUP = (("\\frac{1}{2}", "0.5"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"), ("[2,5)", "[2, 5)"),
           ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
           ("2\\sqrt{3}", "\\sqrt{12}"), ("90^\\circ", "90"), ("\\text{Evelyn}", "Evelyn"),
           ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}"), ("x \\in [-2,7]", "[-2,7]"),
           ("(0,9) \\cup (9,36)", "(0,36)"), ("x^2+2x+1", "(x+1)^2"), ("6 - 5i", "6-5i"))


class SymbolicChecker:
    """Thread-safe client of the math-verify worker: ``verdict(gold, pred)`` -> ``"equivalent"``,
    ``"not_equivalent"`` or ``"timeout"``, within ``timeout_s`` (plus a few milliseconds).

    Requests from several threads are serialised over one worker (a verdict takes milliseconds). Start-up (~1-2 s)
    happens on the first verdict or ``start()`` and is not counted in ``timeout_s``. Use as a context manager or call
    ``close()``; the worker also exits by itself when this process ends (its stdin closes).

    ``warmup``: compare a dozen representative answers before serving (about half a second), so that first-use
    imports inside sympy are not paid within each verdict's limit. Right for a long-lived checker; a one-shot check
    (``thinkscale check``) skips it and pays only its own answer's first use.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S, warmup: bool = True) -> None:
        for name, value in (("timeout_s", timeout_s), ("startup_timeout_s", startup_timeout_s)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_TIMEOUT_S:
                raise ValueError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}] (got {value!r})")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.warmup = warmup
        self.restarts = 0  # workers killed or found dead (not children: those are killed on every timeout)
        self._lock = threading.Lock()
        self._worker: _WorkerProcess | None = None
        self._worker_owner = os.getpid()
        self._next_id = 0
        self._closed = False

    def start(self) -> None:
        """Start (and wait for) the worker now instead of on the first verdict."""
        with self._lock:
            self._ready_worker()

    def warm_up(self) -> None:
        """Warm a worker started with ``warmup=False`` (and every later one) up now; a no-op when it already is.
        ``thinkscale check`` calls this before it retries a first comparison that ran out of time: on a busy
        machine sympy's first-use set-up alone can take the whole limit."""
        with self._lock:
            if self.warmup:
                return
            self.warmup = True
            worker = self._worker
            if worker is None or not worker.alive():
                return  # the next worker starts warm
            self._next_id += 1
            try:
                worker.send({"id": self._next_id, "warmup": True})
                reply = worker.receive(time.monotonic() + self.startup_timeout_s)
            except _WorkerDied:
                reply = None
            if reply is None or reply.get("id") != self._next_id:
                self._drop_worker()  # the next verdict starts a warm one

    @property
    def worker_pid(self) -> int | None:
        """Process id of the current worker (None before the first start); for diagnostics and tests."""
        worker = self._worker
        return None if worker is None else worker.proc.pid

    def verdict(self, gold: str, pred: str) -> str:
        """math-verify's verdict in either direction (``verify(gold, pred) or verify(pred, gold)``, so it does not
        depend on the order); a comparison that raises inside math-verify is ``"not_equivalent"``."""
        if len(gold) + len(pred) > MAX_REQUEST_CHARS:
            raise ValueError(f"answers longer than {MAX_REQUEST_CHARS} characters in total; pre-check them")
        with self._lock:
            if self._closed:
                raise RuntimeError("SymbolicChecker is closed")
            worker = self._ready_worker()
            self._next_id += 1
            request_id = self._next_id
            try:
                worker.send({"id": request_id, "gold": gold, "pred": pred, "timeout_s": self.timeout_s})
                reply = worker.receive(time.monotonic() + self.timeout_s + BACKSTOP_GRACE_S)
            except _WorkerDied as e:
                logger.warning("the math-verify worker died (%s); restarting it", e)
                self._drop_worker()
                return "timeout"
            if reply is None or reply.get("id") != request_id:
                logger.warning("the math-verify worker did not answer within %.2f s; restarting it",
                               self.timeout_s + BACKSTOP_GRACE_S)
                self._drop_worker()
                return "timeout"
            if reply.get("error"):
                logger.debug("math-verify on %r vs %r: %s", gold[:200], pred[:200], reply["error"])
            verdict: str = reply["verdict"]
            return verdict

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._worker is not None:
                self._worker.kill()
                self._worker = None

    def __enter__(self) -> SymbolicChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ready_worker(self) -> _WorkerProcess:
        if self._worker_owner != os.getpid():  # we are a fork of the process that started it: its pipes are not ours
            self._worker, self._worker_owner = None, os.getpid()
        if self._worker is not None and not self._worker.alive():
            self._drop_worker()
        if self._worker is None:
            self._worker = _WorkerProcess(self.timeout_s * _SELF_DESTRUCT_FACTOR, warmup=self.warmup)
        self._worker.wait_ready(self.startup_timeout_s)
        return self._worker

    def _drop_worker(self) -> None:
        if self._worker is not None:
            self.restarts += 1
            self._worker.kill()
            self._worker = None


class _WorkerDied(Exception):
    pass


class _WorkerProcess:
    """One worker subprocess and a line reader over its stdout with deadlines."""

    def __init__(self, self_destruct_s: float, *, warmup: bool = True) -> None:
        argv = [sys.executable, "-P", os.path.abspath(__file__), str(self_destruct_s)] + ([] if warmup else ["cold"])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin: IO[bytes] = self.proc.stdin
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buffer = b""
        self.ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, startup_timeout_s: float) -> None:
        if self.ready:
            return
        try:
            hello = self.receive(time.monotonic() + startup_timeout_s)
        except _WorkerDied as e:
            raise RuntimeError(f"the math-verify worker exited while starting ({e}); is math-verify installed? "
                               f"(pip install 'math-verify[antlr4_13_2]')") from None
        if hello is None:
            self.kill()
            raise RuntimeError(f"the math-verify worker did not start within {startup_timeout_s:.0f} s")
        if "fatal" in hello:
            self.kill()
            raise RuntimeError(f"the math-verify worker could not start: {hello['fatal']}")
        self.ready = True

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._stdin.write(json.dumps(message).encode() + b"\n")
            self._stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise _WorkerDied(f"cannot write to it: {e}") from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line, or None at the deadline; raises _WorkerDied at end of file."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._selector.select(remaining):
                continue
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise _WorkerDied(f"exit status {self.proc.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._selector.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


_default: SymbolicChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> SymbolicChecker:
    """The process-wide checker ``check()`` uses unless given one (started lazily, closed at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SymbolicChecker()
            atexit.register(_default.close)
        return _default


def _forget_default_after_fork() -> None:
    # A forked child must not share the parent's worker pipes, and a lock held by another thread at fork time
    # would stay held forever in the child: start over there.
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_after_fork)


# --- the worker side: runs as a script and imports no thinkscale code -----------------------------------------------


def _serve(self_destruct_s: float, warmup: bool = True) -> None:
    import resource
    import signal

    # Keep the protocol channel private: anything sympy or a library prints goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message).encode() + b"\n")
        protocol.flush()

    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > WORKER_MEMORY_BYTES:
            resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, hard))
    except (ValueError, OSError):  # some containers forbid it; the wall-clock limit still holds
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it kills or closes us
    try:
        from math_verify import parse, verify
    except Exception as e:  # ImportError, or a broken antlr runtime
        say({"fatal": f"{e.__class__.__name__}: {e}"})
        return
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # "timeout is disabled" warnings: we own the timeout

    def equivalent(gold: str, pred: str) -> bool:
        # math-verify's timeouts are off (None): they use signals, and the worker enforces the limit by SIGKILL.
        g = parse(f"${gold}$", parsing_timeout=None)  # type: ignore[arg-type]
        p = parse(f"${pred}$", parsing_timeout=None)  # type: ignore[arg-type]
        return bool(verify(g, p, timeout_seconds=None) or verify(p, g, timeout_seconds=None))

    def warm_up() -> None:
        for gold, pred in _WARMUP:  # known, cheap answers: compared here, not in a time-limited child
            equivalent(gold, pred)

    if warmup:
        warm_up()
    say({"ready": True})
    for raw in sys.stdin.buffer:
        request = json.loads(raw)
        if request.get("warmup"):
            warm_up()
            say({"id": request["id"], "warmed": True})
            continue
        verdict, error = _in_child(equivalent, request["gold"], request["pred"], float(request["timeout_s"]),
                                   self_destruct_s)
        say({"id": request["id"], "verdict": verdict, "error": error})


_killed: list[int] = []  # children SIGKILLed at their deadline, reaped later so the reply need not wait for them


def _in_child(equivalent: Any, gold: str, pred: str, timeout_s: float, self_destruct_s: float
              ) -> tuple[str, str | None]:
    import signal

    for pid in list(_killed):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            _killed.remove(pid)
    deadline = time.monotonic() + timeout_s
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compare, write one JSON verdict, exit without running any cleanup
        os.close(read_fd)
        # SIG_DFL for SIGALRM terminates the process even inside a long C call; no Python handler involved.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, self_destruct_s)
        try:
            out = {"verdict": "equivalent" if equivalent(gold, pred) else "not_equivalent", "error": None}
        except BaseException as e:  # noqa: BLE001 - failing to compare is a "no" for this pair (math-verify's rule)
            out = {"verdict": "not_equivalent", "error": f"{e.__class__.__name__}: {e}"[:300]}
        os.write(write_fd, json.dumps(out).encode())
        os._exit(0)
    os.close(write_fd)
    chunks: list[bytes] = []
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)  # tearing down its memory can take a while: do not wait for it
                _killed.append(pid)
                os.close(read_fd)
                return "timeout", f"no verdict within {timeout_s} s"
            if sel.select(remaining):
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    if not chunks:  # killed by a signal (memory limit, self-destruct) before it could answer
        return "not_equivalent", "the comparison process died without a verdict"
    out = json.loads(b"".join(chunks))
    return out["verdict"], out["error"]


if __name__ == "__main__":
    _serve(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0, warmup="cold" not in sys.argv[2:])
