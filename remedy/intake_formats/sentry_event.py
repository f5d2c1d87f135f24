"""A Sentry event (develop.sentry.dev/sdk/data-model/event-payloads) read into an ErrorEvent.

The exception chain (`exception.values`, oldest first) gives the error: the last value is the
one that was raised, and its stacktrace (or the nearest earlier one that has frames) gives the
frames, which Sentry also orders innermost last. The whole chain and the breadcrumbs are kept
as the traceback text, breadcrumbs first so that the tail people read is the exception.
Frame conventions differ by SDK: Python and Node send paths, Go sends its package as
`module`, Java sends the class as `module` and a bare file name, which becomes the package
path (`com/acme/Cart.java`) as Remedy's Java traceback parser writes it. Local variables,
request headers, cookies and user data are never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from remedy.intake_formats.report import (
    ENVIRONMENT_CHARS,
    FILE_CHARS,
    FUNCTION_CHARS,
    MESSAGE_CHARS,
    TRACEBACK_CHARS,
    TYPE_CHARS,
    ForeignReport,
    field_limit,
    release_of,
    tags_within,
    text,
    timestamp_of,
)
from remedy.models import ErrorEvent, ErrorInfo, Frame
from remedy.service_policy import Severity

_MODULE = field_limit(Frame, "module")
_CODE = field_limit(Frame, "code")
_FRAMES = field_limit(ErrorEvent, "frames")

# Frames per exception in the traceback text, and breadcrumbs before it.
_TEXT_FRAMES = 60
_BREADCRUMBS = 30
_BREADCRUMB_CHARS = 300

# Sentry's levels; "error" (and anything unknown) leaves the severity to Remedy's policy.
_LEVELS = {
    "fatal": Severity.CRITICAL,
    "critical": Severity.CRITICAL,
    "warning": Severity.MEDIUM,
    "info": Severity.LOW,
    "log": Severity.LOW,
    "debug": Severity.LOW,
}
# Bundlers' and SDKs' own URL schemes in front of a path.
_PATH_SCHEMES = ("app:///", "webpack:///", "webpack-internal:///", "file://")
# Exception modules the language prints without (Python's builtins).
_UNQUALIFIED_MODULES = frozenset({"builtins", "__builtin__", "exceptions", "__main__"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _values(value: Any) -> list[dict[str, Any]]:
    """An interface that is `{"values": [...]}` or, in older SDKs, the bare list."""
    items = _dict(value).get("values") if isinstance(value, dict) else value
    return [item for item in _list(items) if isinstance(item, dict)]


# ---------------------------------------------------------------------------- frames


def _frame_file(raw: dict[str, Any], java: bool) -> str:
    path = text(raw.get("abs_path"), FILE_CHARS) or text(raw.get("filename"), FILE_CHARS)
    module = text(raw.get("module"), _MODULE)
    if java and module and "." in module:
        name = text(raw.get("filename"), FILE_CHARS)
        package = module.rpartition(".")[0].replace(".", "/")
        if name and "/" not in name:
            return f"{package}/{name}"[:FILE_CHARS]
    for scheme in _PATH_SCHEMES:
        if path and path.startswith(scheme):
            path = path[len(scheme) :].lstrip("/") if scheme != "file://" else path[7:]
    return path or module or "<unknown>"


def _frame(raw: dict[str, Any], platform: str) -> Frame:
    java = (text(raw.get("platform"), 32) or platform) == "java"
    line = raw.get("lineno")
    in_app = raw.get("in_app")
    code = text(raw.get("context_line"), _CODE)
    return Frame(
        file=_frame_file(raw, java) or "<unknown>",
        line=line if isinstance(line, int) and not isinstance(line, bool) and line >= 0 else None,
        function=text(raw.get("function"), FUNCTION_CHARS),
        module=text(raw.get("module"), _MODULE),
        code=code.strip() if code else None,
        in_app=in_app if isinstance(in_app, bool) else None,
    )


def _frames(stacktrace: Any, platform: str) -> list[Frame]:
    raw = [f for f in _list(_dict(stacktrace).get("frames")) if isinstance(f, dict)]
    return [_frame(f, platform) for f in raw[-_FRAMES:]]


def _thread_stacktrace(event: dict[str, Any]) -> Any:
    """A message event's stack (attach_stacktrace): the crashed or current thread's."""
    threads = _values(event.get("threads"))
    for wanted in ("crashed", "current"):
        for thread in threads:
            if thread.get(wanted) is True and thread.get("stacktrace"):
                return thread["stacktrace"]
    return next((t["stacktrace"] for t in threads if t.get("stacktrace")), None)


# ---------------------------------------------------------------------------- the error


def _message(event: dict[str, Any]) -> str | None:
    for key in ("logentry", "message"):
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value
        entry = _dict(value)
        found = text(entry.get("formatted"), MESSAGE_CHARS) or text(
            entry.get("message"), MESSAGE_CHARS
        )
        if found:
            return found
    return None


def _type_name(value: dict[str, Any]) -> str | None:
    name = text(value.get("type"), TYPE_CHARS)
    module = text(value.get("module"), TYPE_CHARS)
    if name and module and module not in _UNQUALIFIED_MODULES and "." not in name:
        return f"{module}.{name}"[:TYPE_CHARS]
    return name


def _render(values: list[dict[str, Any]], frames: list[list[Frame]], python: bool) -> str:
    """The chain as the language would print it (Python), or as `Type: message` blocks with
    `at` lines innermost first and `Caused by:` (everything else)."""
    blocks = []
    for value, stack in zip(values, frames, strict=True):
        head = f"{_type_name(value) or 'Error'}: {text(value.get('value'), MESSAGE_CHARS) or ''}"
        shown = stack[-_TEXT_FRAMES:]
        if python:
            lines = [
                f'  File "{f.file}", line {f.line}, in {f.function}'
                + (f"\n    {f.code}" if f.code else "")
                for f in shown
            ]
            blocks.append("\n".join(["Traceback (most recent call last):", *lines, head]))
        else:
            at = [f"    at {f.function or '<anonymous>'} ({f.file}:{f.line})" for f in shown]
            blocks.append("\n".join([head, *reversed(at)]))
    if python:
        cause = "\n\nThe above exception was the direct cause of the following exception:\n\n"
        return cause.join(blocks)
    return "\nCaused by: ".join(reversed(blocks))


def _breadcrumbs(event: dict[str, Any]) -> str:
    lines = []
    for crumb in _values(event.get("breadcrumbs"))[-_BREADCRUMBS:]:
        parts = [
            str(crumb.get("timestamp") or ""),
            f"[{crumb.get('level') or 'info'}]",
            f"{crumb.get('category') or crumb.get('type') or 'default'}:",
            str(crumb.get("message") or ""),
        ]
        data = crumb.get("data")
        if isinstance(data, dict) and data:
            parts.append(json.dumps(data, ensure_ascii=False, default=str)[:_BREADCRUMB_CHARS])
        lines.append("  " + " ".join(p for p in parts if p)[:_BREADCRUMB_CHARS])
    return "Breadcrumbs (oldest first):\n" + "\n".join(lines) + "\n\n" if lines else ""


# ---------------------------------------------------------------------------- tags


def _context_tags(contexts: Any) -> Iterator[tuple[str, Any]]:
    for name, context in _dict(contexts).items():
        for key, value in _dict(context).items():
            yield f"{name}.{key}", value


def _request_tags(request: Any) -> Iterator[tuple[str, Any]]:
    # Method and path only: query strings, headers, cookies and bodies carry credentials.
    request = _dict(request)
    yield "http.method", request.get("method")
    url = text(request.get("url"), 2048)
    if url:
        yield "http.path", url.split("?", 1)[0].split("#", 1)[0]


def _tags(event: dict[str, Any], value: dict[str, Any] | None, raw_release: Any) -> dict[str, str]:
    own = event.get("tags")
    pairs = own.items() if isinstance(own, dict) else (
        tuple(pair) for pair in _list(own) if isinstance(pair, list) and len(pair) == 2
    )  # fmt: skip
    mechanism = _dict(value.get("mechanism")) if value else {}
    sdk = _dict(event.get("sdk"))
    fingerprint = _list(event.get("fingerprint"))
    derived: list[tuple[str, Any]] = [
        ("sentry.event_id", event.get("event_id")),
        ("sentry.level", event.get("level")),
        ("sentry.platform", event.get("platform")),
        ("sentry.sdk", f"{sdk.get('name')}/{sdk.get('version')}" if sdk.get("name") else None),
        ("logger", event.get("logger")),
        ("server_name", event.get("server_name")),
        ("transaction", event.get("transaction")),
        ("mechanism", mechanism.get("type")),
        ("handled", mechanism.get("handled")),
        ("sentry.release", raw_release if release_of(raw_release) != raw_release else None),
        ("sentry.fingerprint", json.dumps(fingerprint) if fingerprint else None),
        *_request_tags(event.get("request")),
    ]
    return tags_within([*pairs, *derived, *_context_tags(event.get("contexts"))])


# ---------------------------------------------------------------------------- the event


def read_event(event: dict[str, Any], service: str, size: int) -> ForeignReport | None:
    """The Remedy event of a Sentry event sent for `service`; None for an event that carries
    neither an exception nor a message (nothing for Remedy to investigate)."""
    platform = text(event.get("platform"), 32) or "other"
    values = _values(event.get("exception"))
    message = _message(event)
    if not values and not message:
        return None
    stacks = [_frames(value.get("stacktrace"), platform) for value in values]
    frames = next((stack for stack in reversed(stacks) if stack), [])
    if not frames:
        frames = _frames(_thread_stacktrace(event) or event.get("stacktrace"), platform)
    primary = values[-1] if values else None
    if primary is not None:
        synthetic = _dict(primary.get("mechanism")).get("synthetic") is True
        error_type = _type_name(primary) or ("Message" if synthetic or message else "Error")
        error_message = text(primary.get("value"), MESSAGE_CHARS) or message or ""
        stack_text = _render(values, stacks, python=platform == "python")
    else:
        error_type, error_message = "Message", message or ""
        stack_text = f"Message: {error_message}"
    fingerprint = tuple(str(part) for part in _list(event.get("fingerprint")))
    level = event.get("level")
    report = ErrorEvent(
        service=service,
        environment=text(event.get("environment"), ENVIRONMENT_CHARS),
        release=release_of(event.get("release")),
        error=ErrorInfo(type=error_type[:TYPE_CHARS], message=error_message[:MESSAGE_CHARS]),
        traceback=(_breadcrumbs(event) + stack_text)[-TRACEBACK_CHARS:],
        frames=frames,
        timestamp=timestamp_of(event.get("timestamp")),
        tags=_tags(event, primary, event.get("release")),
    )
    return ForeignReport(
        event=report,
        size=size,
        severity=_LEVELS.get(level) if isinstance(level, str) else None,
        fingerprint=fingerprint,
        event_id=text(event.get("event_id"), 64),
    )
