"""Which lines of a log file are error records, and the error events made of them.

Recognised records, one per line unless noted:
- JSON error records: Rust `tracing` (fields.message, filename/line_number), python-json-
  logger (levelname, exc_info), structlog (event, exception as text or dict_tracebacks),
  pino/bunyan (numeric level >= 50, err.type/name/message/stack), ECS/GCP-style level keys.
- plain Python tracebacks spanning several lines, chained ones included.

Pure: bytes in, records and events (dicts without `service`) out; tail.py reads the bytes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from remedy.intake import clip_traceback
from remedy.stacktrace import (
    PYTHON_CHAIN_SEPARATORS,
    PYTHON_TRACEBACK_HEADER,
    parse_exception_line,
)

log = logging.getLogger(__name__)

ERROR_LEVELS = frozenset(
    {"error", "err", "fatal", "critical", "crit", "alert", "emerg", "emergency", "panic", "severe"}
)
ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,23}[0-9]{4}$")
RELEASE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
FALLBACK_ERROR_TYPE = "LoggedError"
MAX_TAG_CHARS = 1_000


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
            elif stripped.endswith(PYTHON_TRACEBACK_HEADER):
                resume = context_start if context else start
                block = _Block(start, index, context, resume, [PYTHON_TRACEBACK_HEADER])
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
            elif block.phase == "gap" and text.strip() in PYTHON_CHAIN_SEPARATORS:
                block.lines.extend([*block.pending, text])
                block.pending.clear()
                block.phase = "chain"
            else:
                outcome = "done"
        elif not text.strip():  # chain: blank lines before the next "Traceback"
            block.lines.append(text)
        elif text.strip() == PYTHON_TRACEBACK_HEADER:
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
        "traceback": clip_traceback(stack_text),
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


def event_from_traceback(text: str, context: str | None) -> dict[str, Any]:
    error = parse_exception_line(text) or (FALLBACK_ERROR_TYPE, "")
    event: dict[str, Any] = {
        "error": {"type": error[0][:256], "message": error[1][:16_000]},
        "traceback": clip_traceback(text),
        "tags": {},
    }
    if context:
        event["tags"]["log.message"] = context[:MAX_TAG_CHARS]
    return event
