"""Optional bearer-token auth: one shared token, compared in constant time, never echoed."""

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ralm_es.config import Secret


def bearer_auth(token: Secret) -> Callable[[HTTPAuthorizationCredentials | None], Coroutine[Any, Any, None]]:
    """A dependency that refuses (401) a request without ``Authorization: Bearer <token>``."""
    expected = token.reveal().encode()
    scheme = HTTPBearer(auto_error=False, description="RALM_ES_API_TOKEN")

    # Async: FastAPI runs a plain function dependency in its thread pool, a thread hop on every request for a
    # comparison that never blocks.
    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check
