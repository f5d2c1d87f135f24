"""What the code index reads from git: the indexable files of a commit and their contents.

Reading goes through the one git runner; a file is named by its blob sha, so the index can
tell an unchanged file without reading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from remedy.git.runner import run_git
from remedy.index.chunking import skip_reason_for_path

READ_GROUP = 256


@dataclass(frozen=True)
class RepoFile:
    path: str
    blob: str
    size: int


def list_repo_files(repo: Path, commit: str, max_bytes: int) -> tuple[list[RepoFile], int]:
    """Indexable files at `commit` and how many tracked files were skipped by path rules,
    size or `.gitignore` (a tracked file can still match one, e.g. committed build output)."""
    out = run_git(["-C", repo, "ls-tree", "-r", "-l", "-z", "--end-of-options", commit]).stdout
    entries: list[RepoFile] = []
    ignore_files: list[RepoFile] = []
    for record in out.decode("utf-8", errors="surrogateescape").split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, sha, size = meta.split()
        if kind != "blob" or mode == "120000":
            continue
        entry = RepoFile(path, sha, int(size))
        if path == ".gitignore" or path.endswith("/.gitignore"):
            ignore_files.append(entry)
        entries.append(entry)
    specs = _ignore_specs(repo, ignore_files)
    kept = [
        e
        for e in entries
        if skip_reason_for_path(e.path, e.size, max_bytes) is None and not _ignored(specs, e.path)
    ]
    return kept, len(entries) - len(kept)


def _ignore_specs(repo: Path, files: Sequence[RepoFile]) -> list[tuple[str, pathspec.PathSpec]]:
    blobs = read_blobs(repo, [f.blob for f in files])
    specs: list[tuple[str, pathspec.PathSpec]] = []
    for f in files:
        prefix = f.path[: -len(".gitignore")]
        lines = blobs.get(f.blob, b"").decode("utf-8", errors="replace").splitlines()
        specs.append((prefix, pathspec.GitIgnoreSpec.from_lines(lines)))
    return specs


def _ignored(specs: Sequence[tuple[str, pathspec.PathSpec]], path: str) -> bool:
    return any(
        path.startswith(prefix) and spec.match_file(path[len(prefix) :]) for prefix, spec in specs
    )


def read_blobs(repo: Path, shas: Iterable[str]) -> dict[str, bytes]:
    """Contents of the given blobs, in one `git cat-file --batch` per group."""
    wanted = list(dict.fromkeys(shas))
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), READ_GROUP):
        group = wanted[start : start + READ_GROUP]
        data = run_git(
            ["-C", repo, "cat-file", "--batch"], input="".join(f"{s}\n" for s in group).encode()
        ).stdout
        offset = 0
        for sha in group:
            header_end = data.index(b"\n", offset)
            header = data[offset:header_end].split()
            if len(header) < 3:  # "<sha> missing"
                offset = header_end + 1
                continue
            size = int(header[2])
            found[sha] = data[header_end + 1 : header_end + 1 + size]
            offset = header_end + 1 + size + 1
    return found
