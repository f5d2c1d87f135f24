"""ASGI middleware: reports what escapes the application, then lets it propagate."""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable

from remedy_client.client import Client

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RemedyASGIMiddleware:
    """Starlette/FastAPI: `app.add_middleware(RemedyASGIMiddleware)`; any ASGI app: wrap it.

    Only the method and path are recorded: query strings and headers carry credentials.
    """

    def __init__(self, app: ASGIApp, client: Client | None = None) -> None:
        self.app = app
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            from remedy_client import get_client

            client = self._client or get_client()
            if client is not None:
                client.capture_exception(
                    exc,
                    tags={
                        "mechanism": "asgi",
                        "http.method": scope.get("method", "WEBSOCKET"),
                        "http.path": scope.get("path", ""),
                    },
                )
            raise
