"""WSGI middleware: reports what escapes the application or its response, then re-raises."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable

from remedy_client.client import Client

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RemedyWSGIMiddleware:
    """Any WSGI app: wrap it; Flask: `app.wsgi_app = RemedyWSGIMiddleware(app.wsgi_app)`.

    Only the method and path are recorded: query strings and headers carry credentials.
    """

    def __init__(self, app: WSGIApp, client: Client | None = None) -> None:
        self.app = app
        self._client = client

    def _capture(self, exc: BaseException, environ: dict[str, Any]) -> None:
        from remedy_client import get_client

        client = self._client or get_client()
        if client is not None:
            client.capture_exception(
                exc,
                tags={
                    "mechanism": "wsgi",
                    "http.method": environ.get("REQUEST_METHOD", ""),
                    "http.path": environ.get("PATH_INFO", ""),
                },
            )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            response = self.app(environ, start_response)
        except Exception as exc:
            self._capture(exc, environ)
            raise
        return _Response(response, self, environ)


class _Response:
    """The application's response iterable, watched while the server iterates and closes it."""

    def __init__(
        self, response: Iterable[bytes], middleware: RemedyWSGIMiddleware, environ: dict[str, Any]
    ) -> None:
        self._response = response
        self._middleware = middleware
        self._environ = environ

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response
        except Exception as exc:
            self._middleware._capture(exc, self._environ)
            raise

    def close(self) -> None:
        close = getattr(self._response, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception as exc:
            self._middleware._capture(exc, self._environ)
            raise
