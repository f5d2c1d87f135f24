"""From an exception to Remedy's error event (DESIGN.md), in two halves.

`Snapshot.take` runs in the application's thread and does the least it can: it copies
what the traceback knows (file, line, function, module per frame) and lets go of the
frames, so a queued report never keeps a request's locals alive. `EventBuilder.build`
runs on the sender thread: source lines, in-app detection, formatting, redaction, limits.
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import re
import site
import sysconfig
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from remedy_client.redact import REDACTED, is_secret_key, redact, redact_code

# The intake's limits (remedy.models.ErrorEvent and intake.max_body_bytes), kept with room
# to spare: an event that breaks one is refused with a 4xx and never retried.
MAX_MESSAGE_CHARS = 16_000
MAX_TRACEBACK_CHARS = 64_000
MAX_FRAMES = 200
MAX_CODE_CHARS = 300
MAX_NAME_CHARS = 500
MAX_FILE_CHARS = 1_000
MAX_TAGS = 64
MAX_TAG_CHARS = 1_000
MAX_EVENT_BYTES = 200_000

ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,23}[0-9]{4}$")
_CLIENT_PACKAGE = __name__.rpartition(".")[0]


def exception_type_name(exc_type: type) -> str:
    """The name Python prints on a traceback's last line (`json.decoder.JSONDecodeError`)."""
    module = getattr(exc_type, "__module__", None)
    name = getattr(exc_type, "__qualname__", exc_type.__name__)
    if module in (None, "builtins", "__main__"):
        return name
    return f"{module}.{name}"


def _error_code(exc: BaseException) -> str | None:
    for attribute in ("error_code", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str) and ERROR_CODE.match(value):
            return value
    return None


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


class Raised:
    """One exception of a chain as a traceback prints it, frames outermost first."""

    __slots__ = ("frames", "message", "notes", "type")

    def __init__(self, exc: BaseException) -> None:
        self.type = exception_type_name(type(exc))
        self.message = _safe_str(exc)[:MAX_MESSAGE_CHARS]
        notes = getattr(exc, "__notes__", None)
        self.notes = [str(note) for note in notes] if isinstance(notes, list) else []
        # (file, line, function, module); a plain walk costs a tenth of
        # traceback.TracebackException, which also works out columns we do not send.
        self.frames: list[tuple[str, int, str, str | None]] = []
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            code = frame.f_code
            self.frames.append(
                (code.co_filename, tb.tb_lineno, code.co_name, frame.f_globals.get("__name__"))
            )
            tb = tb.tb_next


CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
MAX_CHAIN = 10


class Snapshot:
    """What is copied from an exception in the host thread; holds no frame object.

    `chain[0]` is the reported exception; each later entry is the cause or context of the
    one before it, with the sentence Python prints between them.
    """

    __slots__ = ("chain", "code", "tags", "timestamp")

    def __init__(
        self,
        chain: list[tuple[Raised, str]],
        timestamp: float,
        tags: Mapping[str, object] | None,
        code: str | None,
    ) -> None:
        self.chain = chain
        self.timestamp = timestamp
        self.tags = tags
        self.code = code

    @classmethod
    def take(
        cls,
        exc: BaseException,
        tags: Mapping[str, object] | None = None,
        code: str | None = None,
    ) -> Snapshot:
        chain: list[tuple[Raised, str]] = []
        seen = set()
        current: BaseException | None = exc
        link = ""
        while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
            seen.add(id(current))
            chain.append((Raised(current), link))
            if current.__cause__ is not None:
                current, link = current.__cause__, CAUSE
            elif current.__context__ is not None and not current.__suppress_context__:
                current, link = current.__context__, CONTEXT
            else:
                current = None
        return cls(chain, time.time(), tags, code or _error_code(exc))

    @property
    def reported(self) -> Raised:
        return self.chain[0][0]


