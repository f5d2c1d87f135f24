"""V8 (Node.js) stack traces -> frames.

Node.js prints the wrapper first and its causes after (`[cause]:`), so the last block printed
is the root cause, which is where a fix belongs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from remedy.models import Frame
from remedy.stacktrace.common import make_frame, split_lines

_NODE_DETECT = re.compile(r"^[ \t]+at .*:\d+:\d+\)?(?: \{)?$", re.MULTILINE)
_NODE_FRAME = re.compile(r"^\s*at (?P<body>.+)$")
_NODE_CAUSE = re.compile(r"^\s*\[cause\]: (?P<exception>.*)$")
_NODE_EXCEPTION = re.compile(
    r"^\s*(?:Uncaught )?(?P<type>(?:[A-Za-z_$][\w$.]*)?(?:Error|Exception))"
    r"(?: \[[\w-]+\])?(?:: (?P<message>.*))?$"
)
_NODE_LINE_COL = re.compile(r"^(?P<file>.*):(?P<line>\d+):\d+$")
_NODE_LINE = re.compile(r"^(?P<file>.*):(?P<line>\d+)$")


def _node_frame(body: str) -> Frame:
    body = body.removesuffix(" {").strip().removeprefix("async ")
    function: str | None = None
    location = body
    if body.endswith(")"):
        depth = 0
        for index in range(len(body) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(body[index], 0)
            if depth == 0:
                function, location = body[:index].strip() or None, body[index + 1 : -1]
                break
    if location.startswith("eval at ") and "(" in location:
        # "eval at f (/srv/app/x.js:1:2), <anonymous>:3:4": report the code that called eval.
        location = location[location.rfind("(") + 1 :].split(")", 1)[0]
    location = location.removeprefix("file://")
    match = _NODE_LINE_COL.match(location) or _NODE_LINE.match(location)
    if match and match["file"]:
        return make_frame(match["file"], int(match["line"]), function)
    native = location if location.startswith("<") else f"<{location}>"
    return make_frame(native, None, function)


@dataclass
class _NodeBlock:
    header: str | None
    frames: list[Frame] = field(default_factory=list)


def _node_blocks(lines: list[str]) -> list[_NodeBlock]:
    blocks: list[_NodeBlock] = []
    since_frame: list[str] = []
    for line in lines:
        cause = _NODE_CAUSE.match(line)
        if cause:
            blocks.append(_NodeBlock(cause["exception"]))
            since_frame = []
            continue
        frame = _NODE_FRAME.match(line)
        if not frame:
            since_frame.append(line)
            continue
        header = _node_header(since_frame)
        if not blocks or header is not None:
            blocks.append(_NodeBlock(header))  # an error line between frames starts a new error
        blocks[-1].frames.append(_node_frame(frame["body"]))
        since_frame = []
    return blocks


def _node_header(preceding: list[str]) -> str | None:
    # Messages may span lines (assert's diffs): the nearest line shaped like "TypeError: ...".
    for line in reversed(preceding[-50:]):
        if _NODE_EXCEPTION.match(line):
            return line
    return None


def _node_root(lines: list[str]) -> _NodeBlock | None:
    return next((block for block in reversed(_node_blocks(lines)) if block.frames), None)


class NodeParser:
    """V8 stack traces: `at fn (/srv/app/x.js:42:13)`, `at /srv/app/x.js:1:2`, async frames."""

    name = "node"

    def detect(self, text: str) -> bool:
        return bool(_NODE_DETECT.search(text))

    def parse(self, text: str) -> list[Frame]:
        root = _node_root(split_lines(text))
        return list(reversed(root.frames)) if root else []

    def exception(self, text: str) -> tuple[str, str] | None:
        root = _node_root(split_lines(text))
        match = _NODE_EXCEPTION.match(root.header) if root and root.header else None
        return (match["type"], match["message"] or "") if match else None
