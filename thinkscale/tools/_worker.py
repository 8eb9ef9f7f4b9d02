"""The supervisor that runs inside one bubblewrap sandbox (standard library only; passed to ``python -I -c``).

It runs as PID 1 of the sandbox's PID namespace. The kernel drops every signal sent to a namespace's init from
inside that namespace unless init installed a handler for it, so code running in the sandbox cannot kill or stop
its supervisor (SIGINT is reset to the default action below for that reason). It is also made non-dumpable, so the
code (same uid) can neither ptrace it nor open ``/proc/1/fd`` or ``/proc/1/mem``.

Start-up (config JSON in argv[1]): move the protocol off fds 0/1; mount the working directory, a tmpfs with a size
and an inode limit (``size=``, ``nr_inodes=``: without the inode limit, empty directories and files cost kernel
memory that no size limit counts), while the capability to mount is still held; install the seccomp filter the host
passed (``PR_SET_NO_NEW_PRIVS`` first; from here on ``mount`` itself is refused); when started as root (no user
namespace), set the hard process limit and drop to the sandbox uid/gid for good (this is what makes RLIMIT_NPROC
apply: the kernel does not enforce it for uid 0); drop every capability (``capset``; in a user namespace there is no
uid change to do it); refuse to serve if any capability is left, if the filter is not in place, or if the uid is
still 0 in the initial user namespace; import the preload modules; write ``{"ready": ...}``. No code from the host's
user runs before all of this is done.

Per request (one JSON line ``{"code", "setup", "limits"}``): fork a child that applies the per-run rlimits and runs
the code in a fresh ``__main__``, with stdin from /dev/null and stdout/stderr on pipes; read those pipes (keeping at
most ``max_output_bytes`` of each) until the child exits or the wall-clock deadline passes; then SIGKILL every other
process in the namespace (background processes, fork bombs), reap them, read the pipes to their end, and answer one
JSON line: every step after the deadline has its own short time limit, so the answer comes well within a second of
it. Only then make sure every other process is gone and empty the working directory (together bounded by
``CLEANUP_SECONDS``), and write a second line, ``{"cleaned": bool, "error": str | null}``; the host reads it before
it gives this sandbox another run. If anything is left, ``"cleaned"`` is false and the host discards this sandbox
(tearing down the namespace kills whatever is left and frees the tmpfs).
"""

import json
import os
import selectors
import signal
import sys
import time

