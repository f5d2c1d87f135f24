"""The mirror cache and the incident worktree.

Every repository is fetched into one bare mirror under `<home>/mirrors` (cloned once, then
only fetched) and each incident gets a detached worktree of it at the deployed commit. Git
itself only ever sees the redacted URL on its command line and in the mirror's config; the
credentials travel in the environment (see `Mirror.remote_env`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.exceptions import ApplicationError

from remedy.config import ConfigError, RemedyConfig
from remedy.git.runner import (
    FULL_SHA,
    HEARTBEAT_INTERVAL_S,
    OnWait,
    git_text,
    redact_location,
    resolve_commit,
    run_git,
)


@dataclass(frozen=True)
class Mirror:
    """The bare mirror of one service's repository. `location` may hold credentials."""

    service: str
    location: str = field(repr=False)
    path: Path
    lock_path: Path

    @property
    def public_location(self) -> str:
        return redact_location(self.location)

    @property
    def remote_env(self) -> dict[str, str]:
        """What lets a git command given `public_location` reach the remote with credentials.

        The real URL travels as a `url.<real>.insteadOf` rule in the environment, which only
        this user can read, never in argv (world-readable in /proc) or the mirror's config.
        """
        public = self.public_location
        if public == self.location:
            return {}
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.{self.location}.insteadOf",
            "GIT_CONFIG_VALUE_0": public,
        }


def mirror_for(config: RemedyConfig, service: str) -> Mirror:
    """Locate the mirror of `service`'s repository (a slug plus a short hash of its location)."""
    try:
        location = config.repo_location(service)
    except ConfigError as exc:
        raise ApplicationError(str(exc), type="ConfigError", non_retryable=True) from None
    public = redact_location(location)
    last = public.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
    slug = re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")[:40] or "repo"
    name = f"{slug}-{hashlib.sha256(public.encode()).hexdigest()[:12]}"
    root = config.home_dir / "mirrors"
    return Mirror(service, location, root / f"{name}.git", root / f"{name}.lock")


@contextlib.contextmanager
def locked(mirror: Mirror, *, on_wait: OnWait | None = None) -> Iterator[None]:
    """Serialise every writer of one mirror, across threads and worker processes."""
    mirror.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.lock_path, "a") as handle:
        beat = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - beat >= HEARTBEAT_INTERVAL_S:
                    if on_wait is not None:
                        on_wait(f"waiting for the mirror of {mirror.service}")
                    beat = time.monotonic()
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_mirror(mirror: Mirror, timeout: float, *, on_wait: OnWait | None = None) -> None:
    """Clone the mirror the first time, fetch afterwards. The caller holds `locked(mirror)`."""
    if mirror.path.is_dir():
        run_git(
            ["-C", mirror.path, "fetch", "--prune", "--quiet", "--end-of-options",
             mirror.public_location, "+refs/*:refs/*"],
            env=mirror.remote_env,
            timeout=timeout,
            on_wait=on_wait,
        )  # fmt: skip
        return
    # Clone beside the final path and rename, so a crash never leaves a half mirror in use.
    partial = mirror.path.with_name(f".{mirror.path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    run_git(
        ["clone", "--mirror", "--quiet", "--end-of-options", mirror.public_location, partial],
        env=mirror.remote_env,
        timeout=timeout,
        on_wait=on_wait,
    )
    os.rename(partial, mirror.path)


def update_unless_mirrored(
    mirror: Mirror, rev: str | None, timeout: float, *, on_wait: OnWait | None = None
) -> None:
    """Fetch, unless `rev` is a full sha the mirror already holds: one cannot move, so it
    needs no network. The caller holds `locked(mirror)`."""
    known = (
        rev is not None
        and FULL_SHA.match(rev) is not None
        and mirror.path.is_dir()
        and resolve_commit(mirror.path, rev, on_wait=on_wait) == rev
    )
    if not known:
        update_mirror(mirror, timeout, on_wait=on_wait)


def ensure_commit(
    mirror: Mirror, commit: str, timeout: float, *, on_wait: OnWait | None = None
) -> None:
    """Make sure the mirror exists and holds `commit`, fetching only when it does not."""
    with locked(mirror, on_wait=on_wait):
        if mirror.path.is_dir() and resolve_commit(mirror.path, commit, on_wait=on_wait) == commit:
            return
        update_mirror(mirror, timeout, on_wait=on_wait)
    if resolve_commit(mirror.path, commit, on_wait=on_wait) != commit:
        raise ApplicationError(
            f"commit {commit} of service {mirror.service!r} is no longer in "
            f"{mirror.public_location} (was it force-pushed away? restore it, or report the "
            f"error again so a new incident syncs the current code)",
            type="CommitNotFound",
            non_retryable=True,
        )


def _worktree_head(path: Path, mirror: Path, on_wait: OnWait | None) -> str | None:
    """HEAD of `path` if it is a worktree of `mirror`; None for anything else."""
    if not (path / ".git").is_file():
        return None
    result = run_git(
        ["-C", path, "rev-parse", "--path-format=absolute", "--git-common-dir", "HEAD"],
        check=False,
        on_wait=on_wait,
    )
    lines = result.text.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return None
    if Path(lines[0]).resolve() != mirror.resolve():
        return None
    return lines[1]


def ensure_worktree(
    mirror: Path, path: Path, commit: str, *, on_wait: OnWait | None = None
) -> None:
    """A clean detached worktree of `mirror` at `path` on `commit`, reusing one already there."""
    head = _worktree_head(path, mirror, on_wait)
    if head == commit:
        return
    if head is not None:
        git_text(path, "reset", "--quiet", "--hard", commit, on_wait=on_wait)
        git_text(path, "clean", "-ffdxq", on_wait=on_wait)
        return
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    git_text(mirror, "worktree", "prune", on_wait=on_wait)
    git_text(mirror, "worktree", "add", "--quiet", "--detach", path, commit, on_wait=on_wait)
