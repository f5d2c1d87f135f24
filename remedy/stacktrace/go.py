"""Go panics -> frames.

Go prints the panicking goroutine first; its frames are used and the others ignored.
"""

from __future__ import annotations

import re

from remedy.models import Frame
from remedy.stacktrace.common import make_frame, split_lines

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
    return make_frame(file, line, function or name, module)


class GoParser:
    """Go panics: the first goroutine's `pkg.fn(args)` / `\\t/path/file.go:42 +0x1d` pairs."""

    name = "go"

    def detect(self, text: str) -> bool:
        return bool(_GO_DETECT.search(text))

    def parse(self, text: str) -> list[Frame]:
        lines = split_lines(text)
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
        for line in split_lines(text):
            if _GO_DETECT.match(line):
                break
            match = _GO_PANIC.match(line)
            if match:
                found = (match["kind"], match["message"])
        return found