WORKDIR = "/sandbox"
CHILD_ENV = {"PATH": "/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8",
             "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONIOENCODING": "utf-8"}
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
MS_NOSUID, MS_NODEV = 2, 4
# After the deadline, each step has its own bound; together they keep the answer within about a second of it.
REAP_SECONDS = 0.5  # a SIGKILLed process ends in milliseconds unless the kernel is stuck
KILL_ALL_SECONDS = 0.5
FINAL_DRAIN_SECONDS = 0.25
DRAIN_AFTER_EXIT_SECONDS = 0.05
# Killing what is left and emptying the working directory happen after the answer; past this the sandbox is discarded
# instead.
CLEANUP_SECONDS = 3.0


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _prctl(option, value, arg3=0):
    import ctypes

    if _libc().prctl(option, value, arg3, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _prctl_dumpable(value):
    _prctl(PR_SET_DUMPABLE, value)


def _mount_workdir(size_bytes, inodes):
    """A fresh tmpfs over the working directory with a size and an inode limit (needs CAP_SYS_ADMIN over this mount
    namespace, which the supervisor drops right after)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    opts = f"size={int(size_bytes)},nr_inodes={int(inodes)},mode=1777".encode()
    if libc.mount(b"tmpfs", WORKDIR.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting the working directory (tmpfs {opts.decode()}) failed: {os.strerror(err)}")
    st = os.statvfs(WORKDIR)
    if st.f_files != int(inodes):
        raise RuntimeError(f"the working directory has {st.f_files} inodes, not the {inodes} asked for")


def _install_seccomp(program):
    """Install the host's classic-BPF filter on this process; every process forked later inherits it."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def _drop_capabilities():
    """Empty the effective, permitted, inheritable and ambient sets (the bounding set no longer matters: no exec can
    raise them again under no_new_privs as a non-root uid)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = _libc()
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _status_fields():
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _outer_uid(uid):
    """The uid in the initial user namespace that ``uid`` (ours) maps to."""
    with open("/proc/self/uid_map") as f:
        for line in f:
            inner, outer, count = (int(x) for x in line.split())
            if inner <= uid < inner + count:
                return outer + (uid - inner)
    return None


def _send(out, obj):
    os.write(out, (json.dumps(obj) + "\n").encode())


def _read_line(fd, buf):
    while b"\n" not in buf:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None, buf
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest


def _other_pids():
    return [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]


def _kill_all(deadline):
    """SIGKILL every process in the namespace but us, reap them; True when none is left."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not _other_pids():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def _empty_workdir(deadline):
    """Remove everything the run left in the working directory, by the deadline: None when it is empty, else what
    stopped it.

    Iterative and relative to directory descriptors, so neither nesting depth nor path length stops it; directories
    the code made unreadable are opened up first (they belong to the sandbox uid)."""
    import stat

    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    opened = []
    try:
        top = os.open(WORKDIR, flags)
        opened.append(top)
        todo = [(top, None, os.listdir(top))]  # (directory fd, its name in its parent, entries still to remove)
        while todo:
            if time.monotonic() > deadline:
                return "not empty by the deadline"
            fd, name, entries = todo[-1]
            if not entries:
                todo.pop()
                if todo:
                    os.rmdir(name, dir_fd=todo[-1][0])
                continue
            entry = entries.pop()
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if st.st_mode & 0o700 != 0o700:
                    os.chmod(entry, 0o700, dir_fd=fd)
                sub = os.open(entry, flags, dir_fd=fd)
                opened.append(sub)
                todo.append((sub, entry, os.listdir(sub)))
            else:
                os.unlink(entry, dir_fd=fd)
        left = os.listdir(WORKDIR)
        return f"still there: {left[:5]}" if left else None
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        for fd in opened:
            os.close(fd)


def _child(req, out_w, err_w, status_w):
    """In the forked child: limits, clean fds and environment, then run the code. Never returns."""
    import io
    import linecache
    import resource
    import traceback
    import types

    status = 1
    try:
        lim = req["limits"]
        os.setsid()
        _prctl_dumpable(1)  # so the code can read its own /proc/self/fd (it cannot reach PID 1 either way)
        cpu = int(lim["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the limit, SIGKILL one second later
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_bytes"], lim["max_file_bytes"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_processes"], lim["max_processes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["max_open_files"], lim["max_open_files"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Python ignores SIGXFSZ and SIGPIPE; restore the defaults so hitting the file-size limit ends the run
        for sig in (signal.SIGXFSZ, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(status_w, 3)
        os.closerange(4, 1 << 16)
        os.chdir(WORKDIR)
        os.environ.clear()
        os.environ.update(CHILD_ENV)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "rb", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "wb", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", write_through=True)
        sys.argv = ["snippet.py"]
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        import contextlib

        for i, cell in enumerate(req["setup"]):
            # Earlier cells of the same solution, re-run silently so their variables exist; their output was
            # already shown and their errors already reported when they ran on their own.
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    exec(compile(cell, f"<cell {i}>", "exec"), main.__dict__)
            except BaseException:  # noqa: BLE001 - see above
                pass
        code = req["code"]
        linecache.cache["snippet.py"] = (len(code), None, code.splitlines(True), "snippet.py")
        try:
            exec(compile(code, "snippet.py", "exec"), main.__dict__)
            status = 0
        except SystemExit as e:
            if e.code is None:
                status = 0
            elif isinstance(e.code, int):
                status = e.code & 0xFF
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except BaseException as e:  # noqa: BLE001 - reported like the interpreter does
            status = 1
            try:
                os.write(3, type(e).__name__.encode()[:100])
            except OSError:
                pass
            try:
                # skip this frame: the traceback starts at the snippet, as the interpreter's would
                traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
            except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
                os.write(2, f"{type(e).__name__}\n".encode())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
    finally:
        os._exit(status)


class HostGone(Exception):
    """The host closed our input: nobody will read the answer; stop everything."""


def _reap(pid, pidfd, deadline):
    """``(wait status, rusage)`` of the run's process once it has ended, or None if it has not by the deadline."""
    with selectors.DefaultSelector() as sel:
        sel.register(pidfd, selectors.EVENT_READ)
        while True:
            got, wstatus, ru = os.wait4(pid, os.WNOHANG)
            if got == pid:
                return wstatus, ru
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sel.select(min(left, 0.05))


def _run(req, proto_in):
    lim = req["limits"]
    cap = lim["max_output_bytes"]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    status_r, status_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req, out_w, err_w, status_w)
    for fd in (out_w, err_w, status_w):
        os.close(fd)
    deadline = started + lim["timeout_seconds"]
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    kept = {out_r: bytearray(), err_r: bytearray(), status_r: bytearray()}
    total = {out_r: 0, err_r: 0, status_r: 0}
    for fd in kept:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    # The host never writes during a run, so input means it closed its end (it died or gave up on this sandbox):
    # the parent-death signal cannot reach us after the uid drop, this is how we learn it.
    sel.register(proto_in, selectors.EVENT_READ)

    def pump(until, stop_on_exit):
        while len(sel.get_map()) > 1:  # proto_in stays registered
            left = until - time.monotonic()
            if left <= 0:
                return False
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == proto_in:
                    raise HostGone
                if fd == pidfd:
                    sel.unregister(pidfd)
                    if stop_on_exit:
                        return True
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    sel.unregister(fd)
                    continue
                total[fd] += len(chunk)
                room = (cap if fd != status_r else 200) - len(kept[fd])
                if room > 0:
                    kept[fd] += chunk[:room]
        return True

    exited = pump(deadline, stop_on_exit=True)
    if not exited and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
        # It ended on its own (e.g. SIGXCPU when --cpu equals --timeout) as the wall clock ran out: its own
        # cause is the one to report, not a timeout we did not enforce.
        exited = True
    timed_out = not exited
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    reaped = _reap(pid, pidfd, time.monotonic() + REAP_SECONDS)
    wall = time.monotonic() - started
    if exited:
        # The code's own output may still sit in the pipes; background processes may keep writing: bounded drain.
        pump(time.monotonic() + DRAIN_AFTER_EXIT_SECONDS, stop_on_exit=False)
    _kill_all(time.monotonic() + KILL_ALL_SECONDS)  # what survives this is killed again after the answer
    # Every writer is dead now (or dying): read what is left, up to EOF or a short limit.
    pump(time.monotonic() + FINAL_DRAIN_SECONDS, stop_on_exit=False)
    for fd in list(kept) + [pidfd]:
        os.close(fd)
    sel.close()
    wstatus, ru = reaped if reaped is not None else (signal.SIGKILL, None)  # not reaped: it had been SIGKILLed
    exit_code = None
    signal_number = None
    if os.WIFEXITED(wstatus):
        exit_code = os.WEXITSTATUS(wstatus)
    elif os.WIFSIGNALED(wstatus):
        signal_number = os.WTERMSIG(wstatus)
        exit_code = -signal_number
    cpu = ru.ru_utime + ru.ru_stime if ru is not None else None
    exc = bytes(kept[status_r]).decode("ascii", "replace")
    if timed_out:
        killed = "timeout"
    elif signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and cpu is not None
                                             and cpu >= int(lim["cpu_seconds"])):
        killed = "cpu"
    elif signal_number == signal.SIGXFSZ:
        killed = "file_size"
    elif exc == "MemoryError":
        killed = "memory"
    elif signal_number is not None:
        killed = "signal"
    else:
        killed = None
    return {"exit_code": exit_code, "signal": signal_number, "timed_out": timed_out, "killed_reason": killed,
            "wall_seconds": wall, "cpu_seconds": cpu, "exception": exc or None,
            "stdout": bytes(kept[out_r]).hex(), "stdout_bytes": total[out_r],
            "stderr": bytes(kept[err_r]).hex(), "stderr_bytes": total[err_r]}


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 with no handler: signals from inside are dropped
    cfg = json.loads(sys.argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        import resource

        if cfg.get("workdir") is not None:
            _mount_workdir(cfg["workdir"]["bytes"], cfg["workdir"]["inodes"])
        if cfg.get("seccomp"):
            _install_seccomp(bytes.fromhex(cfg["seccomp"]))
        nproc = cfg["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.getuid() == 0:
            uid = cfg["drop_to_uid"]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _drop_capabilities()
        _prctl_dumpable(0)
        status = _status_fields()
        caps = {k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")}
        if any(v is None or int(v, 16) != 0 for v in caps.values()):
            raise RuntimeError(f"capabilities left after dropping them: {caps}")
        if cfg.get("seccomp") and status.get("Seccomp") != "2":
            raise RuntimeError(f"the seccomp filter is not in place (Seccomp: {status.get('Seccomp')})")
        outer = _outer_uid(os.getuid())
        if outer is None or outer == 0 or os.geteuid() == 0:
            raise RuntimeError(f"sandbox uid {os.getuid()} maps to uid {outer} outside: refusing to run code as "
                               "root, where the process limit is not enforced")
        os.chdir(WORKDIR)
        t0 = time.monotonic()
        for mod in cfg["preload"]:
            __import__(mod)
        preload_seconds = time.monotonic() - t0
    except BaseException as e:  # noqa: BLE001 - reported to the host, which refuses to use this sandbox
        _send(proto_out, {"fatal": f"{type(e).__name__}: {e}"})
        return
    _send(proto_out, {"ready": True, "uid": os.getuid(), "outer_uid": outer, "preload_seconds": preload_seconds})
    buf = b""
    while True:
        line, buf = _read_line(proto_in, buf)
        if line is None:
            return
        req = json.loads(line)
        try:
            reply = _run(req, proto_in)
        except HostGone:
            _kill_all(time.monotonic() + CLEANUP_SECONDS)
            return
        _send(proto_out, reply)
        # After the answer, so that the caller never waits for it: the host reads this line before the next run.
        cleanup_deadline = time.monotonic() + CLEANUP_SECONDS
        if _kill_all(cleanup_deadline):
            error = _empty_workdir(cleanup_deadline)
        else:
            error = f"processes still running: {_other_pids()[:5]}"
        _send(proto_out, {"cleaned": error is None, "error": error})


main()
