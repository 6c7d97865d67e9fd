"""ASGI middleware: one JSON access-log line per request, and a cap on the request body size."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOG = logging.getLogger("ralm_es.serve.access")


class AccessLog:
    """Logs method, path, status and duration; never headers (Authorization), query strings or bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            client = scope.get("client")
            line = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client[0] if client else None,
            }
            ACCESS_LOG.info(json.dumps(line))


class BodyLimit:
    """Refuses (413) a request body over ``max_bytes``, however it is sent.

    A declared ``Content-Length`` over the limit is refused before reading; any other body (chunked, or shorter
    than declared) is counted as it arrives and refused as soon as it crosses the limit, so at most ``max_bytes``
    are ever held. The body read is then handed to the app as one message.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            detail = f"request body of {int(length)} bytes is over this server's limit of {self.max_bytes}"
            await self.refuse(detail, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away mid-body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                detail = f"request body is over this server's limit of {self.max_bytes} bytes"
                await self.refuse(detail, scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: http.disconnect, for apps that listen for it
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def refuse(self, detail: str, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close makes the server drop the connection after the answer instead of reading (and
        # throwing away) the rest of the body.
        response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)
