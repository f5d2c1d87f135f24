"""`remedy watch`: tail services' log files and report their errors to the intake.

Each configured file is read from a durable position (device, inode, byte offset and a
hash of the bytes already read). The position moves past an error record only after the
intake has answered 202 for it and is written to disk (atomically) right then, so a
restart neither loses nor repeats a record. The one exception is a crash in the instant
between the 202 and that write: the record is sent again on restart (at-least-once), and
the intake counts it as one more occurrence of the same incident.

Recognised records, one per line unless noted:
- JSON error records: Rust `tracing` (fields.message, filename/line_number), python-json-
  logger (levelname, exc_info), structlog (event, exception as text or dict_tracebacks),
  pino/bunyan (numeric level >= 50, err.type/name/message/stack), ECS/GCP-style level keys.
- plain Python tracebacks spanning several lines, chained ones included.

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
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from pydantic import ValidationError

from remedy.config import RemedyConfig, secret
from remedy.models import ErrorEvent
from remedy.stacktrace import parse_exception_line
from starter.client import intake_url

log = logging.getLogger(__name__)

STATE_VERSION = 1
HEAD_BYTES = 1024
ONCE_ATTEMPTS = 4
TRACEBACK_HEADER = "Traceback (most recent call last):"
CHAIN_MARKERS = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
ERROR_LEVELS = frozenset(
    {"error", "err", "fatal", "critical", "crit", "alert", "emerg", "emergency", "panic", "severe"}
)
ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,23}[0-9]{4}$")
RELEASE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
FALLBACK_ERROR_TYPE = "LoggedError"
MAX_TAG_CHARS = 1_000
# Well inside the intake's body limit ([intake].max_body_bytes, 256 KiB by default).
MAX_TRACEBACK_CHARS = 64_000


class WatchError(Exception):
    """`remedy watch` cannot go on; the message says what to fix."""


# ---------------------------------------------------------------------------- durable state


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


# ---------------------------------------------------------------------------- scanning


@dataclass
class Found:
    """A candidate record: byte range in the file and what it held."""

    start: int
    end: int
    payload: dict[str, Any] | str  # a JSON object, or a plain traceback's text
    context: str | None = None  # the log line just before a plain traceback


@dataclass
class _Block:
    """A plain traceback being assembled line by line."""

    start: int
    first_index: int
    context: str | None
    resume: int  # where to read again while incomplete: the context line belongs to it
    lines: list[str] = field(default_factory=list)
    phase: str = "frames"  # frames -> after (exception line seen) -> gap -> chain -> frames
    exception_index: int = -1
    exception_end: int = -1
    pending: list[str] = field(default_factory=list)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def scan(data: bytes, base: int, *, finish: bool, max_record: int) -> tuple[list[Found], int]:
    """Complete records in `data` (read from file offset `base`) and the offset up to which
    everything has been dealt with. A partial last line and a traceback that may still grow
    stay beyond that offset; `finish` says a finished-looking traceback will not grow.
    """
    lines: list[tuple[int, int, str]] = []
    cursor = 0
    while (newline := data.find(b"\n", cursor)) >= 0:
        text = data[cursor:newline].decode("utf-8", "replace").rstrip("\r")
        lines.append((base + cursor, base + newline + 1, text))
        cursor = newline + 1

    found: list[Found] = []
    safe = base
    block: _Block | None = None
    context: str | None = None
    context_start = base

    def close_block(current: _Block) -> int:
        text = "\n".join(current.lines[: current.exception_index + 1]) + "\n"
        found.append(Found(current.start, current.exception_end, text, current.context))
        return current.exception_end

    index = 0
    while index < len(lines):
        start, end, text = lines[index]
        if block is None:
            stripped = text.strip()
            if stripped.startswith("{"):
                obj = _json_object(stripped)
                if obj is not None:
                    found.append(Found(start, end, obj))
                context = None
            elif stripped.endswith(TRACEBACK_HEADER):
                resume = context_start if context else start
                block = _Block(start, index, context, resume, [TRACEBACK_HEADER])
                index += 1
                continue
            else:
                context, context_start = stripped or None, start
            safe = end
            index += 1
            continue

        outcome = "more"
        if block.phase == "frames":
            if text[:1] in (" ", "\t"):
                block.lines.append(text)
            elif text.strip():
                block.lines.append(text)
                block.phase = "after"
                block.exception_index = len(block.lines) - 1
                block.exception_end = end
            else:
                outcome = "abandon"
        elif block.phase in ("after", "gap"):
            if not text.strip():
                block.phase = "gap"
                block.pending.append(text)
            elif block.phase == "gap" and text.strip() in CHAIN_MARKERS:
                block.lines.extend([*block.pending, text])
                block.pending.clear()
                block.phase = "chain"
            else:
                outcome = "done"
        elif not text.strip():  # chain: blank lines before the next "Traceback"
            block.lines.append(text)
        elif text.strip() == TRACEBACK_HEADER:
            block.lines.append(text)
            block.phase = "frames"
        else:
            outcome = "done"

        if outcome == "done":
            safe = close_block(block)
            index = block.first_index + block.exception_index + 1
            block, context = None, None
        elif outcome == "abandon":
            safe = lines[block.first_index][1]
            index = block.first_index + 1
            block, context = None, None
        else:
            index += 1

    if block is not None:
        last_end = lines[-1][1]
        too_big = last_end - block.start > max_record
        if block.exception_index >= 0 and (finish or too_big):
            safe = close_block(block)
        elif too_big:
            log.warning("skipped a traceback of more than %d bytes without its end", max_record)
            safe = last_end
        else:
            safe = block.resume
    elif len(data) - cursor >= max_record:
        log.warning("skipped a line of more than %d bytes", max_record)
        safe = base + len(data)
    return found, safe


# ---------------------------------------------------------------------------- records to events


def _first(obj: dict[str, Any], *keys: str) -> Any:
    """The first present value among dotted keys (`err.stack` looks in obj["err"])."""
    for key in keys:
        value: Any = obj
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and "." in key:
            value = obj.get(key)  # flattened ("error.stack": ...)
        if value not in (None, "", [], {}):
            return value
    return None


def _is_error_level(obj: dict[str, Any]) -> bool | None:
    level = _first(obj, "level", "levelname", "severity", "log.level", "lvl", "loglevel")
    if level is None or isinstance(level, bool):
        return None
    if isinstance(level, int | float):
        return level >= 50  # pino / bunyan: 50 error, 60 fatal
    if isinstance(level, str):
        value = level.strip().lower()
        return int(value) >= 50 if value.isdigit() else value in ERROR_LEVELS
    return None


def _timestamp(value: Any) -> str | None:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value > 1e11 else value  # pino writes epoch milliseconds
            return datetime.fromtimestamp(seconds, UTC).isoformat()
        if isinstance(value, str):
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).isoformat()
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _structlog_frames(stacks: list[Any]) -> tuple[tuple[str, str] | None, list[dict[str, Any]]]:
    """structlog's dict_tracebacks: stacks[0] is the raised exception, frames outermost first."""
    stack = stacks[0] if stacks and isinstance(stacks[0], dict) else {}
    error = None
    if isinstance(stack.get("exc_type"), str):
        error = (stack["exc_type"], str(stack.get("exc_value") or ""))
    frames = []
    for frame in stack.get("frames") or []:
        if isinstance(frame, dict) and isinstance(frame.get("filename"), str):
            frames.append(
                {
                    "file": frame["filename"],
                    "line": frame.get("lineno") if isinstance(frame.get("lineno"), int) else None,
                    "function": frame.get("name") if isinstance(frame.get("name"), str) else None,
                }
            )
    return error, frames


