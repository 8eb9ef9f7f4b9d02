"""``thinkscale serve``: load a model and serve the OpenAI-compatible API (registered in thinkscale/cli.py).

Imports of FastAPI, uvicorn and llama.cpp happen inside the command, so ``thinkscale --help`` stays fast and
``thinkscale solve`` never loads the web stack. This module imports nothing from ``thinkscale.cli``: the command
line depends on the server, not the other way round."""

from __future__ import annotations

import enum
import errno
import logging
import math
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from thinkscale.cliutil import fail
from thinkscale.prompts import MATH_SYSTEM

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class EffortLevel(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class LogLevel(enum.StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def bind(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before the model loads, so a bad --host or a port in use fails in a
    second instead of after the load; uvicorn then serves on it. ``host`` as uvicorn takes it: an IPv6 address when
    it has a ':', else an IPv4 address or a name. Raises ValueError with the reason in words."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (socket.gaierror, UnicodeError, TypeError, ValueError) as e:  # unresolvable; not ASCII or IDNA; a NUL
        sock.close()
        why = e.strerror if isinstance(e, socket.gaierror) else "not a host name"
        raise ValueError(f"--host {host!r} is not an address or a name this machine can resolve ({why}); "
                         "give an interface address such as 127.0.0.1 or 0.0.0.0") from None
    except OSError as e:
        sock.close()
        why = {errno.EADDRINUSE: f"port {port} is in use: stop what listens there or give another --port",
               errno.EACCES: f"port {port} needs privileges (ports below 1024 are for root): give --port 1024 or "
                             "above",
               errno.EADDRNOTAVAIL: f"{host} is not an address of this machine: give one of its interfaces (or "
                                    "0.0.0.0 for all)"}.get(e.errno or 0, e.strerror or str(e))
        raise ValueError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    model: Annotated[str, typer.Option(help="Catalog name (see `thinkscale models list`) or a .gguf path.")]
    = "qwen2.5-coder-0.5b",
    host: Annotated[str, typer.Option(help="Interface to bind. The default is reachable from this machine only.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (1-65535).")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="THINKSCALE_API_KEY", show_envvar=True,
                                                help="Require 'Authorization: Bearer KEY' on /v1 and /metrics.")]
    = None,
    served_model_name: Annotated[str | None, typer.Option(help="The model id clients send (default: the catalog "
                                                          "name, or the .gguf file's stem).")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Requests running at once; their backend "
                                                 "calls decode together in one batch.")] = 8,
    max_queue: Annotated[int, typer.Option(min=0, max=1_000_000, help="Requests waiting for a slot; beyond that, "
                                           "429 + Retry-After.")] = 64,
    max_tokens: Annotated[int, typer.Option(min=1, help="Completion-token budget per request (per choice), hidden "
                                            "reasoning included.")] = 16384,
    default_max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per chain of thought when a request sets "
                                                    "no max_tokens.")] = 512,
    default_effort: Annotated[EffortLevel, typer.Option(help="reasoning_effort for requests that name no "
                                                        "strategy.")] = EffortLevel.medium,
    system_prompt: Annotated[str | None, typer.Option(help="Prepended when a request has no system message "
                                                      "(default: ask for the final answer as \\boxed{}, so it can "
                                                      "be extracted; '' sends messages unchanged).")] = None,
    n_ctx: Annotated[int, typer.Option(min=0, help="llama.cpp context (KV cells shared by all running sequences; "
                                       "0: the model's own).")] = 16384,
    max_active_sequences: Annotated[int, typer.Option(
        min=1, help="Samples the embedded backend decodes together per step; the rest wait their turn. Past the "
                    "batch size a CPU decodes fastest (8-16 on 2 cores, see bench/server.py and the README), more "
                    "only adds attention over the shared KV cache. Raise it on machines with more cores.")] = 16,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request's work is cancelled (504).")]
    = 600.0,
    strategy_knobs: Annotated[list[str] | None, typer.Option(
        "--strategy-knobs", metavar="NAME:KNOB=VALUE,...",
        help="Knob settings for every request of strategy NAME (repeatable, one per strategy), e.g. "
             "'auto:policy=policy.json' or 'best-of-n:verifier=prm,verifier_path=prm.json'. The only way to set the "
             "knobs that name server files or resources (verifier_path, policy, the code sandbox's limits); "
             "requests may override the others.")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn log level.")] = LogLevel.info,
) -> None:
    """Serve MODEL over an OpenAI-compatible API: the model thinks privately, the answer is the content."""
    from thinkscale.server.catalogue import StrategyCatalogue
    from thinkscale.server.engine import ServerLimits

    api_key = api_key or None  # THINKSCALE_API_KEY="" means no key, not the empty key
    try:
        StrategyCatalogue(strategy_knobs=strategy_knobs or ())  # a bad setting fails before the model loads
        if not math.isfinite(request_timeout):
            raise ValueError(f"--request-timeout must be a finite number of seconds > 0 (got {request_timeout})")
        limits = ServerLimits(max_concurrency=max_concurrency, max_queue=max_queue, max_tokens_per_request=max_tokens,
                              default_max_tokens=min(default_max_tokens, max_tokens),
                              request_timeout_s=request_timeout)
        name = served_model_name if served_model_name is not None else \
            (Path(model).stem if model.endswith(".gguf") else model)
        if not name or ":" in name:
            raise ValueError(f"the served model name {name!r} (--served-model-name, default from --model) must be "
                             "non-empty without ':', which separates the model from a strategy in a model id")
        sock = bind(host, port)  # a port in use or a bad host fails now, not after the model has loaded
    except ValueError as e:
        fail(str(e))
    try:
        _serve(model, name, sock, limits, api_key=api_key, host=host, n_ctx=n_ctx,
               max_active_sequences=max_active_sequences, default_effort=default_effort.value,
               system_prompt=MATH_SYSTEM if system_prompt is None else system_prompt,
               strategy_knobs=strategy_knobs or (), log_level=log_level.value)
    finally:
        sock.close()


def _serve(model: str, name: str, sock: socket.socket, limits: Any, *, api_key: str | None, host: str, n_ctx: int,
           max_active_sequences: int, default_effort: str, system_prompt: str, strategy_knobs: Any,
           log_level: str) -> None:
    """Load the model and serve on ``sock`` until interrupted (the options are checked by ``serve``)."""
    from thinkscale.backends import load_backend
    from thinkscale.backends.base import BackendError
    from thinkscale.models import ModelError
    from thinkscale.server.app import create_app
    from thinkscale.server.engine import ServeEngine
    from thinkscale.server.runner import serve_forever

    if host not in LOOPBACK and not api_key:
        typer.echo(f"warning: binding {host} without --api-key: anyone who can reach this port can use the model",
                   err=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # enough sequences for every running request's samples; more wait inside the backend, they are not lost
        n_seq_max = min(256, max(64, 16 * limits.max_concurrency, max_active_sequences + 1))
        options: dict[str, Any] = {"n_ctx": n_ctx, "n_seq_max": n_seq_max,
                                   "max_active_sequences": max_active_sequences}
        backend = load_backend(model, **options)
    except (ModelError, BackendError, ValueError) as e:
        fail(str(e), 1)
    try:
        engine = ServeEngine(backend, name, default_effort=default_effort, system_prompt=system_prompt,
                             strategy_knobs=strategy_knobs)
    except ValueError as e:
        backend.close()
        fail(str(e))
    try:
        serve_forever(create_app(engine, api_key=api_key, limits=limits), host=host, log_level=log_level, sock=sock)
    finally:
        engine.close()
        backend.close()
