"""One POST to the intake, and what to do about its answer."""

from __future__ import annotations

import email.utils
import random
import time
import urllib.error
import urllib.request

SENT = "sent"
RETRY = "retry"
REJECTED = "rejected"

USER_AGENT = "remedy-client-python/0.1.0"
MAX_RETRY_AFTER_S = 60.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with jitter over its upper half, so senders spread out."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Transport:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
        }
        self._opener = urllib.request.build_opener()

    def post(self, body: bytes, timeout: float) -> tuple[str, int, float | None]:
        """(outcome, HTTP status or 0, Retry-After seconds if the intake asked for a pause)."""
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read()
                return SENT, response.status, None
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = retry_after_seconds(
                exc.headers.get("Retry-After") if exc.headers else None
            )
            exc.close()
            if status == 429 or status >= 500 or status in (408, 425):
                return RETRY, status, retry_after
            return REJECTED, status, None
        except (OSError, ValueError):  # refused, reset, timed out, DNS, malformed response
            return RETRY, 0, None
