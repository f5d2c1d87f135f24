"""Report a service's errors to Remedy.

    import remedy_client
    remedy_client.init("http://remedy:8080", os.environ["REMEDY_CHECKOUT_TOKEN"], "checkout",
                       release=os.environ.get("GIT_SHA"))

Then `remedy_client.capture_exception(exc)`, or let the logging handler, the excepthooks
or the ASGI/WSGI middleware do it. Standard library only; Python >= 3.9.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remedy_client.asgi import RemedyASGIMiddleware
from remedy_client.client import Client
from remedy_client.handler import RemedyHandler
from remedy_client.hooks import install_excepthooks
from remedy_client.redact import redact
from remedy_client.wsgi import RemedyWSGIMiddleware

__version__ = "0.1.0"

_client: Client | None = None


def init(
    endpoint: str,
    token: str | None,
    service: str,
    *,
    release: str | None = None,
    excepthook: bool = False,
    threading_excepthook: bool = False,
    **options: Any,
) -> Client:
    """Make the process-wide client (replacing an earlier one) and return it.

    `options` are Client's: environment, tags, root, in_app_include, in_app_exclude,
    queue_size, timeout, max_retries, backoff_base, backoff_max, shutdown_timeout,
    before_send. `excepthook` / `threading_excepthook` install the uncaught-exception hooks.
    """
    global _client
    client = Client(endpoint, token, service, release=release, **options)
    previous, _client = _client, client
    if previous is not None:
        previous.close(timeout=0)
    if excepthook or threading_excepthook:
        install_excepthooks(sys_hook=excepthook, thread_hook=threading_excepthook)
    return client


def get_client() -> Client | None:
    return _client


def capture_exception(
    exc: BaseException | None = None,
    *,
    tags: Mapping[str, object] | None = None,
    code: str | None = None,
) -> bool:
    """Queue a report of `exc` (default: the exception being handled); never raises."""
    client = _client
    return client.capture_exception(exc, tags=tags, code=code) if client is not None else False


def flush(timeout: float = 2.0) -> bool:
    """Wait up to `timeout` seconds for queued reports; False if some are still pending."""
    client = _client
    return client.flush(timeout) if client is not None else True


def close(timeout: float | None = None) -> None:
    """Send what can be sent within `timeout` and stop; later reports are dropped."""
    client = _client
    if client is not None:
        client.close(timeout)


def stats() -> dict[str, int]:
    client = _client
    return client.stats() if client is not None else {}


__all__ = [
    "Client",
    "RemedyASGIMiddleware",
    "RemedyHandler",
    "RemedyWSGIMiddleware",
    "__version__",
    "capture_exception",
    "close",
    "flush",
    "get_client",
    "init",
    "install_excepthooks",
    "redact",
    "stats",
]
