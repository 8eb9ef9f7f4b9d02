"""Run untrusted (model-written) Python in a separate, locked-down process: bubblewrap namespaces, seccomp, rlimits.

How a run is contained (operating-system mechanisms only; nothing depends on the code behaving):

- **Namespaces** (``bwrap``): new mount, PID, network, IPC, UTS and cgroup namespaces. The file system is a fresh
  tmpfs with read-only binds of ``/usr``, ``/etc/ld.so.cache``, the Python installation and its virtualenv (for
  numpy and sympy), a new ``/proc`` and a minimal ``/dev`` (``null``, ``zero``, ``full``, ``random``, ``urandom``;
  no pseudo-terminals); ``/`` is remounted read-only. The only writable place is ``/sandbox``, a tmpfs limited in
  size and in inodes (``Limits.workdir_bytes``, ``Limits.workdir_inodes``: files and directories cost kernel memory
  that a size limit does not count) that is the working directory, ``HOME``, ``TMPDIR`` and ``/dev/shm``; it is
  emptied after every run and disappears with the sandbox. The supervisor mounts it itself, before it drops the
  capability to mount (bwrap's own ``--tmpfs`` takes a size but no inode limit). No user file outside it is
  visible. The network namespace has only a loopback device: no route anywhere, and the host's 127.0.0.1 is a
  different interface.
- **An unprivileged uid.** The process limit (RLIMIT_NPROC) is not enforced for uid 0, so a fork bomb started by
  root escapes it even inside a user namespace that maps root to an unprivileged-looking uid. When the host runs as
  root, bwrap sets up the namespaces without a user namespace and the supervisor drops to a uid of its own (random
  in ``uid_range``, no capabilities, no_new_privs) before any code runs; when the host is not root, bwrap puts the
  sandbox in a user namespace as the calling user (the filter below refuses further user namespaces). Either way
  the supervisor drops every capability, and refuses to serve if one is left or if its uid is 0 outside.
- **A seccomp filter** (``seccomp_program``, installed by the supervisor right after it mounted the working
  directory and before it drops privileges; x86-64 hosts only): a deny-list. System calls that make namespaces or
  mounts (``unshare``, ``setns``, ``mount``, ``pivot_root``, ``chroot``, the new mount API, ``clone`` with namespace
  flags), trace or read other processes (``ptrace``, ``process_vm_*``), reach rarely needed kernel interfaces
  (``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_setup``, keyrings, module loading, ``kexec_load``,
  ``open_by_handle_at``), watch files (``inotify``, ``fanotify``: a watch on a bound directory such as the
  virtualenv would see the host open files there), or hold memory outside every limit below (``memfd_create``,
  System V shared memory, semaphores and message queues, POSIX message queues, POSIX timers, socket buffers raised
  with ``SO_SNDBUF``/``SO_RCVBUF``) fail with EPERM; sockets other than ``AF_UNIX`` fail with EAFNOSUPPORT (there
  is no network to reach, and TCP over the sandbox's own loopback grows its buffers by itself); ``clone3`` fails with
  ENOSYS so libc falls back to ``clone``; x32 system calls fail and any other architecture's kill the process. This
  is what keeps the code from making a user namespace of its own (where it could mount a tmpfs without limits).
- **Limits per run** (``Limits``): wall clock (the supervisor kills), CPU seconds, address space, processes and
  threads (counted over the whole sandbox), file size, open files, output kept per stream (the rest is counted and
  replaced by a marker), code size; the working directory's size and inode count are sandbox-wide limits.
- **Supervisor as PID 1** (``_worker.py``): the kernel ignores signals sent to a PID namespace's init from inside it
  (no handler installed), and it is non-dumpable, so the code cannot kill, stop or ptrace it. After every run it
  SIGKILLs every other process in the namespace (background processes, fork bombs) and answers with the output
  (every step after the deadline has a time limit of its own, so the answer comes within about a second of it);
  then, off the caller's time, it checks that no process is left, empties the working directory (both within a time
  limit) and reports that; when anything is left the sandbox is discarded, by a background thread. A sandbox never
  outlives this process: the supervisor exits (killing everything inside) as soon as its input closes, even mid-run,
  and discarding a sandbox SIGKILLs the supervisor by its host PID, which takes the whole PID namespace with it.

What it does not stop: CPU contention within its limits (a run can keep ``max_processes`` processes busy until the
wall-clock limit), kernel exploits through the system calls the filter allows (off x86-64 there is no filter at
all; there, as a non-root host, bwrap's ``--disable-userns`` and ``--tmpfs`` are used instead, without an inode
limit), and reading world-readable files under the bound directories (the Python installation, ``/usr``). Memory is
limited per process, so the worst case is ``max_processes x memory_bytes`` (8 GiB by default); there is no memory
cgroup. Kernel memory outside the working directory is bounded by the process and open-file limits, for the length
of a run, not by a budget of its own: socket buffers (``net.core.wmem_default`` of queued data per socket, 208 KiB
by default, times up to ``max_processes x max_open_files`` sockets), pipe buffers (the kernel's per-user pipe quota;
one uid per sandbox in the root mode) and POSIX file locks on files in the working directory. A memory cgroup
would bound all of it, where the host offers one.

Warm pool: ``Sandbox(pool_size=k)`` keeps up to ``k`` sandboxes whose supervisor has already imported numpy and
sympy, so a run costs a fork (milliseconds) instead of an interpreter start (about half a second). ``pool_size=0``
starts a fresh sandbox for every run. A pooled sandbox serves one run at a time and is discarded whenever cleanup
could not be verified or the supervisor misbehaved.

>>> with Sandbox(pool_size=1) as sb:  # doctest: +SKIP
...     print(sb.run("print(6 * 7)").stdout)
42
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import queue
import random
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

KilledReason = Literal["timeout", "cpu", "memory", "file_size", "signal", "sandbox"]
WORKDIR = "/sandbox"
DEFAULT_PRELOAD = ("numpy", "sympy")
# The supervisor answers within about a second of the run's limit (kill + reap + drain, each bounded); the host waits
# this much on top of the limit before it gives up on the supervisor and discards the whole sandbox.
HOST_GRACE_SECONDS = 4.0
# After the answer, the supervisor empties the working directory (bounded by 2 s) and says so; a background thread
# waits this long for that before it discards the sandbox instead of reusing it.
SETTLE_SECONDS = 5.0
STARTUP_TIMEOUT_SECONDS = 120.0
TRUNCATION_MARKER = "\n[thinkscale sandbox: output truncated, {dropped} of {total} bytes not shown]"


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the code in it): it could not start, or its supervisor misbehaved."""