def event_from_json(obj: dict[str, Any]) -> dict[str, Any] | None:
    """An error event (without `service`) for an error record, None for any other line."""
    is_error = _is_error_level(obj)
    if is_error is False:
        return None
    candidates = (obj.get("err"), obj.get("error"), _first(obj, "fields.error"))
    error_obj = next((v for v in candidates if isinstance(v, dict)), {})
    stack = _first(
        obj,
        "exc_info",
        "exc_text",
        "exception",
        "traceback",
        "stack_trace",
        "stacktrace",
        "stack",
        "fields.backtrace",
        "backtrace",
    )
    stack = stack or _first(error_obj, "stack", "stack_trace", "backtrace")
    dict_stacks = stack if isinstance(stack, list) else None
    stack_text = stack if isinstance(stack, str) else None
    if is_error is None and not (stack_text or dict_stacks or error_obj):
        return None

    message = _first(obj, "message", "msg", "event", "fields.message")
    message = message if isinstance(message, str) else None
    error: tuple[str, str] | None = None
    frames: list[dict[str, Any]] = []
    if dict_stacks:
        error, frames = _structlog_frames(dict_stacks)
    if error is None and error_obj:
        kind = _first(error_obj, "type", "name", "kind", "class")
        if isinstance(kind, str):
            detail = _first(error_obj, "message", "msg")
            error = (kind, str(detail) if detail is not None else "")
    if error is None and stack_text:
        error = parse_exception_line(stack_text)
    if error is None:
        kind = _first(obj, "exc_type", "error_type", "error.type", "exception.type")
        if isinstance(kind, str):
            error = (kind, "")
    if error is None:
        plain = _first(obj, "fields.error", "error", "err")
        error = (FALLBACK_ERROR_TYPE, str(plain) if isinstance(plain, str) else message or "")
    error_type, error_message = error
    if not error_message and message:
        error_message = message

    if not stack_text and not frames:
        # No stack: the call site of the log statement is the best location there is.
        file = _first(obj, "filename", "file", "pathname", "log.origin.file.name")
        line = _first(obj, "line_number", "lineno", "line", "log.origin.file.line")
        if isinstance(file, str):
            frames = [
                {
                    "file": file,
                    "line": line if isinstance(line, int) else None,
                    "function": _first(obj, "funcName", "function", "log.origin.function"),
                    "module": _first(obj, "target", "module"),
                }
            ]

    event: dict[str, Any] = {
        "error": {"type": error_type[:256], "message": error_message[:16_000]},
        "traceback": _clip_traceback(stack_text),
        "frames": frames[-500:],
        "tags": {},
    }
    code = _first(obj, "error_code", "code", "err.code", "error.code", "fields.code")
    if isinstance(code, str) and ERROR_CODE.match(code):
        event["error"]["code"] = code
    release = _first(obj, "release", "service.version")
    if isinstance(release, str) and RELEASE.match(release):
        event["release"] = release
    environment = _first(obj, "environment", "env", "deployment.environment")
    if isinstance(environment, str) and len(environment) <= 64:
        event["environment"] = environment
    timestamp = _timestamp(_first(obj, "timestamp", "time", "@timestamp", "ts", "asctime"))
    if timestamp:
        event["timestamp"] = timestamp
    logger = _first(obj, "name", "logger", "logger_name", "target")
    if isinstance(logger, str):
        event["tags"]["logger"] = logger[:MAX_TAG_CHARS]
    if message:
        event["tags"]["log.message"] = message[:MAX_TAG_CHARS]
    return event


