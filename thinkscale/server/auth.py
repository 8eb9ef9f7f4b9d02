"""The API key check of /v1 and /metrics (a route dependency; /health stays open for liveness probes)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from thinkscale.server.errors import ApiError
from thinkscale.server.state import State

# The security scheme the OpenAPI document declares. It holds no state: it only reads the Authorization header.
bearer = HTTPBearer(auto_error=False, description="The server's --api-key (only when one is set)")


def check_key(state: State, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless the request carries the server's API key (when it has one)."""
    if state.api_key is None:
        return
    given = creds.credentials.encode() if creds is not None else b""
    if not hmac.compare_digest(given, state.api_key.encode()):
        raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