class SandboxUnavailable(SandboxError):
    """The isolation this module needs is not available here; no code is run without it."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Every value must be positive; ``max_processes`` counts every process and thread in the
    sandbox, its supervisor included. The address-space limit is per process and there is no memory cgroup, so the
    memory a run can touch is bounded by ``max_processes x memory_bytes`` (8 GiB with the defaults).
    ``workdir_bytes`` and ``workdir_inodes`` bound the working directory (a tmpfs) for the sandbox's life: the data
    its files hold, and how many files, directories and links it holds (each costs about 1 KiB of kernel memory,
    which the size limit does not count)."""

    timeout_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_bytes: int = 512 << 20
    max_processes: int = 16
    max_output_bytes: int = 64 * 1024
    max_file_bytes: int = 16 << 20
    max_open_files: int = 256
    max_code_bytes: int = 1 << 20
    workdir_bytes: int = 64 << 20
    workdir_inodes: int = 8192

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "cpu_seconds"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"Limits.{name} must be a finite number > 0, got {v!r}")
        for name in ("memory_bytes", "max_processes", "max_output_bytes", "max_file_bytes", "max_open_files",
                     "max_code_bytes", "workdir_bytes", "workdir_inodes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Limits.{name} must be an integer > 0, got {v!r}")
        if self.memory_bytes < 256 << 20:
            raise ValueError(f"Limits.memory_bytes must be at least 256 MiB (the interpreter with numpy and sympy "
                             f"loaded maps about 140 MiB), got {self.memory_bytes}")
        if self.max_processes < 2:
            raise ValueError(f"Limits.max_processes must be >= 2 (the supervisor and the run), got "
                             f"{self.max_processes}")
        if self.max_open_files < 16:
            raise ValueError(f"Limits.max_open_files must be >= 16, got {self.max_open_files}")
        if self.workdir_inodes < 16:
            raise ValueError(f"Limits.workdir_inodes must be >= 16, got {self.workdir_inodes}")

    def for_worker(self) -> dict[str, Any]:
        return {"timeout_seconds": float(self.timeout_seconds), "cpu_seconds": max(1, math.ceil(self.cpu_seconds)),
                "memory_bytes": self.memory_bytes, "max_processes": self.max_processes,
                "max_output_bytes": self.max_output_bytes, "max_file_bytes": self.max_file_bytes,
                "max_open_files": self.max_open_files}


