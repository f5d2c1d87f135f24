"""Reports the intake has already built, by (service, digest of the raw body).

A storm repeats one body thousands of times; each copy would be parsed, validated, redacted
and fingerprinted again for the same IncidentStart. The intake looks the body up here after
its token and size checks and before any of that. The start depends only on the body and
the configuration the intake was started with, so a hit is the start that parsing would
build; a body differing by one byte is another key and is parsed. Bounded in entries, in
the bytes of the bodies they stand for, and in age.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from remedy.models import IncidentStart

MAX_ENTRIES = 1024
# A start holds the redacted event (the traceback clipped): about the body's size at most.
MAX_BYTES = 32 * 1024 * 1024
TTL_S = 300.0


@dataclass(frozen=True)
class _Entry:
    start: IncidentStart
    size: int
    expires: float


class RecentReports:
    """A bounded LRU of built incident starts."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES, ttl_s: float = TTL_S
    ) -> None:
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._bytes = 0
        self.hits = 0

    @staticmethod
    def _key(service: str, body: bytes) -> tuple[str, bytes]:
        return service, hashlib.blake2b(body, digest_size=20).digest()

    def get(self, service: str, body: bytes) -> IncidentStart | None:
        """The start built from this exact body for this service, if still held."""
        key = self._key(service, body)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.start

    def put(self, service: str, body: bytes, start: IncidentStart) -> None:
        if len(body) > self._max_bytes:
            return
        key = self._key(service, body)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(start, len(body), time.monotonic() + self._ttl_s)
        self._bytes += len(body)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[str, bytes]) -> None:
        self._bytes -= self._entries.pop(key).size
