"""Stack traces as text -> `Frame` lists, innermost frame last (the order Python prints).

Each language is one parser: `detect(text)` says whether the text is in its format,
`parse(text)` returns the frames and `exception(text)` the (type, message) of the exception
those frames belong to. `parse_traceback` asks the registered parsers in turn; parsers added
with `register_parser` are asked before the built-in Python, Java, Node.js and Go ones.

When a trace holds several chained exceptions, every parser keeps the *last block printed*:
- Python prints causes first, so that is the exception finally raised (the one the service
  saw); for an ExceptionGroup the group's frames are followed by those of its first
  sub-exception, recursively, so the innermost frame is where the first real failure happened.
- Java (`Caused by:`) and Node.js (`[cause]:`) print the wrapper first, so it is the root
  cause, which is where a fix belongs. Java's `... N more` is expanded: those are the last N
  frames of the enclosing trace. `Suppressed:` exceptions are ignored.
- Go prints the panicking goroutine first; its frames are used and the others ignored.

Every pattern here is linear in the size of the text: a 200 KB trace is ordinary input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from remedy.models import Frame

# Frame's own limits (remedy.models.Frame); parsed text is clipped rather than rejected.
_MAX_FILE = 1024
_MAX_NAME = 512
_MAX_CODE = 2000


class TracebackParser(Protocol):
    """One stack-trace format."""

    name: str

    def detect(self, text: str) -> bool:
        """True when `text` contains a trace in this format."""
        ...

    def parse(self, text: str) -> list[Frame]:
        """The frames of the trace, innermost last; empty when none can be read."""
        ...

    def exception(self, text: str) -> tuple[str, str] | None:
        """(type, message) of the exception the frames belong to, or None."""
        ...


def _frame(
    file: str,
    line: int | None = None,
    function: str | None = None,
    module: str | None = None,
    code: str | None = None,
) -> Frame:
    return Frame(
        file=file[:_MAX_FILE] or "<unknown>",
        line=line,
        function=function[:_MAX_NAME] if function else None,
        module=module[:_MAX_NAME] if module else None,
        code=code[:_MAX_CODE] if code else None,
    )


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# ---------------------------------------------------------------------------- Python

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
        return _frame(self.file, self.line, self.function, code=self.code)


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
        levels = _python_levels(_lines(text))
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
        levels = _python_levels(_lines(text))
        return _python_exception(_python_last_block(levels.get(0, [])).lines)


# ---------------------------------------------------------------------------- Java

_JAVA_DETECT = re.compile(r"^[ \t]+at [^\s()]+\([^()\n]*\)", re.MULTILINE)
_JAVA_FRAME = re.compile(r"^\s*at (?P<method>[^\s()]+)\((?P<source>[^()]*)\)")
_JAVA_MORE = re.compile(r"^\s*\.\.\. (?P<count>\d+) more$")
_JAVA_CAUSED_BY = re.compile(r"^Caused by: (?P<exception>.*)$")
_JAVA_SUPPRESSED = re.compile(r"^\s+Suppressed: ")
_JAVA_HIDDEN_CLASS = re.compile(r"/0x[0-9a-f]+(?=\.)")
# Throwable.toString(): the class's binary name (always qualified), then ": message".
_JAVA_EXCEPTION = re.compile(
    r'^(?:Exception in thread "[^"\n]*" )?'
    r"(?P<type>[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+)(?:: ?(?P<message>.*))?$"
)


@dataclass
class _JavaBlock:
    header: str | None
    frames: list[Frame] = field(default_factory=list)
    more: int = 0


def _java_frame(method_path: str, source: str) -> Frame:
    # "java.base/java.util.HashMap.get", "app//com.acme.Cart.total": module/loader prefixes go;
    # so does a hidden class's address ("Gen$$Lambda$14/0x0000000800c03000.apply").
    qualified = _JAVA_HIDDEN_CLASS.sub("", method_path).rsplit("/", 1)[-1]
    cls, _, method = qualified.rpartition(".")
    package, _, simple = cls.rpartition(".")
    file_name, _, line = source.partition(":")
    if not file_name or " " in file_name or "." not in file_name:
        file_name = simple.split("$", 1)[0] or qualified  # Native Method / Unknown Source
    file = f"{package.replace('.', '/')}/{file_name}" if package else file_name
    return _frame(file, int(line) if line.isdigit() else None, method or qualified, cls or None)


def _java_chain(lines: list[str]) -> list[_JavaBlock]:
    """The blocks of the last exception chain in the text, outermost first."""
    chain: list[_JavaBlock] = []
    header: str | None = None
    suppressed = False
    for line in lines:
        caused_by = _JAVA_CAUSED_BY.match(line)
        if caused_by:
            chain.append(_JavaBlock(caused_by["exception"]))
            suppressed = False
            continue
        if _JAVA_SUPPRESSED.match(line):
            suppressed = True
            continue
        if suppressed:
            continue
        frame = _JAVA_FRAME.match(line)
        if frame:
            if not chain:
                chain.append(_JavaBlock(header))
            chain[-1].frames.append(_java_frame(frame["method"], frame["source"]))
            continue
        more = _JAVA_MORE.match(line)
        if more and chain:
            chain[-1].more = int(more["count"])
        elif _JAVA_EXCEPTION.match(line):
            if chain and (chain[-1].frames or chain[-1].more):
                chain = []  # a new, unrelated trace starts: keep the last one
            header = line
    return chain


def _java_root(lines: list[str]) -> tuple[_JavaBlock, list[Frame]] | None:
    root: tuple[_JavaBlock, list[Frame]] | None = None
    enclosing: list[Frame] = []
    for block in _java_chain(lines):
        common = enclosing[len(enclosing) - block.more :] if block.more else []
        full = block.frames + common
        if full:
            root = (block, full)
        enclosing = full
    return root


class JavaParser:
    """JVM stack traces (Java, Kotlin, Scala): `at pkg.Class.method(File.java:42)`.

    `Frame.file` is the source path implied by the package (`com/acme/Cart.java`), which is
    what a repository search can find; `Frame.module` is the class, `Frame.function` the method.
    """

    name = "java"

    def detect(self, text: str) -> bool:
        return bool(_JAVA_DETECT.search(text))

    def parse(self, text: str) -> list[Frame]:
        root = _java_root(_lines(text))
        return list(reversed(root[1])) if root else []

    def exception(self, text: str) -> tuple[str, str] | None:
        root = _java_root(_lines(text))
        header = root[0].header if root else None
        match = _JAVA_EXCEPTION.match(header) if header else None
        return (match["type"], match["message"] or "") if match else None


# ---------------------------------------------------------------------------- Node.js

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
        return _frame(match["file"], int(match["line"]), function)
    native = location if location.startswith("<") else f"<{location}>"
    return _frame(native, None, function)


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
        root = _node_root(_lines(text))
        return list(reversed(root.frames)) if root else []

    def exception(self, text: str) -> tuple[str, str] | None:
        root = _node_root(_lines(text))
        match = _NODE_EXCEPTION.match(root.header) if root and root.header else None
        return (match["type"], match["message"] or "") if match else None


# ---------------------------------------------------------------------------- Go

_GO_DETECT = re.compile(r"^goroutine \d+ \[[^\]\n]*\]:$", re.MULTILINE)
_GO_FILE = re.compile(r"^\t(?P<file>.+):(?P<line>\d+)(?: \+0x[0-9a-f]+)?$")
_GO_PANIC = re.compile(r"^\s*(?P<kind>panic|fatal error): (?P<message>.*?)(?: \[recovered\])?$")
_GO_IN_GOROUTINE = re.compile(r" in goroutine \d+$")


def _go_frame(call: str, file: str, line: int) -> Frame:
    name = _GO_IN_GOROUTINE.sub("", call.strip().removeprefix("created by "))
    if name.endswith(")") and "(" in name:
        name = name[: name.rfind("(")]
    # "github.com/acme/shop/cart.(*Cart).Total": the package ends at the first dot after the
    # last slash.
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    module, function = (name[:dot], name[dot + 1 :]) if dot > 0 else (None, name)
    return _frame(file, line, function or name, module)


class GoParser:
    """Go panics: the first goroutine's `pkg.fn(args)` / `\\t/path/file.go:42 +0x1d` pairs."""

    name = "go"

    def detect(self, text: str) -> bool:
        return bool(_GO_DETECT.search(text))

    def parse(self, text: str) -> list[Frame]:
        lines = _lines(text)
        start = next((i for i, line in enumerate(lines) if _GO_DETECT.match(line)), None)
        if start is None:
            return []
        frames: list[Frame] = []
        call: str | None = None
        for line in lines[start + 1 :]:
            if not line.strip():
                break
            location = _GO_FILE.match(line)
            if location and call is not None:
                frames.append(_go_frame(call, location["file"], int(location["line"])))
                call = None
            elif not location:
                call = line
        return list(reversed(frames))

    def exception(self, text: str) -> tuple[str, str] | None:
        found: tuple[str, str] | None = None
        for line in _lines(text):
            if _GO_DETECT.match(line):
                break
            match = _GO_PANIC.match(line)
            if match:
                found = (match["kind"], match["message"])
        return found


