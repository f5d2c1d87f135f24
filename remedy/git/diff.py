"""A commit's files as `remedy.patching` reads them, and git's diff of the edited files.

Files are read from the object store, never from a checkout, so a tracked symlink cannot make
a read leave the repository; the diff is built in a throwaway index, so no worktree changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from remedy import patching
from remedy.git.runner import OnWait, run_git
from remedy.models import Edit


def tree_entries(
    repo: Path,
    commit: str,
    paths: Sequence[str] = (),
    *,
    recursive: bool = False,
    on_wait: OnWait | None = None,
) -> dict[str, tuple[str, str]]:
    """path -> (mode, object sha) at `commit`: the given paths, or every file when recursive."""
    depth = ["-r"] if recursive else []
    out = run_git(
        ["-C", repo, "ls-tree", "-z", "--full-tree", *depth, commit, "--", *paths],
        on_wait=on_wait,
    ).stdout
    entries = {}
    for record in out.decode("utf-8", errors="surrogateescape").split("\0"):
        if not record:
            continue
        meta, _, name = record.partition("\t")
        mode, _kind, sha = meta.split(" ")
        entries[name] = (mode, sha)
    return entries


def read_blob(repo: Path, sha: str, *, on_wait: OnWait | None = None) -> bytes:
    return run_git(["-C", repo, "cat-file", "blob", sha], on_wait=on_wait).stdout


class CommitFiles:
    """The files of one commit of a local repository that `edits` name, as `patching.BaseFiles`."""

    def __init__(
        self, repo: Path, commit: str, edits: Sequence[Edit], *, on_wait: OnWait | None = None
    ) -> None:
        self._repo = repo
        self._on_wait = on_wait
        # One ls-tree for every file the edits name, instead of one per file.
        paths = [path for edit in edits if (path := patching.repo_path(edit.path))]
        self._entries = tree_entries(repo, commit, paths, on_wait=on_wait)

    def mode(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry[0] if entry else None

    def read(self, path: str) -> bytes:
        return read_blob(self._repo, self._entries[path][1], on_wait=self._on_wait)


def _stage(
    repo: Path,
    commit: str,
    files: Mapping[str, patching.EditedFile],
    env: Mapping[str, str],
    on_wait: OnWait | None,
) -> None:
    """`commit`'s tree with the edited files in the index that `env` names."""
    run_git(["-C", repo, "read-tree", commit], env=env, on_wait=on_wait)
    index_info = b""
    for path, edited in files.items():
        blob = run_git(
            ["-C", repo, "hash-object", "-w", "--no-filters", "--stdin"],
            input=edited.text.encode("utf-8"),
            on_wait=on_wait,
        ).text
        index_info += f"{edited.mode} {blob}\t{path}".encode() + b"\0"
    run_git(
        ["-C", repo, "update-index", "-z", "--index-info"],
        env=env,
        input=index_info,
        on_wait=on_wait,
    )


def edited_tree(
    repo: Path,
    commit: str,
    edits: Sequence[Edit],
    *,
    on_wait: OnWait | None = None,
) -> str:
    """The tree of `commit` with `edits` applied, written to `repo`'s object store.

    This is what is applied, never the stored diff: that one is redacted for people, so a
    credential on a context line would keep it from applying. EditRefused when the edits no
    longer apply to `commit`.
    """
    base = CommitFiles(repo, commit, edits, on_wait=on_wait)
    files = patching.apply_edits(edits, base, f"commit {commit[:12]}")
    with tempfile.TemporaryDirectory(prefix="remedy-tree-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _stage(repo, commit, files, env, on_wait)
        return run_git(["-C", repo, "write-tree"], env=env, on_wait=on_wait).text


def diff_against(
    repo: Path,
    commit: str,
    files: Mapping[str, patching.EditedFile],
    *,
    on_wait: OnWait | None = None,
) -> tuple[bytes, int, int]:
    """git's own diff of the edited files against `commit`, and the lines added and removed."""
    with tempfile.TemporaryDirectory(prefix="remedy-patch-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _stage(repo, commit, files, env, on_wait)
        common: list[str | Path] = [
            "-C", repo, "diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv",
            "--no-renames", "--no-relative", "--src-prefix=a/", "--dst-prefix=b/",
        ]  # fmt: skip
        diff = run_git([*common, commit], env=env, on_wait=on_wait).stdout
        numstat = run_git([*common, "--numstat", commit], env=env, on_wait=on_wait).text
    added = removed = 0
    for row in numstat.splitlines():
        plus, minus, _ = row.split("\t", 2)
        added += int(plus)
        removed += int(minus)
    return diff, added, removed
