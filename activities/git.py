"""Git: the mirror cache, the incident worktree, evidence from history, the patch as a diff.

Every repository is fetched into one bare mirror under `<home>/mirrors` (cloned once, then
only fetched) and each incident gets a detached worktree of it at the deployed commit.
Git runs as a subprocess with a scrubbed, non-interactive environment; network commands
heartbeat while they run and are killed at `limits.sync_timeout_s`. A repository URL may
carry credentials, so every location and every git message is redacted before it can reach
a result, an exception or a log line; git itself only ever sees the redacted URL on its
command line and in the mirror's config (see `Mirror.remote_env`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedy import names, patching
from remedy.artifacts import ArtifactStore
from remedy.config import ConfigError, RemedyConfig
from remedy.models import (
    Edit,
    Evidence,
    Frame,
    FrameEvidence,
    InvestigateRequest,
    PatchRequest,
    PatchResult,
    SuspectCommit,
    SyncRequest,
    Worktree,
)

HEARTBEAT_INTERVAL_S = 2.0
# Local commands (blame, log, worktree add on a large checkout) get a generous bound; the
# network ones use `limits.sync_timeout_s`.
LOCAL_GIT_TIMEOUT_S = 600.0

WINDOW_RADIUS = 10
BLAME_RADIUS = 2
LOG_DEPTH = 10
MAX_SUSPECTS = 5
# Bounds that keep the returned Evidence a few KB whatever the stack or repository size.
MAX_ANALYSED_FRAMES = 10
MAX_REPORTED_FRAMES = 20
MAX_SUSPECT_PATHS = 10
MAX_SUBJECT_CHARS = 200
MAX_ARTIFACT_LINE_CHARS = 500

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_VENDORED = frozenset({"site-packages", "dist-packages", "node_modules", ".venv", "venv"})
# Variables a deployment legitimately sets to reach its git host; every other GIT_* variable
# could point git at another repository, index or identity, so it is dropped.
_KEPT_GIT_VARS = frozenset(
    {
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_PROXY_COMMAND",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
    }
)
# Failures that another attempt cannot fix: credentials, a wrong URL, a missing repository.
_PERMANENT_GIT_ERRORS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "permission denied",
    "repository not found",
    "does not appear to be a git repository",
    "does not exist",
    "not a git repository",
    "invalid username or password",
)


# ---------------------------------------------------------------------------- running git


def redact_location(text: str) -> str:
    """Hide the userinfo (`user:token@`) of every URL in `text`."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


class GitError(Exception):
    """A git command failed; the message is already redacted."""

    def __init__(self, command: str, returncode: int, stderr: str) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = redact_location(stderr.strip())
        tail = " | ".join(self.stderr.splitlines()[-3:]) or "no error output"
        super().__init__(f"git {command} failed (exit {returncode}): {tail}")

    @property
    def permanent(self) -> bool:
        text = self.stderr.lower()
        return any(marker in text for marker in _PERMANENT_GIT_ERRORS)


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace").strip()


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment made safe for git: no prompts, no askpass, no redirection."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in _KEPT_GIT_VARS
    }
    env.pop("SSH_ASKPASS", None)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            # An empty GIT_ASKPASS wins over core.askPass and SSH_ASKPASS: no helper runs.
            "GIT_ASKPASS": "",
            "GCM_INTERACTIVE": "never",
            "GIT_PAGER": "cat",
            # Paths from stack frames and edits are file names, never glob patterns.
            "GIT_LITERAL_PATHSPECS": "1",
            "LC_ALL": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)


def _subcommand(args: Sequence[str]) -> str:
    """The git sub-command in `args`, skipping the global `-C DIR` and `-c KEY=VALUE`."""
    rest = list(args)
    while rest and rest[0] in {"-C", "-c"}:
        rest = rest[2:]
    return rest[0] if rest else ""