# ---------------------------------------------------------------------------- registry


class ParserRegistry:
    """Parsers in the order they are asked; the first whose `detect` is true wins."""

    def __init__(self, parsers: Sequence[TracebackParser] = ()) -> None:
        self._parsers: list[TracebackParser] = list(parsers)

    @property
    def parsers(self) -> tuple[TracebackParser, ...]:
        return tuple(self._parsers)

    def register(self, parser: TracebackParser) -> None:
        """Ask `parser` before every parser already registered; it replaces one of the same name."""
        self.unregister(parser.name)
        self._parsers.insert(0, parser)

    def unregister(self, name: str) -> None:
        self._parsers = [parser for parser in self._parsers if parser.name != name]

    def parser_for(self, text: str) -> TracebackParser | None:
        return next((parser for parser in self._parsers if parser.detect(text)), None)

    def parse(self, text: str) -> list[Frame]:
        parser = self.parser_for(text)
        return parser.parse(text) if parser else []

    def exception(self, text: str) -> tuple[str, str] | None:
        parser = self.parser_for(text)
        return parser.exception(text) if parser else None


PARSERS = ParserRegistry([PythonParser(), JavaParser(), NodeParser(), GoParser()])


def register_parser(parser: TracebackParser) -> None:
    """Teach `parse_traceback` a format; it is tried before the built-in parsers."""
    PARSERS.register(parser)