def _clip_traceback(text: str | None) -> str | None:
    """Both ends of an oversized trace: where it started, and what finally failed."""
    if text is None or len(text) <= MAX_TRACEBACK_CHARS:
        return text
    head = MAX_TRACEBACK_CHARS // 4
    tail = MAX_TRACEBACK_CHARS - head - 64
    return f"{text[:head]}\n... [{len(text) - head - tail} characters clipped] ...\n{text[-tail:]}"


def event_from_traceback(text: str, context: str | None) -> dict[str, Any]:
    error = parse_exception_line(text) or (FALLBACK_ERROR_TYPE, "")
    event: dict[str, Any] = {
        "error": {"type": error[0][:256], "message": error[1][:16_000]},
        "traceback": _clip_traceback(text),
        "tags": {},
    }
    if context:
        event["tags"]["log.message"] = context[:MAX_TAG_CHARS]
    return event


# ---------------------------------------------------------------------------- the watcher


@dataclass
class Tail:
    """One configured log file and the handle on the file currently read for it."""

    key: str
    path: Path
    service: str
    handle: BinaryIO | None = None
    last_size: int = -1
    last_growth: float = field(default_factory=time.monotonic)


@dataclass
class Totals:
    reported: int = 0
    skipped: int = 0  # error records the intake refused with a 4xx (or that cannot be events)


