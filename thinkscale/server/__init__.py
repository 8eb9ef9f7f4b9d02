"""The OpenAI-compatible server: ``create_app(ServeEngine(backend, "name"))``, or ``thinkscale serve``.

Needs FastAPI, uvicorn and prometheus_client (dependencies of thinkscale); importing ``thinkscale`` itself does not
import this package. The names below load on first use, so ``thinkscale.server.cli`` (the ``serve`` command the CLI
registers) can be imported without the web stack."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thinkscale.server.app import create_app
    from thinkscale.server.engine import ServeEngine, ServerLimits

__all__ = ["ServeEngine", "ServerLimits", "create_app"]

_HOMES = {"create_app": "thinkscale.server.app", "ServeEngine": "thinkscale.server.engine",
          "ServerLimits": "thinkscale.server.engine"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
