"""Sentry envelopes (develop.sentry.dev/sdk/envelopes): a header line, then items, each an
item header line and a payload of `length` bytes or up to the next newline.

Only `event` items are kept. Every other item type (transactions, sessions, client reports,
attachments, profiles, check-ins, replays, and types not invented yet) is stepped over by its
length without being read, so a large attachment costs a slice and no parsing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from remedy.intake import nested_deeper_than
from remedy.intake_formats.report import Rejected

# Real envelopes hold a handful of items; a flood of tiny ones is not an SDK.
MAX_ITEMS = 100
MAX_HEADER_BYTES = 64 * 1024
# The item types that can carry an error; Sentry allows one event per envelope.
KEPT_TYPES = frozenset({"event"})


@dataclass
class Envelope:
    header: dict[str, Any]
    events: list[bytes] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def event_id(self) -> str | None:
        value = self.header.get("event_id")
        return value if isinstance(value, str) else None


def _header(line: bytes, what: str, max_depth: int) -> dict[str, Any]:
    if len(line) > MAX_HEADER_BYTES:
        raise Rejected(400, f"{what}: longer than {MAX_HEADER_BYTES} bytes")
    if nested_deeper_than(line, max_depth):
        raise Rejected(400, f"{what}: JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Rejected(400, f"{what} is not a JSON line") from None
    if not isinstance(value, dict):
        raise Rejected(400, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _line_end(body: bytes, start: int) -> int:
    end = body.find(b"\n", start)
    return len(body) if end < 0 else end


def parse_envelope(body: bytes, *, max_event_bytes: int, max_depth: int) -> Envelope:
    """The envelope's header and its event payloads; 400 for a malformed envelope, 413 for
    an event over `max_event_bytes`."""
    if not body.strip():
        raise Rejected(400, "empty envelope: send a header line and items")
    end = _line_end(body, 0)
    envelope = Envelope(_header(body[:end], "envelope header", max_depth))
    position = end + 1
    items = 0
    while position < len(body):
        if body[position : position + 1] == b"\n":  # a blank line between items
            position += 1
            continue
        items += 1
        what = f"item {items}"
        if items > MAX_ITEMS:
            raise Rejected(400, f"envelope: more than {MAX_ITEMS} items")
        end = _line_end(body, position)
        item = _header(body[position:end], f"{what} header", max_depth)
        kind, length = item.get("type"), item.get("length")
        if not isinstance(kind, str) or not kind:
            raise Rejected(400, f"{what} header: 'type' must be a non-empty string")
        start = min(end + 1, len(body))
        if length is None:
            stop = _line_end(body, start)
        elif isinstance(length, int) and not isinstance(length, bool) and length >= 0:
            stop = start + length
            if stop > len(body):
                raise Rejected(400, f"{what}: length {length} but {len(body) - start} bytes follow")
        else:
            raise Rejected(400, f"{what} header: 'length' must be a non-negative integer")
        if kind in KEPT_TYPES:
            if stop - start > max_event_bytes:
                raise Rejected(
                    413, f"{what}: an event of {stop - start} bytes, over {max_event_bytes}"
                )
            if envelope.events:
                raise Rejected(400, f"{what}: an envelope carries at most one event")
            envelope.events.append(body[start:stop])
        else:
            envelope.dropped[kind] += 1
        position = stop + 1 if body[stop : stop + 1] == b"\n" else stop
    return envelope