def parse_traceback(text: str) -> list[Frame]:
    """Frames of the trace in `text`, innermost last; an unknown format gives []."""
    return PARSERS.parse(text)


def parse_exception_line(text: str) -> tuple[str, str] | None:
    """(type, message) of the exception whose frames `parse_traceback` returns.

    Python: the final exception line (`KeyError: 'sku'` -> ("KeyError", "'sku'"), a bare
    `ZeroDivisionError` -> ("ZeroDivisionError", "")). Java and Node.js: the root cause's
    line. Go: ("panic", message) or ("fatal error", message). Only the first line of a
    multi-line message is returned. None when no exception line can be found.
    """
    return PARSERS.exception(text)


# ---------------------------------------------------------------------------- in-app frames

_LIBRARY_PATH = re.compile(
    r"(?:^|/)(?:site-packages|dist-packages|node_modules)/"
    r"|/lib(?:64)?/python\d+(?:\.\d+)?/"
    r"|^/usr/lib/"
    r"|^/usr/local/go/src/"
    r"|/pkg/mod/"
    r"|^node:"
    r"|^internal/"  # Node.js < 16 printed its own modules without the "node:" scheme
    r"|^<"  # <frozen importlib._bootstrap>, <string>, <anonymous>, <native>
)
_LIBRARY_MODULES = (
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "jakarta.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "org.springframework.",
    "org.apache.",
)
_PACKAGE_ROOT = re.compile(r"^.*(?:^|/)(?:site-packages|dist-packages|node_modules)/")


def _is_in_app(frame: Frame, include: Sequence[str]) -> bool:
    file = frame.file.replace("\\", "/")
    module = frame.module or ""
    # An included prefix may name a package the team owns but installs as a dependency.
    package_path = _PACKAGE_ROOT.sub("", file)
    for prefix in include:
        if file.startswith(prefix) or package_path.startswith(prefix) or module.startswith(prefix):
            return True
    if _LIBRARY_PATH.search(file):
        return False
    if module == "runtime" or module.startswith("runtime/"):  # Go's runtime package
        return False
    return not module.startswith(_LIBRARY_MODULES)


def mark_in_app(frames: Sequence[Frame], include: Sequence[str] = ()) -> list[Frame]:
    """Decide `in_app` for frames that leave it None; frames that already say keep it.

    A frame is the service's own code unless it lies in installed packages (site-packages,
    dist-packages, node_modules, Go's module cache), a language's standard library, or is
    synthetic (`<frozen ...>`, `<string>`, `node:internal`); JVM frames of java., javax.,
    jdk., sun., kotlin., org.springframework., org.apache. (and a few more) classes are
    libraries. A frame whose file, module, or path inside an installed package starts with
    one of `include` is always in-app.
    """
    return [
        frame
        if frame.in_app is not None
        else frame.model_copy(update={"in_app": _is_in_app(frame, include)})
        for frame in frames
    ]
