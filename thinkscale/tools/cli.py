"""``thinkscale sandbox FILE.py``: run one file in the sandbox and print one JSON object describing the run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from thinkscale.cliutil import fail


def sandbox_command(
    file: Annotated[Path, typer.Argument(help="The Python file to run (read here, run inside the sandbox).")],
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 10.0,
    memory: Annotated[int, typer.Option(help="Address-space limit per process, in MiB (>= 256).")] = 512,
    cpu: Annotated[float | None, typer.Option(help="CPU-time limit in seconds (default: --timeout).")] = None,
    max_processes: Annotated[int, typer.Option(help="Processes and threads in the sandbox at once.")] = 16,
    max_output: Annotated[int, typer.Option(help="Bytes of stdout and of stderr kept (the rest is counted "
                                                 "and marked as cut).")] = 64 * 1024,
) -> None:
    """Run FILE.py in the sandbox (no network, no files outside a fresh working directory, rlimits) and print
    {exit_code, stdout, stderr, timed_out, killed_reason, wall_seconds, ...} as one JSON object.

    Exit status: 0 when the file ran (whatever it did; see exit_code), 1 when the sandbox is unavailable or failed,
    2 for bad arguments."""
    from thinkscale.tools.sandbox import Limits, Sandbox, SandboxError

    if not math.isfinite(timeout) or timeout <= 0:
        fail(f"--timeout must be a finite number of seconds > 0 (got {timeout})", 2)
    if cpu is not None and (not math.isfinite(cpu) or cpu <= 0):
        fail(f"--cpu must be a finite number of seconds > 0 (got {cpu})", 2)
    if memory < 256:
        fail(f"--memory must be at least 256 MiB: the interpreter with numpy and sympy maps ~140 MiB (got {memory})",
             2)
    if max_processes < 2:
        fail(f"--max-processes must be at least 2 (the supervisor and the run), got {max_processes}", 2)
    if max_output < 1:
        fail(f"--max-output must be at least 1 byte (got {max_output})", 2)
    try:
        code = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"no such file: {file}", 2)
    except UnicodeDecodeError as e:
        fail(f"{file} is not UTF-8 text ({e})", 2)
    except OSError as e:
        fail(f"cannot read {file}: {e}", 2)
    limits = Limits(timeout_seconds=timeout, cpu_seconds=cpu if cpu is not None else timeout,
                    memory_bytes=memory << 20, max_processes=max_processes, max_output_bytes=max_output)
    try:
        with Sandbox(limits, pool_size=0) as sb:
            result = sb.run(code)
    except ValueError as e:
        fail(str(e), 2)
    except SandboxError as e:
        fail(str(e), 1)
    out = result.to_dict()
    out.pop("call_seconds")
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
