"""Exact-text edits: the rules every step that applies a diagnosis shares, with no I/O.

A diagnosis proposes edits as (path, search, replace). They apply only when each one is
unambiguous: the path stays inside the repository and out of `.git`, the file is a regular
UTF-8 file at the base, each search text occurs exactly once in the file as it is at the base,
edits of one file apply in order without overlapping, and together they change something.

`prepare_patch` reads the base from a local commit and `open_pull_request` from a commit
through GitHub's API; each passes its reader as a `BaseFiles`, so both refuse the same edits
with the same words. Diagnosis checks a model's answer by the same rules through `try_edits`,
which lists every refused edit instead of stopping at the first.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from remedy.models import Edit

# Plain and executable files; symlinks (120000) and submodules (160000) are never edited.
REGULAR_FILE_MODES = frozenset({"100644", "100755"})


class EditRefused(ValueError):
    """An edit cannot apply; the message names the edit, the rule it breaks and the fix.

    `edit` is the refused edit's number (from 1), None when the edits as a whole are refused.
    """

    def __init__(self, message: str, edit: int | None = None) -> None:
        super().__init__(message)
        self.edit = edit


@dataclass
class EditedFile:
    mode: str
    original: str
    text: str


class BaseFiles(Protocol):
    """The files of the commit the edits apply to, read however the caller reads them."""

    def mode(self, path: str) -> str | None:
        """The git file mode of `path` ("100644", "040000", ...), or None if it is absent."""
        ...

    def read(self, path: str) -> bytes:
        """The content of `path`, a regular file."""
        ...


def repo_path(path: str) -> str | None:
    """`path` normalised relative to the repository root, or None if it leaves it or enters
    `.git`."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return None
    normal = posixpath.normpath(path)
    if normal in {".", ".."} or normal.startswith("../") or ".git" in normal.split("/"):
        return None
    return normal


def _find_once(text: str, search: str) -> int | str:
    """The offset of the only occurrence of `search`, or a word for how often it occurs."""
    first = text.find(search)
    if first < 0:
        return "not found"
    if text.find(search, first + 1) >= 0:
        return "found more than once"
    return first


def _load(base: BaseFiles, path: str, label: str, where: str, number: int) -> EditedFile:
    mode = base.mode(path)
    if mode is None:
        raise EditRefused(f"{label}: no such file at {where} (edit an existing file)", number)
    if mode not in REGULAR_FILE_MODES:
        raise EditRefused(f"{label}: not a regular file at {where} (mode {mode})", number)
    try:
        original = base.read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise EditRefused(f"{label}: the file at {where} is not UTF-8 text", number) from None
    return EditedFile(mode, original, original)


def _refusals(
    edits: Sequence[Edit], base: BaseFiles, where: str, files: dict[str, EditedFile]
) -> Iterator[EditRefused]:
    """Apply each edit that can apply into `files` (by normalised path), in order, and yield
    the refusal of each one that cannot. Lazy: a caller that stops at the first refusal reads
    no file past it."""
    for number, edit in enumerate(edits, start=1):
        label = f"edit {number} ({edit.path})"
        path = repo_path(edit.path)
        if path is None:
            yield EditRefused(
                f"{label}: the path must be relative and stay inside the repository", number
            )
            continue
        if path not in files:
            try:
                files[path] = _load(base, path, label, where, number)
            except EditRefused as refusal:
                yield refusal
                continue
        edited = files[path]
        found = _find_once(edited.original, edit.search)
        if isinstance(found, str):
            yield EditRefused(
                f"{label}: the search text is {found} in the file at {where} "
                f"(it must occur exactly once)",
                number,
            )
            continue
        # Once in the original but not exactly once now: an earlier edit of the file reached it.
        offset = _find_once(edited.text, edit.search)
        if isinstance(offset, str):
            yield EditRefused(
                f"{label}: the search text overlaps an earlier edit of the same file", number
            )
            continue
        edited.text = edited.text[:offset] + edit.replace + edited.text[offset + len(edit.search) :]


def apply_edits(edits: Sequence[Edit], base: BaseFiles, where: str) -> dict[str, EditedFile]:
    """The files the edits change, by normalised path; EditRefused names the first edit that
    cannot apply. `where` names the base in messages ("commit 0123456789ab")."""
    files: dict[str, EditedFile] = {}
    for refusal in _refusals(edits, base, where, files):
        raise refusal
    changed = {path: f for path, f in files.items() if f.text != f.original}
    if not changed:
        raise EditRefused("the edits change nothing (each replacement equals its search text)")
    return changed


def try_edits(
    edits: Sequence[Edit], base: BaseFiles, where: str
) -> tuple[dict[str, EditedFile], list[EditRefused]]:
    """Every file the edits touch with the edits that apply applied, and the refusal of each
    edit that does not (in edit order): for telling a model all its mistakes at once."""
    files: dict[str, EditedFile] = {}
    refusals = list(_refusals(edits, base, where, files))
    return files, refusals
