"""A logging handler: every record that carries an exception becomes a report."""

from __future__ import annotations

import logging

from remedy_client.client import Client


class RemedyHandler(logging.Handler):
    """Reports `log.exception(...)` and any record logged with `exc_info`.

    Records without an exception are ignored, as are the client's own. With no `client`
    the one made by `remedy_client.init` is used (looked up at each record, so the handler
    may be installed before `init`).
    """

    def __init__(self, client: Client | None = None, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self._client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not record.exc_info or record.exc_info[1] is None:
                return
            if record.name == "remedy_client" or record.name.startswith("remedy_client."):
                return
            from remedy_client import get_client

            client = self._client or get_client()
            if client is None:
                return
            tags = {
                "mechanism": "logging",
                "logger": record.name,
                "log.level": record.levelname,
                "log.message": record.getMessage(),
            }
            client.capture_exception(record.exc_info[1], tags=tags)
        except Exception:  # logging must never fail because reporting did
            pass
