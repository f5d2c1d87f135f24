"""Where the evidence points: the files and functions of an incident, most likely fix first.

Pure functions over `Evidence` (what `investigate` and `find_related` gathered). The order:

1. Located in-app stack frames, innermost first. The innermost frame of the service's own
   code is where the error surfaced, and in most real bugs the fix is there or one call up;
   the outer frames are the path that led there.
2. Paths of suspect commits that touched only a few files, in the order `investigate`
   ranked them (the commit that last changed the failing line first). A focused commit that
   changed a frame's file and another file links the two; a sweep (an import, a merge, a
   reformat) touches everything and says nothing, so it is left out.
3. Related code from the index, by score: where the stack says nothing useful (an assertion
   in a test, an error raised by a library), retrieval on the error and the failing lines is
   the only pointer to the code under suspicion.
4. Test code last, wherever it was found. A failing test is the messenger: it shows what
   broke, and the fix almost always lands in the code it exercises.

Each place is listed once, at its best position.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from remedy.models import Evidence

FOCUSED_COMMIT_MAX_PATHS = 5
"""A suspect commit that changed more files than this is a sweep, not a pointer."""

_TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "spec", "specs"})


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


def _frame_files(evidence: Evidence) -> list[str]:
    return [frame.path for frame in evidence.frames if frame.found]


def _suspect_files(evidence: Evidence) -> list[str]:
    return [
        path
        for commit in evidence.suspect_commits
        if 0 < len(commit.paths) <= FOCUSED_COMMIT_MAX_PATHS
        for path in commit.paths
    ]


def _by_score(evidence: Evidence) -> list[tuple[str, str | None]]:
    # sorted() is stable: equal scores keep the order find_related gave them.
    related = sorted(evidence.related_code, key=lambda code: -code.score)
    return [(code.path, code.symbol) for code in related]


def _ranked(keys: Iterable[tuple[str, str]], limit: int) -> list[str]:
    """Unique keys in order, test files after the rest; `(path, key)` pairs in, keys out."""
    unique = dict.fromkeys(keys)
    code = [key for path, key in unique if not is_test_path(path)]
    tests = [key for path, key in unique if is_test_path(path)]
    return (code + tests)[:limit]


def ranked_files(evidence: Evidence, limit: int = 5) -> list[str]:
    """Repository paths the evidence points at, most likely fix location first."""
    paths = [
        *_frame_files(evidence),
        *_suspect_files(evidence),
        *(path for path, _ in _by_score(evidence)),
    ]
    return _ranked(((path, path) for path in paths), limit)


def ranked_chunks(evidence: Evidence, limit: int = 10) -> list[str]:
    """Functions the evidence points at as `path::symbol`, most likely fix location first.

    A frame gives the function name its traceback printed (`total`, never `Cart.total`:
    tracebacks carry no class), related code the index's qualified symbol (`Cart.total`).
    Module-level code and frames of synthetic functions (`<module>`, `<lambda>`,
    `<listcomp>`) name no function and are left out.
    """
    frames = [
        (frame.path, frame.function)
        for frame in evidence.frames
        if frame.found and frame.function and not frame.function.startswith("<")
    ]
    related = [(path, symbol) for path, symbol in _by_score(evidence) if symbol]
    return _ranked(((path, f"{path}::{symbol}") for path, symbol in [*frames, *related]), limit)