class IntakeDown(Exception):
    """The intake did not accept a record after the retries `--once` allows."""


def _same_file(stat: os.stat_result, position: Position) -> bool:
    return (stat.st_dev, stat.st_ino) == (position.dev, position.inode)


def _head_hash(handle: BinaryIO, length: int) -> str:
    return hashlib.sha256(os.pread(handle.fileno(), length, 0)).hexdigest()


class Watcher:
    def __init__(
        self,
        config: RemedyConfig,
        *,
        once: bool = False,
        http: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.settings = config.watch
        self.once = once
        self.url = intake_url(config) + "/v1/errors"
        self.totals = Totals()
        self._stop = threading.Event()
        self.tails = self._tails(config)
        self._tokens = self._check_tokens(config, self.tails)
        self.state = WatchState(config.home_dir / self.settings.state_file)
        # Files present now that were never read start where [watch].start_at says; files
        # that appear later are new, and all of a new file is news.
        self._start_at_end = {
            tail.key
            for tail in self.tails
            if self.settings.start_at == "end"
            and tail.key not in self.state.positions
            and tail.path.exists()
        }
        self._http = http or httpx.Client(timeout=self.settings.request_timeout_s)

    @staticmethod
    def _tails(config: RemedyConfig) -> list[Tail]:
        tails: list[Tail] = []
        seen: dict[str, str] = {}
        for name, service in config.services.items():
            for raw in service.log_paths:
                path = config.resolve(raw)
                key = str(path)
                if key in seen:
                    raise WatchError(
                        f"remedy.toml: services.{name}.log_paths: {key} is also a log of "
                        f"service {seen[key]!r} (each file reports as one service)"
                    )
                seen[key] = name
                tails.append(Tail(key, path, name))
        if not tails:
            raise WatchError(
                "remedy.toml: no service has log_paths, so there is nothing to watch "
                '(add log_paths = ["/var/log/shop/app.json"] under [services.<name>])'
            )
        return tails

    @staticmethod
    def _check_tokens(config: RemedyConfig, tails: list[Tail]) -> dict[str, str]:
        env_names = {}
        for tail in tails:
            env_name = config.services[tail.service].intake_token_env
            if not env_name:
                raise WatchError(
                    f"remedy.toml: services.{tail.service}.intake_token_env is not set; the "
                    "watcher reports with the service's intake token (name its variable)"
                )
            if not secret(env_name):
                raise WatchError(
                    f"the environment variable {env_name} (services.{tail.service}."
                    "intake_token_env) is empty; export the service's intake token"
                )
            env_names[tail.service] = env_name
        return env_names

    # -- running --------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Watch until stopped (or, with once, until everything present is read).

        Returns 0, or 1 when `once` could not deliver a record (it is read again next time).
        """
        try:
            while not self._stop.is_set():
                progressed = self.poll()
                if self.once and not progressed:
                    return 0
                if not progressed:
                    self._stop.wait(self.settings.poll_interval_s)
        except IntakeDown as exc:
            log.error("%s", exc)
            return 1
        finally:
            self.close()
        return 0

    def close(self) -> None:
        for tail in self.tails:
            self._close_handle(tail)
        self._http.close()

    def poll(self) -> bool:
        """Read what is new in every file once; True if anything moved."""
        progressed = False
        for tail in self.tails:
            if self._stop.is_set():
                break
            progressed |= self._poll_tail(tail)
        return progressed

    # -- one file ----------------------------------------------------------------------

    def _close_handle(self, tail: Tail) -> None:
        if tail.handle is not None:
            tail.handle.close()
            tail.handle = None

    def _set_position(self, tail: Tail, stat: os.stat_result, offset: int) -> None:
        self.state.positions[tail.key] = Position(stat.st_dev, stat.st_ino, offset)
        tail.last_size = -1

    def _open(self, tail: Tail) -> bool:
        position = self.state.positions.get(tail.key)
        try:
            current: os.stat_result | None = os.stat(tail.path)
        except FileNotFoundError:
            current = None
        if position is not None:
            if current is not None and _same_file(current, position):
                tail.handle = open(tail.path, "rb")  # noqa: SIM115 (kept open across polls)
                if not self._head_matches(tail.handle, position, current.st_size):
                    log.info("%s: replaced since last read; reading from the start", tail.key)
                    self._set_position(tail, current, 0)
                return True
            rotated = self._find_rotated(tail.path, position)
            if rotated is not None:
                log.info("%s: finishing %s, rotated while not watched", tail.key, rotated)
                tail.handle = open(rotated, "rb")  # noqa: SIM115
                return True
        if current is None:
            return False
        if position is not None and position.offset:
            log.warning(
                "%s: the file read up to byte %d is gone; reading the new file from the start",
                tail.key,
                position.offset,
            )
        tail.handle = open(tail.path, "rb")  # noqa: SIM115
        stat = os.fstat(tail.handle.fileno())
        start = stat.st_size if tail.key in self._start_at_end else 0
        self._start_at_end.discard(tail.key)
        self._set_position(tail, stat, start)
        self._commit(tail, start)
        return True

    @staticmethod
    def _head_matches(handle: BinaryIO, position: Position, size: int) -> bool:
        if position.head_len == 0:
            return True
        if size < position.head_len:
            return False
        return _head_hash(handle, position.head_len) == position.head_sha256

    @staticmethod
    def _find_rotated(path: Path, position: Position) -> Path | None:
        with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_file() and _same_file(entry.stat(), position):
                        candidate = Path(entry.path)
                        with open(candidate, "rb") as handle:
                            size = os.fstat(handle.fileno()).st_size
                            if size >= position.offset and Watcher._head_matches(
                                handle, position, size
                            ):
                                return candidate
        return None

    def _commit(self, tail: Tail, offset: int) -> None:
        """Record the new offset (and the head hash, while the head is still being read)."""
        position = self.state.positions[tail.key]
        position.offset = offset
        if tail.handle is not None and position.head_len < min(offset, HEAD_BYTES):
            position.head_len = min(offset, HEAD_BYTES)
            position.head_sha256 = _head_hash(tail.handle, position.head_len)
        self.state.save()

    def _poll_tail(self, tail: Tail) -> bool:
        if tail.handle is None and not self._open(tail):
            return False
        assert tail.handle is not None
        position = self.state.positions[tail.key]
        stat = os.fstat(tail.handle.fileno())
        try:
            at_path: os.stat_result | None = os.stat(tail.path)
        except FileNotFoundError:
            at_path = None
        # A new file at the path: the one open here was rotated away and will not grow
        # for long (writers reopen right after the rename).
        replaced = at_path is not None and not _same_file(at_path, position)

        if stat.st_size != tail.last_size:
            tail.last_size = stat.st_size
            tail.last_growth = time.monotonic()
            if stat.st_size < position.offset or not self._head_matches(
                tail.handle, position, stat.st_size
            ):
                log.info("%s: truncated; reading from the start", tail.key)
                self._set_position(tail, stat, 0)
                tail.last_size = stat.st_size
                self._commit(tail, 0)
        quiet = time.monotonic() - tail.last_growth >= self.settings.traceback_flush_s

        start = self.state.positions[tail.key].offset
        progressed = False
        if stat.st_size > start:
            chunk = os.pread(tail.handle.fileno(), 2 * self.settings.max_record_bytes, start)
            found, safe = scan(
                chunk,
                start,
                finish=self.once or quiet or replaced,
                max_record=self.settings.max_record_bytes,
            )
            for record in found:
                if self._stop.is_set():
                    return True
                self._report(tail, record)
                self._commit(tail, record.end)
                progressed = True
            if safe != self.state.positions[tail.key].offset:
                self._commit(tail, safe)
                progressed = True
            if start + len(chunk) < stat.st_size and safe > start:
                return True  # more to read right away

        if not replaced:
            return progressed
        unfinished = stat.st_size - self.state.positions[tail.key].offset
        if unfinished > 0:
            if not (self.once or quiet):
                return progressed  # the writer may still be finishing its last line there
            log.warning(
                "%s: rotated; %d bytes at the end of the old file never became a complete "
                "record and are dropped",
                tail.key,
                unfinished,
            )
        self._close_handle(tail)
        tail.handle = open(tail.path, "rb")  # noqa: SIM115 (kept open across polls)
        self._set_position(tail, os.fstat(tail.handle.fileno()), 0)
        self._commit(tail, 0)
        log.info("%s: rotated; reading the new file", tail.key)
        return True

    # -- reporting ---------------------------------------------------------------------

    def _event(self, tail: Tail, record: Found) -> ErrorEvent | None:
        if isinstance(record.payload, dict):
            event = event_from_json(record.payload)
            if event is None:
                return None
        else:
            event = event_from_traceback(record.payload, record.context)
        event["service"] = tail.service
        event["tags"] = {"source": "remedy-watch", "log.path": tail.key, **event["tags"]}
        try:
            return ErrorEvent.model_validate(event)
        except ValidationError as exc:
            self.totals.skipped += 1
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            log.warning(
                "%s: bytes %d-%d: an error record that cannot be reported (%s); skipped",
                tail.key,
                record.start,
                record.end,
                problem,
            )
            return None

    def _report(self, tail: Tail, record: Found) -> None:
        event = self._event(tail, record)
        if event is None:
            return
        body = event.model_dump(mode="json", exclude_none=True)
        attempt = 0
        while True:
            token = secret(self._tokens[tail.service])
            headers = {"Authorization": f"Bearer {token}"}
            retry_after: float | None = None
            try:
                response = self._http.post(self.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"intake unreachable at {self.url}: {type(exc).__name__}"
            else:
                if response.status_code in (200, 201, 202):
                    self.totals.reported += 1
                    return
                if response.status_code != 429 and response.status_code < 500:
                    self.totals.skipped += 1
                    log.warning(
                        "%s: bytes %d-%d: the intake refused the record with HTTP %d (%s); "
                        "skipped, since sending it again cannot succeed",
                        tail.key,
                        record.start,
                        record.end,
                        response.status_code,
                        response.text[:300],
                    )
                    return
                problem = f"the intake answered HTTP {response.status_code}"
                retry_after = _retry_after(response.headers.get("retry-after"))
            attempt += 1
            if self.once and attempt >= ONCE_ATTEMPTS:
                raise IntakeDown(
                    f"{tail.key}: {problem} after {attempt} attempts; the record at byte "
                    f"{record.start} will be sent by the next run (start the intake: remedy serve)"
                )
            ceiling = min(self.settings.max_backoff_s, 0.5 * 2 ** min(attempt - 1, 16))
            delay = max(retry_after or 0.0, ceiling / 2 + random.uniform(0, ceiling / 2))
            log.warning("%s: %s; retrying in %.1fs", tail.key, problem, delay)
            if self._stop.wait(delay):
                raise IntakeDown(f"{tail.key}: stopped while the intake was unavailable")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
