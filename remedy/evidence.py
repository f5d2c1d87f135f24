"""Where the evidence points: the code an incident's prompts show, most likely fix first.

One ranking serves the product and the benchmark. `ranked_windows` orders the code windows
the diagnosis and regression-test prompts show up front (remedy/llm/prompts.py);
`ranked_files` and `ranked_chunks` are views of that same order, which bench/localize.py
scores. The order:

1. Located in-app stack frames, innermost first. The innermost frame of the service's own
   code is where the error surfaced, and in most real bugs the fix is there or one call up;
   the outer frames are the path that led there.
2. Code the frames call (remedy.calls), in the order they call it: a test fails on what the
   code under test returned, a frame hands its work to a helper that is never on the stack.
3. Related code from the index, by score: where the stack says nothing useful (an assertion
   in a test, an error raised by a library), retrieval on the error and the failing lines is
   the only pointer to the code under suspicion.
4. Test code last, wherever it was found. A failing test is the messenger: it shows what
   broke, and the fix almost always lands in the code it exercises.

Suspect commits name files but no lines; the prompts show them in a section of their own.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from remedy.models import CalledCode, Evidence, FrameEvidence, RelatedCode

MAX_WINDOW_LINES = 80
WINDOW_RADIUS = 12
MAX_FRAME_WINDOWS = 6
MAX_CALLED_WINDOWS = 3
MAX_RELATED_WINDOWS = 3

_TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "spec", "specs"})


@dataclass(frozen=True)
class WindowSpec:
    """A slice of a file the prompt should show: lines start..end (1-based, inclusive).

    `symbol` is the function it shows, when it names one: the name a traceback printed
    (`total`, never `Cart.total`: tracebacks carry no class) or the index's qualified symbol.
    """

    path: str
    start: int
    end: int
    note: str
    symbol: str | None = None


def is_test_path(path: str) -> bool:
    """A test file by the common conventions: a tests/ folder, test_*.py, *_test.py, conftest."""
    parts = path.split("/")
    name = parts[-1]
    stem = posixpath.splitext(name)[0]
    return (
        bool(_TEST_DIRS.intersection(parts[:-1]))
        or stem.startswith("test_")
        or stem.endswith(("_test", "_tests", ".test", ".spec"))
        or stem == "conftest"
    )


def _frame_window(frame: FrameEvidence, line: int) -> WindowSpec:
    start = frame.start_line or max(line - WINDOW_RADIUS, 1)
    end = frame.end_line or line + WINDOW_RADIUS
    start, end = max(start, line - MAX_WINDOW_LINES // 2), min(end, line + MAX_WINDOW_LINES // 2)
    # Module-level code and synthetic functions (`<module>`, `<lambda>`) name no function.
    function = frame.function if frame.function and not frame.function.startswith("<") else None
    return WindowSpec(
        frame.path, max(start, 1), end, f"frame {frame.function or '?'}, line {line}", function
    )


def _called_window(called: CalledCode) -> WindowSpec:
    end = min(called.end_line, called.start_line + MAX_WINDOW_LINES - 1)
    note = f"called from {called.caller}"
    return WindowSpec(called.path, max(called.start_line, 1), end, note, called.symbol)


def _related_window(related: RelatedCode) -> WindowSpec:
    end = min(related.end_line, related.start_line + MAX_WINDOW_LINES - 1)
    note = f"related (score {related.score:.2f})"
    return WindowSpec(related.path, max(related.start_line, 1), end, note, related.symbol)


def ranked_windows(evidence: Evidence) -> list[WindowSpec]:
    """The code worth showing up front, most likely fix location first (the module's order)."""
    frames = [
        _frame_window(frame, frame.line or 1)
        for frame in evidence.frames  # innermost first, as investigate lists them
        if frame.found and frame.line is not None
    ][:MAX_FRAME_WINDOWS]
    # sorted() is stable: equal scores keep the order find_related gave them.
    related = sorted(evidence.related_code, key=lambda code: (is_test_path(code.path), -code.score))
    called = [code for code in evidence.called_code if not is_test_path(code.path)]
    windows = [
        *frames,
        *(_called_window(code) for code in called[:MAX_CALLED_WINDOWS]),
        *(_related_window(code) for code in related[:MAX_RELATED_WINDOWS]),
    ]
    return sorted(windows, key=lambda window: is_test_path(window.path))


def ranked_files(evidence: Evidence, limit: int = 5) -> list[str]:
    """The files of `ranked_windows`, each once at its best position."""
    return list(dict.fromkeys(window.path for window in ranked_windows(evidence)))[:limit]


def ranked_chunks(evidence: Evidence, limit: int = 10) -> list[str]:
    """The functions of `ranked_windows` as `path::symbol`, each once at its best position."""
    chunks = (f"{w.path}::{w.symbol}" for w in ranked_windows(evidence) if w.symbol)
    return list(dict.fromkeys(chunks))[:limit]
