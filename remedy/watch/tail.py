"""Following one log file durably: rotation, truncation, and a position that survives restarts.

Each configured file is read from a durable position (device, inode, byte offset and a
hash of the bytes already read). The position moves past an error record only after the
caller has delivered it, and is written to disk (atomically) right then, so a restart
neither loses nor repeats a record. The one exception is a crash in the instant between
the delivery and that write: the record is delivered again on restart (at-least-once).

Rotation: when the path names a new file, the old one is read to its end (through the
handle still open on it, or, after a restart, found again by inode in the same folder)
before the new one is read from its first byte. Truncation: a file shorter than the
position, or whose first bytes changed, is read again from the start. A line without its
newline yet is left for the next poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from remedy.config import WatchConfig
from remedy.watch.formats import Found, scan

log = logging.getLogger(__name__)

STATE_VERSION = 1
HEAD_BYTES = 1024


class WatchError(Exception):
    """`remedy watch` cannot go on; the message says what to fix."""


@dataclass
class Position:
    """Where reading stopped in one file, and how to recognise that file again."""

    dev: int
    inode: int
    offset: int = 0
    head_len: int = 0
    head_sha256: str = ""


class WatchState:
    """Positions by configured path, in one JSON file replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.existed = path.exists()
        self.positions: dict[str, Position] = {}
        if self.existed:
            try:
                data = json.loads(path.read_text("utf-8"))
                for key, value in data.get("files", {}).items():
                    self.positions[key] = Position(**value)
            except (OSError, ValueError, TypeError) as exc:
                raise WatchError(
                    f"{path}: unreadable watch state ({exc}); move it away to start over "
                    "(files are then read according to [watch].start_at)"
                ) from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": STATE_VERSION,
            "files": {key: vars(pos) for key, pos in sorted(self.positions.items())},
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        # The rename itself must survive a power cut, not only the file's bytes.
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _same_file(stat: os.stat_result, position: Position) -> bool:
    return (stat.st_dev, stat.st_ino) == (position.dev, position.inode)


def _head_hash(handle: BinaryIO, length: int) -> str:
    return hashlib.sha256(os.pread(handle.fileno(), length, 0)).hexdigest()


def _head_matches(handle: BinaryIO, position: Position, size: int) -> bool:
    if position.head_len == 0:
        return True
    if size < position.head_len:
        return False
    return _head_hash(handle, position.head_len) == position.head_sha256


def _find_rotated(path: Path, position: Position) -> Path | None:
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_file() and _same_file(entry.stat(), position):
                    candidate = Path(entry.path)
                    with open(candidate, "rb") as handle:
                        size = os.fstat(handle.fileno()).st_size
                        if size >= position.offset and _head_matches(handle, position, size):
                            return candidate
    return None


Deliver = Callable[[Found], bool]
"""Deliver one record; False when stopping (the record stays unread)."""


class TailedFile:
    """One configured log file of a service, and the handle on the file read for it now."""

    def __init__(
        self, key: str, path: Path, service: str, state: WatchState, settings: WatchConfig
    ) -> None:
        self.key = key
        self.path = path
        self.service = service
        self._state = state
        self._settings = settings
        self._handle: BinaryIO | None = None
        self._last_size = -1
        self._last_growth = time.monotonic()
        # A file present now that was never read starts where [watch].start_at says; a file
        # that appears later is new, and all of a new file is news.
        self._start_at_end = (
            settings.start_at == "end" and key not in state.positions and path.exists()
        )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def poll(self, deliver: Deliver, *, once: bool) -> bool:
        """Deliver the complete records that are new, in file order; True if anything moved.

        `once` reads as if the writer were done: a finished-looking traceback and the rest of
        a rotated file are not waited for.
        """
        if self._handle is None and not self._open():
            return False
        assert self._handle is not None
        position = self._state.positions[self.key]
        stat = os.fstat(self._handle.fileno())
        try:
            at_path: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            at_path = None
        # A new file at the path: the one open here was rotated away and will not grow
        # for long (writers reopen right after the rename).
        replaced = at_path is not None and not _same_file(at_path, position)

        if stat.st_size != self._last_size:
            self._last_size = stat.st_size
            self._last_growth = time.monotonic()
            if stat.st_size < position.offset or not _head_matches(
                self._handle, position, stat.st_size
            ):
                log.info("%s: truncated; reading from the start", self.key)
                self._set_position(stat, 0)
                self._last_size = stat.st_size
                self._commit(0)
        quiet = time.monotonic() - self._last_growth >= self._settings.traceback_flush_s

        start = self._state.positions[self.key].offset
        progressed = False
        if stat.st_size > start:
            max_record = self._settings.max_record_bytes
            chunk = os.pread(self._handle.fileno(), 2 * max_record, start)
            found, safe = scan(
                chunk, start, finish=once or quiet or replaced, max_record=max_record
            )
            for record in found:
                if not deliver(record):
                    return True
                self._commit(record.end)
                progressed = True
            if safe != self._state.positions[self.key].offset:
                self._commit(safe)
                progressed = True
            if start + len(chunk) < stat.st_size and safe > start:
                return True  # more to read right away

        if not replaced:
            return progressed
        unfinished = stat.st_size - self._state.positions[self.key].offset
        if unfinished > 0:
            if not (once or quiet):
                return progressed  # the writer may still be finishing its last line there
            log.warning(
                "%s: rotated; %d bytes at the end of the old file never became a complete "
                "record and are dropped",
                self.key,
                unfinished,
            )
        self.close()
        self._handle = open(self.path, "rb")  # noqa: SIM115 (kept open across polls)
        self._set_position(os.fstat(self._handle.fileno()), 0)
        self._commit(0)
        log.info("%s: rotated; reading the new file", self.key)
        return True

    def _set_position(self, stat: os.stat_result, offset: int) -> None:
        self._state.positions[self.key] = Position(stat.st_dev, stat.st_ino, offset)
        self._last_size = -1

    def _open(self) -> bool:
        position = self._state.positions.get(self.key)
        try:
            current: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if position is not None:
            if current is not None and _same_file(current, position):
                self._handle = open(self.path, "rb")  # noqa: SIM115 (kept open across polls)
                if not _head_matches(self._handle, position, current.st_size):
                    log.info("%s: replaced since last read; reading from the start", self.key)
                    self._set_position(current, 0)
                return True
            rotated = _find_rotated(self.path, position)
            if rotated is not None:
                log.info("%s: finishing %s, rotated while not watched", self.key, rotated)
                self._handle = open(rotated, "rb")  # noqa: SIM115
                return True
        if current is None:
            return False
        if position is not None and position.offset:
            log.warning(
                "%s: the file read up to byte %d is gone; reading the new file from the start",
                self.key,
                position.offset,
            )
        self._handle = open(self.path, "rb")  # noqa: SIM115
        stat = os.fstat(self._handle.fileno())
        start = stat.st_size if self._start_at_end else 0
        self._start_at_end = False
        self._set_position(stat, start)
        self._commit(start)
        return True

    def _commit(self, offset: int) -> None:
        """Record the new offset (and the head hash, while the head is still being read)."""
        position = self._state.positions[self.key]
        position.offset = offset
        if self._handle is not None and position.head_len < min(offset, HEAD_BYTES):
            position.head_len = min(offset, HEAD_BYTES)
            position.head_sha256 = _head_hash(self._handle, position.head_len)
        self._state.save()