def run_git(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = LOCAL_GIT_TIMEOUT_S,
    check: bool = True,
) -> GitResult:
    """Run git, heartbeating every few seconds so a hung command surfaces as a timeout.

    The process gets its own session: no controlling terminal for ssh to prompt on, and the
    whole group (git-remote-https, ssh) is killed on timeout or cancellation.
    """
    argv = ["git", *(str(arg) for arg in args)]
    command = _subcommand(argv[1:])
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=git_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    pending = input
    try:
        while True:
            try:
                out, err = proc.communicate(pending, timeout=HEARTBEAT_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                pending = None
                _heartbeat(f"git {command} running")
                if time.monotonic() > deadline:
                    raise GitError(command, -1, f"timed out after {timeout:.0f}s") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = GitResult(proc.returncode, out, err.decode("utf-8", errors="replace"))
    if check and result.returncode != 0:
        raise GitError(command, result.returncode, result.stderr)
    return result


def git_text(repo: Path, *args: str | Path, **kwargs: Any) -> str:
    return run_git(["-C", repo, *args], **kwargs).text


def resolve_commit(repo: Path, rev: str) -> str | None:
    """The full sha `rev` names in `repo`, or None when it names no commit there."""
    result = run_git(
        ["-C", repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        check=False,
    )
    sha = result.text
    return sha if result.returncode == 0 and _FULL_SHA.match(sha) else None


def application_error(error: GitError, what: str, fix: str) -> ApplicationError:
    """A failed git command as a Temporal failure: permanent ones stop the retries."""
    return ApplicationError(
        f"{what}: {error}" + (f" ({fix})" if error.permanent else ""),
        type="GitPermanentError" if error.permanent else "GitError",
        non_retryable=error.permanent,
    )


# ---------------------------------------------------------------------------- the mirror cache


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
def locked(mirror: Mirror) -> Iterator[None]:
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
                    _heartbeat(f"waiting for the mirror of {mirror.service}")
                    beat = time.monotonic()
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_mirror(mirror: Mirror, timeout: float) -> None:
    """Clone the mirror the first time, fetch afterwards. The caller holds `locked(mirror)`."""
    if mirror.path.is_dir():
        run_git(
            ["-C", mirror.path, "fetch", "--prune", "--quiet", "--end-of-options",
             mirror.public_location, "+refs/*:refs/*"],
            env=mirror.remote_env,
            timeout=timeout,
        )  # fmt: skip
        return
    # Clone beside the final path and rename, so a crash never leaves a half mirror in use.
    partial = mirror.path.with_name(f".{mirror.path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    run_git(
        ["clone", "--mirror", "--quiet", "--end-of-options", mirror.public_location, partial],
        env=mirror.remote_env,
        timeout=timeout,
    )
    os.rename(partial, mirror.path)


def ensure_commit(mirror: Mirror, commit: str, timeout: float) -> None:
    """Make sure the mirror exists and holds `commit`, fetching only when it does not."""
    with locked(mirror):
        if mirror.path.is_dir() and resolve_commit(mirror.path, commit) == commit:
            return
        update_mirror(mirror, timeout)
    if resolve_commit(mirror.path, commit) != commit:
        raise ApplicationError(
            f"commit {commit} of service {mirror.service!r} is no longer in "
            f"{mirror.public_location} (was it force-pushed away? restore it, or report the "
            f"error again so a new incident syncs the current code)",
            type="CommitNotFound",
            non_retryable=True,
        )


def _worktree_head(path: Path, mirror: Path) -> str | None:
    """HEAD of `path` if it is a worktree of `mirror`; None for anything else."""
    if not (path / ".git").is_file():
        return None
    result = run_git(
        ["-C", path, "rev-parse", "--path-format=absolute", "--git-common-dir", "HEAD"],
        check=False,
    )
    lines = result.text.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return None
    if Path(lines[0]).resolve() != mirror.resolve():
        return None
    return lines[1]


def _ensure_worktree(mirror: Path, path: Path, commit: str) -> None:
    head = _worktree_head(path, mirror)
    if head == commit:
        return
    if head is not None:
        git_text(path, "reset", "--quiet", "--hard", commit)
        git_text(path, "clean", "-ffdxq")
        return
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    git_text(mirror, "worktree", "prune")
    git_text(mirror, "worktree", "add", "--quiet", "--detach", path, commit)


def _safe_name(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value) or value in {".", ".."}:
        raise ApplicationError(
            f"{what} {value!r} must be letters, digits, '.', '_' or '-'",
            type="InvalidRequest",
            non_retryable=True,
        )
    return value


# ---------------------------------------------------------------------------- locating frames


def _parts(path: str) -> list[str]:
    return [part for part in path.replace("\\", "/").split("/") if part not in {"", "."}]


def _common_suffix(a: Sequence[str], b: Sequence[str]) -> int:
    count = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        count += 1
    return count


class RepoFiles:
    """The files tracked at a commit, for mapping a frame's file to a repository path."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._by_name: dict[str, list[list[str]]] = {}
        for path in paths:
            parts = path.split("/")
            self._by_name.setdefault(parts[-1], []).append(parts)

    def locate(self, frame_file: str) -> str | None:
        """The longest path-suffix match of `frame_file`, ties going to the shortest path.

        An absolute frame path must end with the whole repository path (so
        /usr/lib/python3.11/json/__init__.py never matches app/__init__.py); a relative one
        may also be a suffix of it (cart.py, or app/cart.py inside a monorepo).
        """
        parts = _parts(frame_file)
        if not parts:
            return None
        absolute = frame_file.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", frame_file)
        best: tuple[int, int, str] | None = None
        for candidate in self._by_name.get(parts[-1], []):
            matched = _common_suffix(parts, candidate)
            covers = matched == len(candidate) or (not absolute and matched == len(parts))
            if not covers:
                continue
            key = (-matched, len(candidate), "/".join(candidate))
            if best is None or key < best:
                best = key
        return best[2] if best else None


def _counts_as_in_app(frame: Frame, path: str, include: Sequence[str]) -> bool:
    if frame.in_app is not None:
        return frame.in_app
    if _VENDORED.intersection(_parts(frame.file)):
        return False
    if not include:
        return True
    module = frame.module or ""
    return any(path.startswith(prefix) or module.startswith(prefix) for prefix in include)


# ---------------------------------------------------------------------------- history


@dataclass
class _Commit:
    sha: str
    author: str
    date: str
    subject: str
    timestamp: int = 0
    paths: list[str] = field(default_factory=list)


def _iso(epoch: int, tz: str) -> str:
    sign = -1 if tz.startswith("-") else 1
    digits = tz.lstrip("+-").rjust(4, "0")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4])) * sign
    return datetime.fromtimestamp(epoch, timezone(offset)).isoformat()


def _parse_blame(porcelain: str) -> tuple[dict[int, str], dict[str, _Commit], dict[int, str]]:
    """`git blame --porcelain`: line -> sha, sha -> commit, line -> text."""
    by_line: dict[int, str] = {}
    text: dict[int, str] = {}
    commits: dict[str, _Commit] = {}
    headers: dict[str, dict[str, str]] = {}
    current = ""
    line = 0
    for raw in porcelain.split("\n"):
        if raw.startswith("\t"):
            text[line] = raw[1:]
            continue
        fields = raw.split(" ")
        if len(fields) >= 3 and _FULL_SHA.match(fields[0]):
            current = fields[0]
            line = int(fields[2])
            by_line[line] = current
            headers.setdefault(current, {})
        elif current and raw:
            key, _, value = raw.partition(" ")
            headers[current].setdefault(key, value)
    for sha, info in headers.items():
        commits[sha] = _Commit(
            sha=sha,
            author=info.get("author", ""),
            date=_iso(int(info.get("author-time", "0")), info.get("author-tz", "+0000")),
            subject=info.get("summary", ""),
            timestamp=int(info.get("author-time", "0")),
        )
    return by_line, commits, text


def _file_log(repo: Path, commit: str, path: str) -> list[_Commit]:
    out = git_text(
        repo, "-c", "core.quotepath=off", "log", f"-n{LOG_DEPTH}", "--full-diff", "--name-only",
        "--format=%x1e%H%x1f%an%x1f%aI%x1f%at%x1f%s", commit, "--", path,
    )  # fmt: skip
    commits = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        header, _, names_part = record.partition("\n")
        sha, author, date, epoch, subject = header.split("\x1f", 4)
        paths = [p for p in names_part.split("\n") if p.strip()]
        commits.append(_Commit(sha, author, date, subject, int(epoch), paths))
    return commits


def _changed_paths(repo: Path, sha: str) -> list[str]:
    out = git_text(
        repo, "-c", "core.quotepath=off", "diff-tree", "--no-commit-id", "--name-only", "-r",
        "--root", sha,
    )  # fmt: skip
    return [p for p in out.splitlines() if p]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- activities


@dataclass
class _FrameFinding:
    """One located frame and what history says about it (goes to the artifact)."""

    frame: Frame
    path: str
    window: dict[str, Any] | None = None
    blame: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)


class GitActivities:
    """sync_repo, investigate and prepare_patch: every activity that reads a repository."""

    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self.config = config
        self.store = store

    # -- sync_repo ------------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_SYNC_REPO)
    def sync_repo(self, request: SyncRequest) -> Worktree:
        """Fetch the service's repository and check out the deployed commit for this incident."""
        incident_id = _safe_name(request.incident_id, "incident id")
        try:
            service = self.config.service(request.service)
        except ConfigError as exc:
            raise ApplicationError(str(exc), type="ConfigError", non_retryable=True) from None
        mirror = mirror_for(self.config, request.service)
        release = request.release if service.deployed_commit == "event" else None
        worktree_path = self.config.home_dir / "worktrees" / incident_id
        timeout = float(self.config.limits.sync_timeout_s)
        try:
            with locked(mirror):
                # A full sha cannot move, so one already mirrored needs no network at all.
                known = (
                    release is not None
                    and _FULL_SHA.match(release) is not None
                    and mirror.path.is_dir()
                    and resolve_commit(mirror.path, release) == release
                )
                if not known:
                    update_mirror(mirror, timeout)
                commit = self._deployed_commit(mirror, release, service.branch)
                _ensure_worktree(mirror.path, worktree_path, commit)
        except GitError as exc:
            raise application_error(
                exc,
                f"syncing {request.service} from {mirror.public_location}",
                f"check services.{request.service}.repo and that the worker may read it",
            ) from None
        return Worktree(
            service=request.service,
            path=str(worktree_path),
            commit=commit,
            branch=service.branch,
            commit_source="release" if release else "branch_head",
        )

    def _deployed_commit(self, mirror: Mirror, release: str | None, branch: str) -> str:
        if release:
            commit = resolve_commit(mirror.path, release)
            if commit is None:
                raise ApplicationError(
                    f"release {release!r} of service {mirror.service!r} names no commit in "
                    f"{mirror.public_location} after fetching (push that commit, report the sha "
                    f"the service really runs, or set services.{mirror.service}.deployed_commit "
                    f'= "branch")',
                    type="CommitNotFound",
                    non_retryable=True,
                )
            return commit
        commit = resolve_commit(mirror.path, f"refs/heads/{branch}")
        if commit is None:
            raise ApplicationError(
                f"branch {branch!r} of service {mirror.service!r} does not exist in "
                f"{mirror.public_location} (set services.{mirror.service}.branch to an existing "
                f"branch)",
                type="BranchNotFound",
                non_retryable=True,
            )
        return commit

    # -- investigate ----------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_INVESTIGATE)
    def investigate(self, request: InvestigateRequest) -> Evidence:
        """Locate the in-app frames, read their code, blame the failing lines, rank suspects."""
        incident_id = _safe_name(request.incident_id, "incident id")
        worktree = request.worktree
        try:
            repo = self._repository(worktree)
            include = self.config.service(worktree.service).in_app_include
            blobs = {
                path: sha
                for path, (mode, sha) in _tree_entries(
                    repo, worktree.commit, recursive=True
                ).items()
                if mode in patching.REGULAR_FILE_MODES
            }
            findings, unmatched = self._locate_frames(
                request.frames, RepoFiles(list(blobs)), include
            )
            commits: dict[str, _Commit] = {}
            for finding in findings:
                _heartbeat(f"investigating {finding.path}")
                self._examine(repo, worktree.commit, finding, blobs[finding.path], commits)
            suspects = self._rank_suspects(repo, findings, commits)
        except GitError as exc:
            raise application_error(
                exc,
                f"investigating {worktree.service} at {worktree.commit}",
                "sync the repository again",
            ) from None

        ref = self.store.put_json(
            f"{incident_id}/evidence.json",
            {
                "incident_id": incident_id,
                "service": worktree.service,
                "commit": worktree.commit,
                "error": request.error.model_dump(),
                "frames": [
                    {
                        "file": f.frame.file,
                        "function": f.frame.function,
                        "line": f.frame.line,
                        "path": f.path,
                        "window": f.window,
                        "blame": f.blame,
                        "log": f.log,
                    }
                    for f in findings
                ],
                "unmatched_frames": unmatched,
                "suspect_commits": [s.model_dump() for s in suspects],
            },
        )
        frames = [
            FrameEvidence(
                path=f.path,
                line=f.frame.line,
                function=f.frame.function,
                start_line=f.window["start_line"] if f.window else None,
                end_line=f.window["end_line"] if f.window else None,
            )
            for f in findings
        ]
        frames += [
            FrameEvidence(path=_clip(file, 300), found=False)
            for file in unmatched[: MAX_REPORTED_FRAMES - len(frames)]
        ]
        return Evidence(
            summary=self._summary(request, findings, suspects),
            frames=frames,
            suspect_commits=suspects,
            artifact=ref,
        )

    def _locate_frames(
        self, frames: Sequence[Frame], files: RepoFiles, include: Sequence[str]
    ) -> tuple[list[_FrameFinding], list[str]]:
        """In-app frames found in the repository, innermost first, and in-app ones not found."""
        findings: list[_FrameFinding] = []
        unmatched: list[str] = []
        seen: set[tuple[str, int | None]] = set()  # recursion repeats the same frame
        for frame in reversed(frames):
            if frame.in_app is False:
                continue
            path = files.locate(frame.file)
            if path is None:
                if frame.in_app and frame.file not in unmatched:
                    unmatched.append(frame.file)
                continue
            if (path, frame.line) in seen or not _counts_as_in_app(frame, path, include):
                continue
            seen.add((path, frame.line))
            if len(findings) < MAX_ANALYSED_FRAMES:
                findings.append(_FrameFinding(frame=frame, path=path))
        return findings, unmatched

    def _repository(self, worktree: Worktree) -> Path:
        """The mirror holding the worktree's commit, so any worker can serve any step."""
        mirror = mirror_for(self.config, worktree.service)
        ensure_commit(mirror, worktree.commit, float(self.config.limits.sync_timeout_s))
        return mirror.path

    def _examine(
        self,
        repo: Path,
        commit: str,
        finding: _FrameFinding,
        blob: str,
        commits: dict[str, _Commit],
    ) -> None:
        for entry in _file_log(repo, commit, finding.path):
            commits.setdefault(entry.sha, entry)
            finding.log.append(
                {"sha": entry.sha, "author": entry.author, "date": entry.date,
                 "subject": entry.subject, "paths": entry.paths[:MAX_SUSPECT_PATHS]}
            )  # fmt: skip
        line = finding.frame.line
        # From the object store, not the disk: a tracked symlink must not read outside the repo.
        source = (
            run_git(["-C", repo, "cat-file", "blob", blob])
            .stdout.decode("utf-8", errors="replace")
            .split("\n")
        )
        if source and source[-1] == "":
            source.pop()
        if not line or line > len(source):
            return
        start, end = max(1, line - WINDOW_RADIUS), min(len(source), line + WINDOW_RADIUS)
        finding.window = {
            "start_line": start,
            "end_line": end,
            "lines": [
                {"line": n, "text": _clip(source[n - 1].rstrip("\r"), MAX_ARTIFACT_LINE_CHARS)}
                for n in range(start, end + 1)
            ],
        }
        low, high = max(1, line - BLAME_RADIUS), min(len(source), line + BLAME_RADIUS)
        porcelain = git_text(
            repo, "blame", "--porcelain", "-w", "-L", f"{low},{high}", commit, "--", finding.path
        )
        by_line, blamed, text = _parse_blame(porcelain)
        for sha, info in blamed.items():
            commits.setdefault(sha, info)
        finding.blame = [
            {"line": n, "sha": sha, "author": commits[sha].author, "date": commits[sha].date,
             "subject": commits[sha].subject,
             "text": _clip(text.get(n, ""), MAX_ARTIFACT_LINE_CHARS)}
            for n, sha in sorted(by_line.items())
        ]  # fmt: skip

    def _rank_suspects(
        self, repo: Path, findings: Sequence[_FrameFinding], commits: Mapping[str, _Commit]
    ) -> list[SuspectCommit]:
        """Failing line of the innermost frame, other failing lines, nearby lines, recent edits."""
        reasons: dict[str, str] = {}

        def consider(sha: str, reason: str) -> None:
            reasons.setdefault(sha, reason)

        for position, finding in enumerate(findings):
            for entry in finding.blame:
                if entry["line"] == finding.frame.line:
                    where = "the failing line" if position == 0 else "a calling line"
                    consider(entry["sha"], f"last changed {finding.path}:{entry['line']} ({where})")
        for finding in findings:
            nearby = sorted(finding.blame, key=lambda e: abs(e["line"] - (finding.frame.line or 0)))
            for entry in nearby:
                consider(
                    entry["sha"],
                    f"last changed {finding.path}:{entry['line']} "
                    f"(near {finding.path}:{finding.frame.line})",
                )
        recent = sorted(
            ((commits[e["sha"]], finding.path) for finding in findings for e in finding.log),
            key=lambda pair: -pair[0].timestamp,
        )
        for logged, path in recent:
            consider(logged.sha, f"recently changed {path}")

        suspects = []
        for sha, reason in list(reasons.items())[:MAX_SUSPECTS]:
            info = commits[sha]
            paths = info.paths or _changed_paths(repo, sha)
            suspects.append(
                SuspectCommit(
                    sha=sha,
                    author=_clip(info.author, 200),
                    date=info.date,
                    subject=_clip(info.subject, MAX_SUBJECT_CHARS),
                    paths=[_clip(p, 300) for p in paths[:MAX_SUSPECT_PATHS]],
                    reason=reason,
                )
            )
        return suspects

    @staticmethod
    def _summary(
        request: InvestigateRequest,
        findings: Sequence[_FrameFinding],
        suspects: Sequence[SuspectCommit],
    ) -> str:
        error = request.error.type
        message = request.error.message.strip().splitlines()[0] if request.error.message else ""
        headline = _clip(f"{error}: {message}" if message else error, 160)
        if not findings:
            return (
                f"{headline}; no stack frame matched a file of {request.worktree.service} "
                f"at {request.worktree.commit[:12]}"
            )
        inner = findings[0]
        where = f"{inner.path}:{inner.frame.line}" if inner.frame.line else inner.path
        if inner.frame.function:
            where += f" in {inner.frame.function}()"
        summary = f"{headline} at {where}."
        if suspects:
            top = suspects[0]
            summary += (
                f"\nTop suspect: {top.sha[:12]} {_clip(top.subject, 80)!r} by {top.author}: "
                f"{top.reason}."
            )
        return summary

    # -- prepare_patch --------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_PREPARE_PATCH)
    def prepare_patch(self, request: PatchRequest) -> PatchResult:
        """Apply the edits to a private index (never the worktree) and store git's diff."""
        incident_id = _safe_name(request.incident_id, "incident id")
        commit = request.worktree.commit
        if not request.edits:
            return PatchResult(applied=False, reason="no edits to apply")
        try:
            repo = self._repository(request.worktree)
            base = _CommitFiles(repo, commit, request.edits)
            try:
                edited = patching.apply_edits(request.edits, base, f"commit {commit[:12]}")
            except patching.EditRefused as refusal:
                return PatchResult(applied=False, reason=str(refusal))
            diff, added, removed = _diff_against(repo, commit, edited)
        except GitError as exc:
            raise application_error(
                exc, f"preparing the patch of {incident_id}", "sync the repository again"
            ) from None
        ref = self.store.put_bytes(f"{incident_id}/patch.diff", diff)
        return PatchResult(
            applied=True,
            files=sorted(edited),
            lines_added=added,
            lines_removed=removed,
            diff=ref,
        )


def _tree_entries(
    repo: Path, commit: str, paths: Sequence[str] = (), *, recursive: bool = False
) -> dict[str, tuple[str, str]]:
    """path -> (mode, object sha) at `commit`: the given paths, or every file when recursive."""
    depth = ["-r"] if recursive else []
    out = run_git(["-C", repo, "ls-tree", "-z", "--full-tree", *depth, commit, "--", *paths]).stdout
    entries = {}
    for record in out.decode("utf-8", errors="surrogateescape").split("\0"):
        if not record:
            continue
        meta, _, name = record.partition("\t")
        mode, _kind, sha = meta.split(" ")
        entries[name] = (mode, sha)
    return entries


class _CommitFiles:
    """The files of one commit of a local repository, as `remedy.patching` reads them."""

    def __init__(self, repo: Path, commit: str, edits: Sequence[Edit]) -> None:
        self._repo = repo
        # One ls-tree for every file the edits name, instead of one per file.
        paths = [path for edit in edits if (path := patching.repo_path(edit.path))]
        self._entries = _tree_entries(repo, commit, paths)

    def mode(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry[0] if entry else None

    def read(self, path: str) -> bytes:
        # From the object store, not the disk: a tracked symlink must not read outside the repo.
        return run_git(["-C", self._repo, "cat-file", "blob", self._entries[path][1]]).stdout


def _diff_against(
    repo: Path, commit: str, files: Mapping[str, patching.EditedFile]
) -> tuple[bytes, int, int]:
    """git's own diff of the edited files against `commit`, built in a throwaway index."""
    with tempfile.TemporaryDirectory(prefix="remedy-patch-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        run_git(["-C", repo, "read-tree", commit], env=env)
        index_info = b""
        for path, edited in files.items():
            blob = run_git(
                ["-C", repo, "hash-object", "-w", "--no-filters", "--stdin"],
                input=edited.text.encode("utf-8"),
            ).text
            index_info += f"{edited.mode} {blob}\t{path}".encode() + b"\0"
        run_git(["-C", repo, "update-index", "-z", "--index-info"], env=env, input=index_info)
        common: list[str | Path] = [
            "-C", repo, "diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv",
            "--no-renames", "--no-relative", "--src-prefix=a/", "--dst-prefix=b/",
        ]  # fmt: skip
        diff = run_git([*common, commit], env=env).stdout
        numstat = run_git([*common, "--numstat", commit], env=env).text
    added = removed = 0
    for row in numstat.splitlines():
        plus, minus, _ = row.split("\t", 2)
        added += int(plus)
        removed += int(minus)
    return diff, added, removed
