"""``thinkscale view [RUN_DIR | TRACE.json]``: serve the viewer page on this machine (registered in thinkscale/cli.py).

FastAPI and uvicorn are imported inside the command, so importing this module (as ``thinkscale.cli`` does) never loads
the web stack. The folder or file is read before anything listens, so a missing or corrupt one is a one-line error
(exit 2). The viewer binds to loopback unless told otherwise; it only reads the run.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from thinkscale.cliutil import fail

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def view_command(
    target: Annotated[Path | None, typer.Argument(
        metavar="[RUN_DIR | TRACE.json]",
        help="A run folder (`thinkscale eval --out DIR`) or a trace file (`thinkscale solve --trace FILE`, or "
             "`solve --json` output). Leave it out to use the solve form only.")] = None,
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind. The default is reachable from this machine only.")]
    = "127.0.0.1",
    model: Annotated[str | None, typer.Option(
        help="Load this model to solve problems from the page (catalog name or .gguf path; with --backend "
             "openai:URL the server's model name). Without it the page only shows what was loaded.")] = None,
    backend: Annotated[str, typer.Option(
        help="How --model is run: llamacpp (embedded), openai:URL, or scripted:FILE (the test fake; needs no "
             "--model).")] = "llamacpp",
    max_tokens: Annotated[int, typer.Option(
        help="The most completion tokens one solve from the page may spend (its default budget).")] = 16384,
) -> None:
    """Look at what a strategy did: a run's problems, each job's candidates, vote and search tree, and solves from
    the page streamed as they run."""
    from thinkscale.viewer.sources import ViewerError, load_source

    try:
        source = load_source(target)
    except ViewerError as e:
        fail(str(e))
    if max_tokens < 1:
        fail(f"--max-tokens must be at least 1 (got {max_tokens})")
    model_backend = solve_backend(model, backend)
    sock = _listen(host, port)
    _serve(source, model_backend, sock, host, max_tokens)


def solve_backend(model: str | None, spec: str) -> object | None:
    """The backend the page solves with (None: solving off); loading errors are one line (exit 1, bad spec 2)."""
    kind, _, arg = spec.partition(":")
    if kind not in ("llamacpp", "openai", "scripted") or (kind != "llamacpp" and not arg):
        fail(f"--backend must be llamacpp, openai:URL or scripted:FILE, got {spec!r}")
    if kind == "scripted":
        from thinkscale.eval.fake import scripted_backend

        try:
            return scripted_backend(arg)
        except ValueError as e:
            fail(str(e))
    if model is None:
        if kind == "openai":
            fail("--backend openai:URL needs --model (the server's model name)")
        return None
    from thinkscale.backends.base import BackendError
    from thinkscale.eval.runner import default_backend_factory
    from thinkscale.models import ModelError

    try:
        return default_backend_factory(spec)(model)
    except (ModelError, BackendError, OSError) as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e))


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts so that a taken port is a one-line error."""
    if not 0 <= port <= 65535:
        fail(f"--port must be 0..65535 (got {port})")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        fail(f"--host {host!r}: {e.strerror or e}")
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(64)
    except OSError as e:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    return sock


def _serve(source: object, backend: object | None, sock: socket.socket, host: str, max_tokens: int) -> None:
    import uvicorn

    from thinkscale.viewer.app import LOOPBACK_HOSTS, create_viewer_app
    from thinkscale.viewer.live import SolveLimits

    loopback = host in LOOPBACK
    if not loopback:
        typer.echo(f"warning: binding {host}: anyone who can reach this port can read the run"
                   + (" and use the model" if backend is not None else ""), err=True)
    app = create_viewer_app(source, backend=backend,  # type: ignore[arg-type]
                            allowed_hosts=LOOPBACK_HOSTS if loopback else None,
                            limits=SolveLimits(max_completion_tokens=max_tokens))
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    typer.echo(f"thinkscale viewer on http://{shown}:{bound[1]}/  (Ctrl-C stops it)", err=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
        close = getattr(backend, "close", None)
        if close is not None:
            close()
