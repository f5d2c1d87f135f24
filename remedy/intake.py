"""From an error report to the input of an incident: the budget a report must fit before it
is parsed, then redact, parse, fingerprint, route.

Pure: the HTTP intake, the log watcher and the benchmarks all call it, and it is tested
without a server.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from annotated_types import MaxLen
from pydantic import BaseModel

from remedy.config import RemedyConfig
from remedy.fingerprint import fingerprint
from remedy.models import ErrorEvent, ErrorInfo, IncidentStart
from remedy.policy import is_notify_only, severity_for
from remedy.redact import redact_event
from remedy.stacktrace import mark_in_app, parse_traceback

# Workflow history carries the event, so it is kept well under Temporal's payload limits:
# the innermost frames and both ends of the traceback text are what diagnosis uses.
MAX_FRAMES = 100
MAX_TRACEBACK_CHARS = 32_000
# The schema bounds the number of tags, not their text; the Python client sends up to 1,000.
MAX_TAG_CHARS = 1_024

# Opening brackets step one level in, closing ones one out; every other byte is dropped.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep, found before parsing
    it: json.loads recurses once per level, and a 2 KB body can nest 1,000 deep.

    Bytes operations only, no Python loop over the body: escapes and strings removed, then the
    deepest point of the running bracket count, which is as deep as a parser would go (text
    that is not JSON included; the parser then says what is wrong with it).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Pairs of backslashes first, so that in `\\"` the quote still ends the string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return bool(steps) and int(np.frombuffer(steps, np.int8).cumsum().max()) > limit


# How JSON spells a UTF-16 surrogate; only a pair of them is a character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_lone_surrogate(body: bytes, data: Any) -> bool:
    """Whether parsed JSON holds half a surrogate pair ("\\ud800"): valid JSON, but not
    Unicode text, so nothing downstream could encode it. The exact check runs only when the
    text spells a surrogate at all (emoji do, in pairs)."""
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _max_length(model: type[BaseModel], field: str) -> int:
    """The schema's own limit, so the budget and the model cannot disagree."""
    for rule in model.model_fields[field].metadata:
        if isinstance(rule, MaxLen):
            return rule.max_length
    raise LookupError(f"{model.__name__}.{field} has no max_length")


_TRACEBACK_CHARS = _max_length(ErrorEvent, "traceback")
_MESSAGE_CHARS = _max_length(ErrorInfo, "message")
_FRAMES = _max_length(ErrorEvent, "frames")
_TAGS = _max_length(ErrorEvent, "tags")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | list | dict) else 0


def oversized_field(data: dict[str, Any]) -> str | None:
    """The first field of a parsed report over its size budget, as a message naming it; None
    when all fit. Checked before the schema and before any redaction or parsing, which cost
    time in proportion to these sizes. Wrong types are left to the schema to name."""
    error = data.get("error")
    tags = data.get("tags")
    counted = [
        ("traceback", _sized(data.get("traceback")), _TRACEBACK_CHARS, "characters"),
        ("error.message", _sized(error.get("message")) if isinstance(error, dict) else 0,
         _MESSAGE_CHARS, "characters"),
        ("frames", _sized(data.get("frames")), _FRAMES, "frames"),
        ("tags", _sized(tags), _TAGS, "tags"),
    ]  # fmt: skip
    for field, size, limit, unit in counted:
        if size > limit:
            return f"{field}: {size:,} {unit}, over the limit of {limit:,}"
    if isinstance(tags, dict):
        for key, value in tags.items():
            if len(key) > MAX_TAG_CHARS:
                return (
                    f"tags: a key of {len(key):,} characters, over the limit of {MAX_TAG_CHARS:,}"
                )
            if _sized(value) > MAX_TAG_CHARS:
                return (
                    f"tags.{key}: {_sized(value):,} characters, over the limit of {MAX_TAG_CHARS:,}"
                )
    return None


def clip_traceback(text: str | None) -> str | None:
    """Both ends of an oversized traceback, in at most MAX_TRACEBACK_CHARS: where it started
    and what finally failed. Clipping again changes nothing, so the watcher clips before
    sending and the intake after receiving."""
    if text is None or len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = (MAX_TRACEBACK_CHARS - 64) // 2  # room for the marker
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters clipped] ...\n{text[-half:]}"


def build_incident_start(event: ErrorEvent, config: RemedyConfig) -> IncidentStart:
    """Everything downstream sees only the redacted event."""
    service = config.service(event.service)
    event = redact_event(event)
    frames = event.frames or parse_traceback(event.traceback or "")
    frames = mark_in_app(frames, service.in_app_include)[-MAX_FRAMES:]
    event = event.model_copy(
        update={"frames": frames, "traceback": clip_traceback(event.traceback)}
    )
    severity = severity_for(event.error, config.policy.default_severity)
    return IncidentStart(
        service=event.service,
        fingerprint=fingerprint(event.error.type, event.error.message, frames),
        severity=severity,
        notify_only=is_notify_only(severity, config.policy.notify_only_below),
        event=event,
        policy=config.service_policy(event.service),
        forge="github" if service.github_repo else "local",
    )
