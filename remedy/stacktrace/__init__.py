"""Stack traces as text -> `Frame` lists, innermost frame last (the order Python prints).

Each language is one parser (`python`, `java`, `node`, `go` in this package): `detect(text)`
says whether the text is in its format, `parse(text)` returns the frames and `exception(text)`
the (type, message) of the exception those frames belong to. `parse_traceback` asks the
registered parsers in turn; parsers added with `register_parser` are asked before the built-in
Python, Java, Node.js and Go ones.

When a trace holds several chained exceptions, every parser keeps the *last block printed*;
each parser's module says what that block is in its language. `mark_in_app` (`in_app`) tells
the service's own frames from libraries'.

Every pattern here is linear in the size of the text: a 200 KB trace is ordinary input.
"""

from __future__ import annotations

from collections.abc import Sequence

from remedy.models import Frame
from remedy.stacktrace.common import TracebackParser
from remedy.stacktrace.go import GoParser
from remedy.stacktrace.in_app import mark_in_app
from remedy.stacktrace.java import JavaParser
from remedy.stacktrace.node import NodeParser
from remedy.stacktrace.python import PYTHON_CHAIN_SEPARATORS, PYTHON_TRACEBACK_HEADER, PythonParser

__all__ = [
    "PARSERS",
    "PYTHON_CHAIN_SEPARATORS",
    "PYTHON_TRACEBACK_HEADER",
    "GoParser",
    "JavaParser",
    "NodeParser",
    "ParserRegistry",
    "PythonParser",
    "TracebackParser",
    "mark_in_app",
    "parse_exception_line",
    "parse_traceback",
    "register_parser",
]


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
