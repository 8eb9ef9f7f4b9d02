"""The OpenAI-compatible server: ``create_app(ServeEngine(backend, "name"))``, or ``thinkscale serve``.

Needs FastAPI, uvicorn and prometheus_client (dependencies of thinkscale); importing ``thinkscale`` itself does not
import this package."""

from thinkscale.server.app import create_app
from thinkscale.server.engine import ServeEngine, ServerLimits

__all__ = ["ServeEngine", "ServerLimits", "create_app"]
