"""The one git runner: a scrubbed, non-interactive environment, a timeout, redacted errors.

Every git command Remedy runs goes through `run_git` (threads) or `run_git_async` (event
loops): each runs git in its own session, so there is no controlling terminal for ssh to prompt
on and the whole group (git-remote-https, ssh) is killed on timeout or cancellation. While it
waits, the runner calls `on_wait` every few seconds; activities pass their heartbeat there.
A repository URL may carry credentials, so every git message is redacted before it can reach
a result, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

HEARTBEAT_INTERVAL_S = 2.0
# Local commands (blame, log, worktree add on a large checkout) get a generous bound; the
# network ones use `limits.sync_timeout_s`.
LOCAL_GIT_TIMEOUT_S = 600.0

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
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

OnWait = Callable[[str], None]


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


def _subcommand(args: Sequence[str]) -> str:
    """The git sub-command in `args`, skipping the global `-C DIR` and `-c KEY=VALUE`."""
    rest = list(args)
    while rest and rest[0] in {"-C", "-c"}:
        rest = rest[2:]
    return rest[0] if rest else ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _finish(command: str, returncode: int, out: bytes, err: bytes, check: bool) -> GitResult:
    result = GitResult(returncode, out, err.decode("utf-8", errors="replace"))
    if check and result.returncode != 0:
        raise GitError(command, result.returncode, result.stderr)
    return result


def _timed_out(command: str, timeout: float) -> GitError:
    return GitError(command, -1, f"timed out after {timeout:.0f}s")


def run_git(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = LOCAL_GIT_TIMEOUT_S,
    check: bool = True,
    on_wait: OnWait | None = None,
) -> GitResult:
    """Run git; a timeout always raises GitError, a failure only when `check`."""
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
                if on_wait is not None:
                    on_wait(f"git {command} running")
                if time.monotonic() > deadline:
                    raise _timed_out(command, timeout) from None
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid)
            proc.wait()
    return _finish(command, proc.returncode, out, err, check)


async def run_git_async(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = LOCAL_GIT_TIMEOUT_S,
    check: bool = True,
    on_wait: OnWait | None = None,
) -> GitResult:
    """`run_git` for an event loop: the same process, limits and errors; cancelling the caller
    kills git."""
    argv = ["git", *(str(arg) for arg in args)]
    command = _subcommand(argv[1:])
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=git_env(env),
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    communicating = asyncio.ensure_future(proc.communicate(input))
    try:
        while True:
            done, _ = await asyncio.wait({communicating}, timeout=HEARTBEAT_INTERVAL_S)
            if done:
                out, err = communicating.result()
                break
            if on_wait is not None:
                on_wait(f"git {command} running")
            if time.monotonic() > deadline:
                raise _timed_out(command, timeout)
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
        communicating.cancel()
    assert proc.returncode is not None
    return _finish(command, proc.returncode, out, err, check)


def git_text(repo: Path, *args: str | Path, **kwargs: Any) -> str:
    """The stripped output of `git -C repo ARGS`; keywords as for `run_git`."""
    return run_git(["-C", repo, *args], **kwargs).text


def resolve_commit(repo: Path, rev: str, *, on_wait: OnWait | None = None) -> str | None:
    """The full sha `rev` names in `repo`, or None when it names no commit there."""
    result = run_git(
        ["-C", repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        check=False,
        on_wait=on_wait,
    )
    sha = result.text
    return sha if result.returncode == 0 and FULL_SHA.match(sha) else None


def is_ancestor(repo: Path, commit: str, descendant: str, *, on_wait: OnWait | None = None) -> bool:
    """Whether `commit` is `descendant` or one of its ancestors in `repo`; both must name
    commits there (resolve them first), else GitError."""
    result = run_git(
        ["-C", repo, "merge-base", "--is-ancestor", "--end-of-options", commit, descendant],
        check=False,
        on_wait=on_wait,
    )
    if result.returncode not in (0, 1):
        raise GitError("merge-base", result.returncode, result.stderr)
    return result.returncode == 0


def application_error(error: GitError, what: str, fix: str) -> ApplicationError:
    """A failed git command as a Temporal failure: permanent ones stop the retries."""
    return ApplicationError(
        f"{what}: {error}" + (f" ({fix})" if error.permanent else ""),
        type="GitPermanentError" if error.permanent else "GitError",
        non_retryable=error.permanent,
    )