def _library_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    candidates = [paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    with contextlib.suppress(AttributeError):  # old virtualenv's site module has none
        candidates.extend(site.getsitepackages())
    candidates.append(getattr(site, "USER_SITE", None))
    prefixes = set()
    for candidate in candidates:
        if candidate:
            prefixes.add(os.path.join(os.path.realpath(candidate), ""))
            prefixes.add(os.path.join(os.path.abspath(candidate), ""))
    return tuple(sorted(prefixes))


class InApp:
    """Decides whether a frame is the service's own code.

    An `include` or `exclude` entry with a '/' is a path prefix (relative to the project
    root), otherwise a module prefix; include wins over exclude, both win over the rule
    that the standard library, site-packages and this client are not the service's code.
    """

    def __init__(self, root: str, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.root = os.path.join(os.path.abspath(root), "")
        self._include = tuple(include)
        self._exclude = tuple(exclude)
        self._libraries = _library_prefixes()

    def relative(self, filename: str) -> str:
        """The file as the repository knows it when it lies under the project root."""
        if self.root != os.sep and filename.startswith(self.root):
            return filename[len(self.root) :].replace(os.sep, "/")
        return filename

    @staticmethod
    def _matches(rules: tuple[str, ...], path: str, module: str | None) -> bool:
        for rule in rules:
            if "/" in rule:
                if path.startswith(rule.rstrip("/") + "/"):
                    return True
            elif module and (module == rule or module.startswith(rule + ".")):
                return True
        return False

    def __call__(self, filename: str, module: str | None) -> bool:
        path = self.relative(filename)
        if self._matches(self._include, path, module):
            return True
        if self._matches(self._exclude, path, module):
            return False
        if module and (module == _CLIENT_PACKAGE or module.startswith(_CLIENT_PACKAGE + ".")):
            return False
        if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            return False
        parts = filename.replace(os.sep, "/").split("/")
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        return not filename.startswith(self._libraries)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_middle(text: str, limit: int) -> str:
    """Keep both ends: the first frames say where it started, the last what failed."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - 64
    return f"{text[:head]}\n... [{len(text) - head - tail} characters clipped] ...\n{text[-tail:]}"


def _source_line(filename: str, line: int) -> str:
    return linecache.getline(filename, line).strip()


def _format_frames(frames: Sequence[tuple[str, int, str, str | None]]) -> list[str]:
    """Python's own layout, with its collapsing of recursion past three repeats."""
    lines: list[str] = []
    previous = None
    repeats = 0
    for filename, line, function, _ in frames:
        current = (filename, line, function)
        if current == previous:
            repeats += 1
            if repeats > 3:
                continue
        else:
            if repeats > 3:
                lines.append(f"  [Previous line repeated {repeats - 3} more times]\n")
            previous, repeats = current, 1
        text = f'  File "{filename}", line {line}, in {function}\n'
        source = _source_line(filename, line)
        if source:
            text += f"    {redact_code(source)}\n"
        lines.append(text)
    if repeats > 3:
        lines.append(f"  [Previous line repeated {repeats - 3} more times]\n")
    return lines


def format_traceback(snapshot: Snapshot) -> str:
    """The traceback as Python prints it; messages redacted, source lines token-redacted."""
    parts: list[str] = []
    for raised, link in reversed(snapshot.chain):
        if raised.frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(_format_frames(raised.frames))
        line = f"{raised.type}: {raised.message}" if raised.message else raised.type
        parts.append(redact(line) + "\n")
        parts.extend(redact(note) + "\n" for note in raised.notes)
        parts.append(link)
    return "".join(parts)


class EventBuilder:
    """Turns snapshots into JSON bodies for POST /v1/errors."""

    def __init__(
        self,
        service: str,
        release: str | None,
        environment: str | None,
        tags: Mapping[str, object],
        in_app: InApp,
    ) -> None:
        self.service = service
        self.release = release
        self.environment = environment
        self.tags = dict(tags)
        self.in_app = in_app

    def _frames(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        frames = []
        for filename, line, function, module in snapshot.reported.frames[-MAX_FRAMES:]:
            frame: dict[str, Any] = {
                "file": _clip(self.in_app.relative(filename), MAX_FILE_CHARS),
                "line": line,
                "function": _clip(function, MAX_NAME_CHARS),
                "in_app": self.in_app(filename, module),
            }
            if module:
                frame["module"] = _clip(module, MAX_NAME_CHARS)
            source = _source_line(filename, line)
            if source:
                frame["code"] = _clip(redact_code(source), MAX_CODE_CHARS)
            frames.append(frame)
        return frames

    def _tags(self, extra: Mapping[str, object] | None) -> dict[str, str]:
        merged = dict(self.tags)
        if extra:
            merged.update(extra)
        tags = {}
        for key, value in list(merged.items())[:MAX_TAGS]:
            if value is not None:
                text = REDACTED if is_secret_key(str(key)) else redact(str(value))
                tags[_clip(str(key), MAX_NAME_CHARS)] = _clip(text, MAX_TAG_CHARS)
        return tags

    def build(self, snapshot: Snapshot) -> dict[str, Any]:
        reported = snapshot.reported
        error: dict[str, Any] = {
            "type": _clip(reported.type, 250),
            "message": _clip(redact(reported.message), MAX_MESSAGE_CHARS),
        }
        if snapshot.code:
            error["code"] = snapshot.code[:32]
        event: dict[str, Any] = {
            "service": self.service,
            "error": error,
            "traceback": _clip_middle(format_traceback(snapshot), MAX_TRACEBACK_CHARS),
            "frames": self._frames(snapshot),
            "timestamp": datetime.fromtimestamp(snapshot.timestamp, timezone.utc).isoformat(),
            "tags": self._tags(snapshot.tags),
        }
        if self.release:
            event["release"] = self.release
        if self.environment:
            event["environment"] = self.environment
        return event


def _without_code(frame: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in frame.items() if key != "code"}


def encode(event: dict[str, Any], limit: int = MAX_EVENT_BYTES) -> bytes | None:
    """JSON bytes under `limit`, shrinking the bulky parts first; None if it cannot fit."""

    def dump() -> bytes:
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode("utf-8", "replace")

    body = dump()
    shrinks = [
        lambda: event.update(traceback=_clip_middle(event.get("traceback") or "", 16_000)),
        lambda: event.update(frames=[_without_code(f) for f in event["frames"][-50:]]),
        lambda: event["error"].update(message=_clip(event["error"]["message"], 2_000)),
        lambda: event.update(tags={}),
    ]
    for shrink in shrinks:
        if len(body) <= limit:
            break
        shrink()
        body = dump()
    return body if len(body) <= limit else None
