"""Backends. Implementations load lazily from ``"module:attr"`` strings, so importing thinkscale never loads
llama.cpp or opens a connection; this table is the one place a backend is registered."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from thinkscale.backends.base import Backend, BackendError, BaseBackend, Capabilities, ModelInfo

BACKENDS: dict[str, str] = {
    "llamacpp": "thinkscale.backends.llamacpp:LlamaCppBackend",
    "openai": "thinkscale.backends.openai_compat:OpenAICompatBackend",
    "scripted": "thinkscale.backends.scripted:ScriptedBackend",
}


def backend_class(kind: str) -> type:
    try:
        module, attr = BACKENDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; choose one of: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), attr)


def load_backend(model: str, *, base_url: str | Sequence[str] | None = None, progress: bool = True,
                 **options: Any) -> Backend:
    """The backend for ``model``: with ``base_url``, an OpenAI-compatible server serving ``model`` (several: a pool,
    ``thinkscale.backends.pool``); otherwise the embedded llama.cpp backend on a catalog model (pulled and verified
    on first use) or a local ``.gguf`` path."""
    if base_url is not None:
        return backend_class("openai")(base_url, model, **options)  # type: ignore[no-any-return]
    from thinkscale.models import resolve

    path = resolve(model, progress=progress)
    return backend_class("llamacpp")(path, name=model, **options)  # type: ignore[no-any-return]


__all__ = ["BACKENDS", "Backend", "BackendError", "BaseBackend", "Capabilities", "ModelInfo", "backend_class",
           "load_backend"]