@dataclass(frozen=True)
class SandboxResult:
    """What one run did. ``exit_code`` is the process's exit status, or minus the signal that ended it, or None
    when the host had to discard the sandbox before the supervisor could say. ``killed_reason`` names the limit
    that ended the run (``timeout``, ``cpu``, ``memory`` for an uncaught MemoryError, ``file_size``), ``signal``
    for any other fatal signal, ``sandbox`` when the supervisor stopped answering, else None. Output is decoded as
    UTF-8 with undecodable bytes shown as ``\\xNN`` escapes; past ``max_output_bytes`` per stream it is cut and
    the marker says how many bytes were not shown (``stdout_bytes`` is the full count)."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: KilledReason | None
    wall_seconds: float
    cpu_seconds: float | None
    stdout_bytes: int
    stderr_bytes: int
    exception: str | None = None
    call_seconds: float = 0.0  # host-side latency of the call, including queueing for a worker

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None

    @property
    def truncated(self) -> bool:
        return self.stdout_bytes > len(self.stdout.encode()) or self.stderr_bytes > len(self.stderr.encode())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _decode(hex_bytes: str, total: int) -> str:
    raw = bytes.fromhex(hex_bytes)
    text = raw.decode("utf-8", errors="backslashreplace")
    if total > len(raw):
        text += TRUNCATION_MARKER.format(dropped=total - len(raw), total=total)
    return text


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _python_binds() -> list[str]:
    """Directories the interpreter needs: the virtualenv (site-packages) and the base installation."""
    out = []
    for p in (sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix)):
        p = os.path.abspath(p)
        if p not in out and not p.startswith("/usr/"):
            out.append(p)
    return out


# Seccomp (classic BPF, x86-64 only): refuse the system calls that make namespaces or mounts, trace processes, reach
# rarely needed kernel interfaces, watch files or hold memory past the limits. Without this filter the code could
# make a user namespace of its own (and get capabilities inside it, enough to mount a tmpfs without limits).
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_DENIED_SYSCALLS = {  # x86-64 numbers
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "keyctl": 250, "add_key": 248,
    "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
    "init_module": 175, "finit_module": 313, "open_by_handle_at": 304, "fsopen": 430, "fsmount": 432,
    "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "io_uring_setup": 425,
    # file watches: a watch on a bound directory (the virtualenv) sees the host's own file activity there
    "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254, "fanotify_init": 300, "fanotify_mark": 301,
    # memory outside the address-space and working-directory limits (memfd data counts against neither; System V
    # shared memory outlives the process; timers are not bounded by any rlimit)
    "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64,
    "semop": 65, "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "timer_create": 222,
}
_SYS_CLONE, _SYS_CLONE3 = 56, 435
# Sockets: only AF_UNIX (there is no network to reach, and TCP over the sandbox's loopback grows its buffers up to
# net.ipv4.tcp_wmem/tcp_rmem by itself), and no SO_SNDBUF/SO_RCVBUF (up to twice net.core.wmem_max each), so a
# socket holds at most net.core.wmem_default of queued data.
_SYS_SOCKET, _SYS_SETSOCKOPT, _AF_UNIX, _SOL_SOCKET = 41, 54, 1, 1
_SOCKET_BUFFER_OPTS = (7, 8, 32, 33)  # SO_SNDBUF, SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE


def seccomp_program() -> bytes | None:
    """The filter as ``PR_SET_SECCOMP`` (or bwrap's ``--seccomp``) wants it (an array of ``struct sock_filter``); None
    off x86-64."""
    import platform
    import struct

    if platform.machine() != "x86_64":
        return None

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    ld_w, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    prog = [ins(ld_w, 0, 0, 4), ins(jeq, 1, 0, _AUDIT_ARCH_X86_64), ins(ret, 0, 0, _SECCOMP_RET_KILL_PROCESS),
            ins(ld_w, 0, 0, 0),
            ins(jge, 0, 1, 0x40000000), ins(ret, 0, 0, 0x00050000 | _EPERM)]  # the x32 ABI
    for nr in sorted(_DENIED_SYSCALLS.values()):
        prog += [ins(jeq, 0, 1, nr), ins(ret, 0, 0, 0x00050000 | _EPERM)]
    # clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc fall back to clone
    prog += [ins(jeq, 0, 1, _SYS_CLONE3), ins(ret, 0, 0, 0x00050000 | _ENOSYS)]
    # socket(domain, ...): AF_UNIX only. The arguments are 64-bit at offset 16 + 8 i; their low half comes first.
    prog += [ins(jeq, 0, 4, _SYS_SOCKET), ins(ld_w, 0, 0, 16), ins(jeq, 1, 0, _AF_UNIX),
             ins(ret, 0, 0, 0x00050000 | _EAFNOSUPPORT), ins(ret, 0, 0, _SECCOMP_RET_ALLOW)]
    # setsockopt(fd, SOL_SOCKET, SO_SNDBUF | SO_RCVBUF | ..., ...): refused
    n = len(_SOCKET_BUFFER_OPTS)
    prog += [ins(jeq, 0, n + 5, _SYS_SETSOCKOPT), ins(ld_w, 0, 0, 24), ins(jeq, 0, n + 2, _SOL_SOCKET),
             ins(ld_w, 0, 0, 32)]
    prog += [ins(jeq, n - 1 - i, 0, opt) for i, opt in enumerate(_SOCKET_BUFFER_OPTS[:-1])]
    prog += [ins(jeq, 0, 1, _SOCKET_BUFFER_OPTS[-1]), ins(ret, 0, 0, 0x00050000 | _EPERM),
             ins(ret, 0, 0, _SECCOMP_RET_ALLOW)]
    prog += [ins(jeq, 0, 3, _SYS_CLONE), ins(ld_w, 0, 0, 16), ins(jset, 0, 1, _CLONE_NS_FLAGS),
             ins(ret, 0, 0, 0x00050000 | _EPERM)]
    prog += [ins(ret, 0, 0, _SECCOMP_RET_ALLOW)]
    return b"".join(prog)


def bwrap_command(*, as_root: bool, workdir_bytes: int, supervisor_mounts: bool = True) -> list[str]:
    """The bubblewrap invocation (without the command). ``as_root``: the host runs as uid 0, so no user namespace is
    made and the supervisor drops to the sandbox uid itself (see the module docstring). ``supervisor_mounts``: the
    supervisor gets CAP_SYS_ADMIN to mount the working directory itself (with an inode limit) and drops it with every
    other capability before any code runs; otherwise bwrap mounts it (size only) and, as a non-root host, forbids
    further user namespaces (``--disable-userns``), which would take the capability to mount away (bwrap does that
    by nesting a second user namespace)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, and code is never run without it: install it with "
            "`apt-get install bubblewrap` (scripts/install.sh does this), or disable the code tool")
    mount_cap = ["--cap-add", "CAP_SYS_ADMIN"] if supervisor_mounts else []
    if as_root:
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup",
              "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", *mount_cap]
    else:
        ns = ["--unshare-all", "--unshare-user", "--cap-drop", "ALL", *mount_cap]
        if not supervisor_mounts:
            ns.insert(2, "--disable-userns")
    cmd = [bwrap, *ns, "--die-with-parent", "--new-session", "--as-pid-1",
           "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
           "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"]
    cmd += ["--perms", "0755", "--dir", "/etc"]
    if os.path.exists("/etc/ld.so.cache"):
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    made: set[str] = {"/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"}
    for path in _python_binds():
        for d in _ancestors(path):
            if d not in made:
                cmd += ["--perms", "0755", "--dir", d]
                made.add(d)
        cmd += ["--ro-bind", path, path]
        made.add(path)
    # /dev by hand, not bwrap's --dev: that adds /dev/pts and /dev/ptmx (a run could take every pseudo-terminal of
    # the host, 4096 by default) and, without root, a nested user namespace in which the supervisor could not mount
    cmd += ["--proc", "/proc", "--perms", "0755", "--dir", "/dev"]
    for dev in ("null", "zero", "full", "random", "urandom"):
        cmd += ["--dev-bind", f"/dev/{dev}", f"/dev/{dev}"]
    cmd += ["--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/proc/self/fd/0", "/dev/stdin",
            "--symlink", "/proc/self/fd/1", "/dev/stdout", "--symlink", "/proc/self/fd/2", "/dev/stderr",
            "--symlink", WORKDIR, "/dev/shm"]
    if supervisor_mounts:
        cmd += ["--perms", "1777", "--dir", WORKDIR]
    else:
        cmd += ["--size", str(workdir_bytes), "--perms", "1777", "--tmpfs", WORKDIR]
    if "/tmp" not in made:  # /tmp is the working directory, unless Python itself lives under /tmp (a checkout there)
        cmd += ["--symlink", WORKDIR, "/tmp"]
    cmd += ["--chdir", WORKDIR, "--remount-ro", "/", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "OPENBLAS_NUM_THREADS", "1",
            "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1", "--setenv", "HOME", WORKDIR,
            "--setenv", "TMPDIR", WORKDIR, "--setenv", "LANG", "C.UTF-8"]
    return cmd


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the PID, it names one process even if PIDs are reused."""
    f = _stat_fields(pid)
    return None if f is None else f[19]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None and f[1] == str(pid):
                out.append(int(entry))
    return out


class _Spawner:
    """Starts every bwrap of one Sandbox from one long-lived thread.

    bwrap's ``--die-with-parent`` uses PR_SET_PDEATHSIG, whose "parent" is the *thread* that forked, not the process:
    a sandbox started from a short-lived thread (a ThreadPoolExecutor worker, ``warm()``'s threads) would be killed
    when that thread ends. This thread lives as long as the Sandbox."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="sandbox-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def call(self, fn: Callable[[], Any]) -> Any:
        if not self._thread.is_alive():
            raise SandboxError("this Sandbox is closed")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut.result()

    def stop(self) -> None:
        self._q.put(None)


class _Worker:
    """One sandbox: a bwrap process whose supervisor answers JSON lines."""

    def __init__(self, limits: Limits, preload: tuple[str, ...], uid: int, spawner: _Spawner) -> None:
        as_root = os.geteuid() == 0
        prog = seccomp_program()
        # Without a filter, nothing but bwrap's --disable-userns keeps a non-root sandbox from making user namespaces
        # (in which it could mount anything), and that takes the capability to mount the working directory away.
        supervisor_mounts = prog is not None or as_root
        cfg = {"max_processes": limits.max_processes, "drop_to_uid": uid, "preload": list(preload),
               "seccomp": prog.hex() if prog is not None else None,
               "workdir": {"bytes": limits.workdir_bytes, "inodes": limits.workdir_inodes}
               if supervisor_mounts else None}
        source = (Path(__file__).with_name("_worker.py")).read_text()
        cmd = bwrap_command(as_root=as_root, workdir_bytes=limits.workdir_bytes, supervisor_mounts=supervisor_mounts)
        cmd += [sys.executable, "-I", "-c", source, json.dumps(cfg)]
        self.started = time.monotonic()
        try:
            self.proc = spawner.call(lambda: subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                close_fds=True))
        except OSError as e:
            raise SandboxUnavailable(f"could not start bwrap: {e}") from e
        assert self.proc.stdout is not None and self.proc.stdin is not None and self.proc.stderr is not None
        self.supervisor: tuple[int, str] | None = None  # host PID and start time, once it is up
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buf = b""
        self._errlog: deque[bytes] = deque(maxlen=64)
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()
        try:
            hello = self.read_reply(time.monotonic() + STARTUP_TIMEOUT_SECONDS)
        except SandboxError as e:
            self.kill()
            raise SandboxUnavailable(f"the sandbox did not start: {e}; bwrap said: {self.stderr_tail()!r}") from e
        if "fatal" in hello:
            self.kill()
            raise SandboxUnavailable(f"the sandbox refused to start: {hello['fatal']}")
        self.uid = hello["uid"]
        self.outer_uid = hello["outer_uid"]
        self.startup_seconds = time.monotonic() - self.started
        sup = _children(self.proc.pid)
        if len(sup) != 1:
            self.kill()
            raise SandboxError(f"expected one supervisor process under bwrap {self.proc.pid}, found {sup}")
        start = _start_time(sup[0])
        if start is None:
            self.kill()
            raise SandboxError(f"the sandbox supervisor (pid {sup[0]}) is gone")
        self.supervisor = (sup[0], start)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self._errlog.append(line[:2000])

    def stderr_tail(self) -> str:
        return b"".join(self._errlog).decode(errors="replace")[-2000:]

    def read_reply(self, deadline: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as sel:
            sel.register(self._out, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxError("the sandbox supervisor did not answer in time")
                if not sel.select(left):
                    continue
                try:
                    chunk = os.read(self._out, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise SandboxError(f"the sandbox exited (status {self.proc.poll()})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError as e:
            raise SandboxError(f"the sandbox supervisor sent a malformed reply: {line[:200]!r}") from e
        if not isinstance(reply, dict):
            raise SandboxError(f"the sandbox supervisor sent a malformed reply: {line[:200]!r}")
        return reply

    def request(self, req: dict[str, Any], deadline: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise SandboxError(f"the sandbox is gone: {e}") from e
        return self.read_reply(deadline)

    def kill(self, *, graceful: bool = False) -> None:
        """Stop the sandbox. ``graceful``: close the supervisor's input and give it a moment to exit (it then has
        nothing running). Then SIGKILL the supervisor by its host PID (it is the namespace's init: the kernel kills
        everything in the namespace with it) and bwrap. bwrap's own --die-with-parent cannot do this after the uid
        drop: bwrap no longer has the right to signal the supervisor."""
        if graceful and self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.supervisor is not None and _start_time(self.supervisor[0]) == self.supervisor[1]:
            try:
                os.kill(self.supervisor[0], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("sandbox bwrap process %d did not exit after SIGKILL", self.proc.pid)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        # the drain thread ends at EOF and closes nothing; closing the pipe under it could deadlock at shutdown
        self._err_thread.join(timeout=1)


class Sandbox:
    """Runs Python snippets in bubblewrap sandboxes (see the module docstring). Thread-safe.

    Args:
        limits: per-run limits (``Limits``); fixed for the life of this object.
        pool_size: sandboxes kept warm between runs, and the most runs at once (0 = a fresh sandbox per run, at
            most ``max_concurrent_cold`` at once).
        preload: modules the supervisor imports before serving (so runs import them for free).
        uid_range: the sandbox uids are drawn from this range (only when the host runs as root); a uid of its own
            per sandbox keeps one sandbox's processes from counting against another's process limit.
    """

    def __init__(self, limits: Limits | None = None, *, pool_size: int = 0,
                 preload: tuple[str, ...] = DEFAULT_PRELOAD, uid_range: tuple[int, int] = (1_900_000_000,
                                                                                         1_910_000_000),
                 max_concurrent_cold: int = 2) -> None:
        if not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"pool_size must be an integer >= 0, got {pool_size!r}")
        if max_concurrent_cold < 1:
            raise ValueError(f"max_concurrent_cold must be >= 1, got {max_concurrent_cold!r}")
        lo, hi = uid_range
        if not 0 < lo < hi <= 2**32 - 2:
            raise ValueError(f"uid_range must be (low, high) with 0 < low < high < 2**32-1, got {uid_range!r}")
        self.limits = limits if limits is not None else Limits()
        self.pool_size = pool_size
        self.preload = tuple(preload)
        self._uid_range = uid_range
        self._uids = random.SystemRandom()
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size if pool_size > 0 else max_concurrent_cold)
        self._closed = False
        self._spawner = _Spawner()
        self.workers_started = 0

    def _new_worker(self) -> _Worker:
        w = _Worker(self.limits, self.preload, self._uids.randrange(*self._uid_range), self._spawner)
        with self._lock:
            self.workers_started += 1
        return w

    def warm(self) -> None:
        """Start the pool's sandboxes now (in parallel) instead of on first use."""
        with self._lock:
            missing = self.pool_size - len(self._idle)
        if missing <= 0:
            return
        made: list[_Worker] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                w = self._new_worker()
                with self._lock:
                    made.append(w)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=start) for _ in range(missing)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self._lock:
            self._idle.extend(made)
        if errors:
            raise errors[0]

    def run(self, code: str, *, setup: tuple[str, ...] | list[str] = ()) -> SandboxResult:
        """Run ``code`` as ``__main__`` in a sandbox. ``setup``: code cells run silently first in the same
        namespace (earlier cells of the same solution; their output and errors are discarded), within the same
        limits. Raises ValueError for bad input and SandboxError when the sandbox itself fails."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        cells = list(setup)
        if any(not isinstance(c, str) for c in cells):
            raise TypeError("setup cells must be str")
        size = len(code.encode("utf-8", "surrogatepass")) + sum(len(c.encode("utf-8", "surrogatepass"))
                                                                 for c in cells)
        if size > self.limits.max_code_bytes:
            raise ValueError(f"code is {size} bytes, over the {self.limits.max_code_bytes}-byte limit "
                             "(Limits.max_code_bytes)")
        if self._closed:
            raise SandboxError("this Sandbox is closed")
        t0 = time.monotonic()
        self._slots.acquire()
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = self._new_worker()
        except BaseException:
            self._slots.release()
            raise
        # From here the slot belongs to ``worker``: whoever is done with it (a background thread once the supervisor
        # has reported its clean-up, or the kill that discards it) releases the slot.
        req = {"code": code, "setup": cells, "limits": self.limits.for_worker()}
        deadline = time.monotonic() + self.limits.timeout_seconds + HOST_GRACE_SECONDS
        try:
            reply = worker.request(req, deadline)
        except SandboxError as e:
            logger.warning("discarding a sandbox: %s", e)
            self._discard(worker)
            return SandboxResult(exit_code=None, stdout="", stderr="", timed_out=False, killed_reason="sandbox",
                                 wall_seconds=time.monotonic() - t0, cpu_seconds=None, stdout_bytes=0,
                                 stderr_bytes=0, exception=None, call_seconds=time.monotonic() - t0)
        except BaseException:  # e.g. KeyboardInterrupt mid-run: the sandbox is in an unknown state
            self._discard(worker)
            raise
        try:
            result = SandboxResult(
                exit_code=reply["exit_code"], stdout=_decode(reply["stdout"], reply["stdout_bytes"]),
                stderr=_decode(reply["stderr"], reply["stderr_bytes"]), timed_out=bool(reply["timed_out"]),
                killed_reason=reply["killed_reason"], wall_seconds=float(reply["wall_seconds"]),
                cpu_seconds=reply["cpu_seconds"], stdout_bytes=int(reply["stdout_bytes"]),
                stderr_bytes=int(reply["stderr_bytes"]), exception=reply["exception"],
                call_seconds=time.monotonic() - t0)
        except (KeyError, TypeError, ValueError) as e:
            self._discard(worker)
            raise SandboxError(f"the sandbox supervisor sent an incomplete reply ({e})") from e
        if self.pool_size > 0 and not self._closed:
            self._settle(worker)
        else:
            self._discard(worker)
        return result

    def _discard(self, worker: _Worker) -> None:
        """Kill ``worker`` off the caller's time (tearing down a namespace and its tmpfs can take a while), then
        release its slot."""
        def kill() -> None:
            try:
                worker.kill()
            finally:
                self._slots.release()

        threading.Thread(target=kill, name="sandbox-discard", daemon=True).start()

    def _settle(self, worker: _Worker) -> None:
        """Off the caller's time: wait for the supervisor to report that the working directory is empty, then put
        ``worker`` back in the pool (or discard it when it is not, or says nothing in time), then release its slot."""
        def settle() -> None:
            try:
                note = worker.read_reply(time.monotonic() + SETTLE_SECONDS)
            except SandboxError as e:
                note = {"error": str(e)}
            with self._lock:  # under the lock: close() either sees this worker in the pool or it is discarded here
                keep = note.get("cleaned") is True and not self._closed
                if keep:
                    self._idle.append(worker)
            if keep:
                self._slots.release()
                return
            if not self._closed:
                logger.warning("discarding a sandbox after its run: its working directory was not emptied (%s)", note)
            try:
                worker.kill()
            finally:
                self._slots.release()

        threading.Thread(target=settle, name="sandbox-settle", daemon=True).start()

    def close(self) -> None:
        """Kill every idle sandbox; runs in progress finish and their sandbox is then discarded."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill(graceful=True)
        self._spawner.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if sys.is_finalizing():  # the process is ending: its sandboxes see their input close and exit
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
