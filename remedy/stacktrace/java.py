"""JVM stack traces (Java, Kotlin, Scala) -> frames.

Java prints the wrapper first and its causes after (`Caused by:`), so the last block printed
is the root cause, which is where a fix belongs. `... N more` is expanded: those are the last
N frames of the enclosing trace. `Suppressed:` exceptions are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from remedy.models import Frame
from remedy.stacktrace.common import make_frame, split_lines

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
    return make_frame(file, int(line) if line.isdigit() else None, method or qualified, cls or None)


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
        root = _java_root(split_lines(text))
        return list(reversed(root[1])) if root else []

    def exception(self, text: str) -> tuple[str, str] | None:
        root = _java_root(split_lines(text))
        header = root[0].header if root else None
        match = _JAVA_EXCEPTION.match(header) if header else None
        return (match["type"], match["message"] or "") if match else None
