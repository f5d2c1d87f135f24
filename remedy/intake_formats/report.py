"""What every foreign format reads into: an ErrorEvent plus the choices its sender made."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from remedy.config import RemedyConfig
from remedy.intake import MAX_TAG_CHARS
from remedy.intake import _max_length as field_limit  # the schema's limits, read one way
from remedy.models import ErrorEvent, ErrorInfo, Frame, IncidentStart
from remedy.policy import is_notify_only
from remedy.service_policy import Severity


class Rejected(Exception):
    """Input the intake refuses, with the 4xx status and a message naming what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ForeignReport:
    """One error as a foreign sender reported it, read into Remedy's event."""

    event: ErrorEvent
    size: int  # bytes the sender spent on it: small ones are built inline, large ones in a pool
    severity: Severity | None = None  # the sender's level, when it says more than "error"
    fingerprint: tuple[str, ...] = ()  # a client-set fingerprint ("{{ default }}" included)
    event_id: str | None = None


_DEFAULT_PART = re.compile(r"\{\{\s*default\s*\}\}")


def client_fingerprint(values: tuple[str, ...], default: str) -> str:
    """Remedy's 16-hex fingerprint for a client-set one (Sentry's `fingerprint`), whose
    `{{ default }}` stands for Remedy's own; no values, or only `{{ default }}`, keep it."""
    parts = [default if _DEFAULT_PART.fullmatch(value.strip()) else value for value in values]
    if parts in ([], [default]):
        return default
    canonical = json.dumps(["client-fingerprint-v1", parts], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def refine_start(
    start: IncidentStart, report: ForeignReport, config: RemedyConfig
) -> IncidentStart:
    """The sender's choices over Remedy's: its fingerprint, and its level as the severity."""
    update: dict[str, Any] = {}
    if report.fingerprint:
        update["fingerprint"] = client_fingerprint(report.fingerprint, start.fingerprint)
    if report.severity is not None and start.event.error.code is None:
        update["severity"] = report.severity
        update["notify_only"] = is_notify_only(report.severity, config.policy.notify_only_below)
    return start.model_copy(update=update) if update else start


# ---------------------------------------------------------------------------- fitting values
# A foreign sender cannot be told to shorten a field, so what is too long is clipped to the
# schema's own limits (field_limit) instead of refused.


def text(value: Any, limit: int) -> str | None:
    """A string value clipped to `limit` characters; None for anything else or blank."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value[:limit]


_RELEASE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")


def release_of(value: Any) -> str | None:
    """A release Remedy can check out: as sent, or the version after `name@` (Sentry's
    `checkout@4f2a9c1`); None when neither is usable."""
    if not isinstance(value, str):
        return None
    for candidate in (value.strip(), value.rpartition("@")[2].strip()):
        if _RELEASE.match(candidate):
            return candidate
    return None


def timestamp_of(value: Any) -> datetime | None:
    """ISO 8601 text or epoch seconds, as senders write them; None when it is neither."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def tag_text(value: Any) -> str | None:
    """A tag value: strings as they are, numbers and booleans spelt out, the rest left out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)[:MAX_TAG_CHARS]
    return None


_TAGS = field_limit(ErrorEvent, "tags")
TYPE_CHARS = field_limit(ErrorInfo, "type")
MESSAGE_CHARS = field_limit(ErrorInfo, "message")
TRACEBACK_CHARS = field_limit(ErrorEvent, "traceback")
ENVIRONMENT_CHARS = field_limit(ErrorEvent, "environment")
FILE_CHARS = field_limit(Frame, "file")
FUNCTION_CHARS = field_limit(Frame, "function")


def tags_within(pairs: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    """The first tags that fit the event's budget (count, key and value sizes), first one
    winning a key; what does not fit is left out rather than refusing the report."""
    tags: dict[str, str] = {}
    for key, value in pairs:
        if len(tags) >= _TAGS:
            break
        shown = tag_text(value)
        if isinstance(key, str) and key and len(key) <= MAX_TAG_CHARS and shown:
            tags.setdefault(key, shown)
    return tags
