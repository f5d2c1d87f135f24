"""CPython tracebacks -> frames.

Python prints causes first, so the last block printed is the exception finally raised (the one
the service saw); for an ExceptionGroup the group's frames are followed by those of its first
sub-exception, recursively, so the innermost frame is where the first real failure happened.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from remedy.models import Frame
from remedy.stacktrace.common import make_frame, split_lines

# Python's own markers; the log watcher finds plain tracebacks in log files by them.
PYTHON_TRACEBACK_HEADER = "Traceback (most recent call last):"
_PY_GROUP_HEADER = "Exception Group Traceback (most recent call last):"
PYTHON_CHAIN_SEPARATORS = frozenset(
    {
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
_PY_DETECT = re.compile(
    r"^[ |+]*(?:Exception Group )?Traceback \(most recent call last\):"
    r'|^[ |]*File "[^\n]*", line \d+',
    re.MULTILINE,
)
_PY_FILE = re.compile(
    r'^(?P<indent> *)File "(?P<file>.+)", line (?P<line>\d+)(?:, in (?P<function>.+))?$'
)
_PY_CARETS = re.compile(r"^[\s~^]+$")
_PY_REPEATED = re.compile(r"^\s*\[Previous line repeated \d+ more times?\]$")
_PY_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.<>]*)(?::(?: (?P<message>.*))?)?$")
# ExceptionGroup rendering: "  + Exception Group Traceback", "  | content", "  +-+---- 1 ----".
_PY_GROUP_LINE = re.compile(r"^(?P<indent> *)(?P<mark>[|+])(?P<rest>.*)$")
_PY_GROUP_SEPARATOR = re.compile(r"^(?P<nested>-\+)?-+(?: (?P<index>\d+|\.\.\.) -+)?$")


def _python_levels(lines: Iterable[str]) -> dict[int, list[str]]:
    """Split a rendered traceback by ExceptionGroup nesting depth.

    Depth 0 holds ordinary lines and the outermost group (they form one chain); depth N >= 2
    holds the lines of the *first* sub-exception at each level, the prefix stripped.
    """
    levels: dict[int, list[str]] = {}
    indices: dict[int, int] = {}
    in_group = False
    for raw in lines:
        match = _PY_GROUP_LINE.match(raw)
        depth, content = 0, raw
        if match:
            indent, mark, rest = len(match["indent"]), match["mark"], match["rest"]
            separator = _PY_GROUP_SEPARATOR.match(rest) if mark == "+" else None
            if mark == "+" and rest.strip() == _PY_GROUP_HEADER:
                in_group = True
                depth, content = max(indent // 2, 1), _PY_GROUP_HEADER
            elif in_group and separator:
                # "+-+--- 1 ---" opens the first sub-exception one level down; "+--- 2 ---"
                # moves to the next sibling; "+-------" closes the level.
                level = max(indent // 2 + (1 if separator["nested"] else 0), 2)
                for deeper in [d for d in indices if d >= level]:
                    del indices[deeper]
                if separator["index"]:
                    indices[level] = int(separator["index"]) if separator["index"].isdigit() else 0
                continue
            elif in_group and mark == "|":
                depth = max(indent // 2, 1)
                content = rest[1:] if rest.startswith(" ") else rest
        if depth >= 2 and any(indices.get(level) != 1 for level in range(2, depth + 1)):
            continue
        levels.setdefault(0 if depth <= 1 else depth, []).append(content)
    return levels


@dataclass
class _PythonBlock:
    lines: list[str]
    is_group: bool


def _python_last_block(lines: list[str]) -> _PythonBlock:
    for index in range(len(lines) - 1, -1, -1):
        content = lines[index].strip()
        if (
            content in (PYTHON_TRACEBACK_HEADER, _PY_GROUP_HEADER)
            or content in PYTHON_CHAIN_SEPARATORS
        ):
            return _PythonBlock(lines[index + 1 :], content == _PY_GROUP_HEADER)
    return _PythonBlock(lines, False)


@dataclass
class _PendingFrame:
    file: str
    line: int
    function: str | None
    indent: int
    code: str | None = None

    def frame(self) -> Frame:
        return make_frame(self.file, self.line, self.function, code=self.code)


def _python_frames(lines: list[str]) -> list[Frame]:
    frames: list[Frame] = []
    pending: _PendingFrame | None = None
    for line in lines:
        match = _PY_FILE.match(line)
        if match:
            if pending is not None:
                frames.append(pending.frame())
            function = match["function"]
            pending = _PendingFrame(
                match["file"],
                int(match["line"]),
                function.strip() if function else None,
                len(match["indent"]),
            )
            continue
        if pending is None:
            continue
        repeated = bool(_PY_REPEATED.match(line))
        stripped = line.strip()
        # Source and caret lines are indented deeper than their "File" line; anything else
        # (the exception line, a chain separator, a blank line) ends the frame.
        if not stripped or (len(line) - len(line.lstrip(" ")) <= pending.indent and not repeated):
            frames.append(pending.frame())
            pending = None
        elif pending.code is None and not repeated and not _PY_CARETS.match(line):
            pending.code = stripped
    if pending is not None:
        frames.append(pending.frame())
    return frames


def _python_exception(lines: list[str]) -> tuple[str, str] | None:
    # The exception line is the first line after the frames that is indented less than the
    # "File" lines (column 0, unless a logger indented the whole traceback).
    file_indent, start = 1, 0
    for index, line in enumerate(lines):
        match = _PY_FILE.match(line)
        if match:
            file_indent, start = len(match["indent"]), index + 1
    for line in lines[start:]:
        stripped = line.lstrip(" ")
        if not stripped or len(line) - len(stripped) >= file_indent:
            continue
        match = _PY_EXCEPTION.match(stripped)
        if match:
            return match["type"], match["message"] or ""
    return None


class PythonParser:
    """CPython tracebacks: chained exceptions, 3.11+ carets, ExceptionGroups."""

    name = "python"

    def detect(self, text: str) -> bool:
        return bool(_PY_DETECT.search(text))

    def parse(self, text: str) -> list[Frame]:
        levels = _python_levels(split_lines(text))
        frames: list[Frame] = []
        depth = 0
        while depth in levels:
            block = _python_last_block(levels[depth])
            frames.extend(_python_frames(block.lines))
            if not block.is_group:
                break
            depth = 2 if depth == 0 else depth + 1
        return frames

    def exception(self, text: str) -> tuple[str, str] | None:
        levels = _python_levels(split_lines(text))
        return _python_exception(_python_last_block(levels.get(0, [])).lines)
