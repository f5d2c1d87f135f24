"""What every traceback parser shares: the parser protocol, clipped frames, line splitting."""

from __future__ import annotations

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


def make_frame(
    file: str,
    line: int | None = None,
    function: str | None = None,
    module: str | None = None,
    code: str | None = None,
) -> Frame:
    """A `Frame` with its text clipped to Frame's limits rather than rejected."""
    return Frame(
        file=file[:_MAX_FILE] or "<unknown>",
        line=line,
        function=function[:_MAX_NAME] if function else None,
        module=module[:_MAX_NAME] if module else None,
        code=code[:_MAX_CODE] if code else None,
    )


def split_lines(text: str) -> list[str]:
    """Lines without trailing whitespace, so patterns can anchor on `$`."""
    return [line.rstrip() for line in text.splitlines()]
