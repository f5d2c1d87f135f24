"""verify_patch: the service's own tests, in a sandbox, before and after the patch.

The tests run on a scratch clone of the incident's worktree at its commit, never on the
worktree itself. Each run gets:
- no network: a fresh network namespace (`unshare --net`, or `unshare -rn` without root) with
  only its own loopback; where that is impossible the result says so;
- limits: CPU seconds, address space and file size as rlimits, wall clock enforced by killing
  the whole process group;
- an environment of PATH, HOME (a scratch folder) and LANG only: no token, key or secret of
  the worker reaches the tests;
- its output captured to `<incident>/verify/<run>.log` in the artifact store.

When the model wrote a regression test, it runs on its own before and after the patch: failing
before and passing after marks the fix as reproduced-and-fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.progress import heartbeat
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.runner import run_git_async
from remedy.models import ArtifactRef, CommandRun, VerificationResult, VerifyRequest
from remedy.patching import repo_path

HEARTBEAT_INTERVAL_S = 2.0
GIT_TIMEOUT_S = 300.0
MAX_STORED_LOG_BYTES = 4 * 1024 * 1024
PARSED_TAIL_BYTES = 256 * 1024
MB = 1024 * 1024

_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")
_PYTEST_SUMMARY = re.compile(r"^=*\s*\d+ \w+.* in [\d.]+s", re.MULTILINE)
_PYTEST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in", re.MULTILINE)
_UNITTEST_FAILED = re.compile(r"^FAILED \(([^)]*)\)", re.MULTILINE)
_UNITTEST_FAILURE = re.compile(r"^(?:FAIL|ERROR): (\S+) \(([^)]+)\)", re.MULTILINE)


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float
    cpu_s: int
    memory_bytes: int
    file_bytes: int


@dataclass(frozen=True)
class SandboxOutcome:
    exit_code: int | None
    timed_out: bool
    signal: str | None
    duration_s: float


def network_isolation_prefix() -> list[str] | None:
    """The command prefix that puts a process in a fresh network namespace, or None here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    # Root can make the namespace directly; anyone else needs a user namespace around it.
    options = ["--net", "-rn"] if os.geteuid() == 0 else ["-rn"]
    for option in options:
        try:
            probe = subprocess.run(
                [unshare, option, "true"], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return [unshare, option]
    return None


def scrubbed_env(home: Path) -> dict[str, str]:
    """All a test run inherits: where programs are, a home of its own, and the locale.

    The worker's own interpreter folder comes first, so `python` in a test_command is the
    Python the worker runs under (its virtualenv), not whatever is first on the host's PATH.
    """
    path = os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}",
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def _apply_limits(limits: SandboxLimits) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec: no allocation, no locks
        # Soft CPU limit sends SIGXCPU; the hard one a second later is SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(exit_code: int | None) -> str | None:
    if exit_code is None:
        return None
    # A shell that did not exec its command reports the command's death as 128 + signal.
    number = -exit_code if exit_code < 0 else exit_code - 128 if exit_code > 128 else 0
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return None


async def run_sandboxed(
    command: str,
    *,
    cwd: Path,
    home: Path,
    log: Path,
    limits: SandboxLimits,
    isolation: Sequence[str] | None,
) -> SandboxOutcome:
    """Run a shell command under the sandbox; stdout and stderr go to `log`."""
    if isolation:
        ip = shutil.which("ip", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        # The namespace's loopback starts down; up, tests can still serve on 127.0.0.1.
        lo_up = f"{shlex.quote(ip)} link set lo up 2>/dev/null; " if ip else ""
        argv = [*isolation, "/bin/sh", "-c", f'{lo_up}exec /bin/sh -c "$1"', "sandbox", command]
    else:
        argv = ["/bin/sh", "-c", command]
    started = time.monotonic()
    with log.open("wb") as output:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=scrubbed_env(home),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_apply_limits(limits),
        )
    timed_out = False
    try:
        while True:
            remaining = started + limits.wall_s - time.monotonic()
            if remaining <= 0:
                timed_out = True
                _kill_group(proc.pid)
                await proc.wait()
                break
            try:
                await asyncio.wait_for(proc.wait(), min(HEARTBEAT_INTERVAL_S, remaining))
                break
            except TimeoutError:
                heartbeat(f"tests running for {time.monotonic() - started:.0f}s")
    finally:
        # Background children outlive their parent otherwise.
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    code = proc.returncode
    return SandboxOutcome(
        exit_code=code,
        timed_out=timed_out,
        signal=None if timed_out else _signal_name(code),
        duration_s=round(time.monotonic() - started, 3),
    )


# ---------------------------------------------------------------------------- reading results


@dataclass(frozen=True)
class SuiteCounts:
    passed: int | None
    failed: int | None
    failures: list[str]


def parse_test_output(output: str) -> SuiteCounts:
    """Counts and failing test ids from pytest's or unittest's summary; None when neither."""
    summaries = _PYTEST_SUMMARY.findall(output)
    if summaries:
        counts: dict[str, int] = {}
        for number, word in _PYTEST_COUNT.findall(summaries[-1]):
            key = "failed" if word.startswith("error") else word
            counts[key] = counts.get(key, 0) + int(number)
        failures = list(dict.fromkeys(_PYTEST_FAILURE.findall(output)))
        return SuiteCounts(counts.get("passed", 0), counts.get("failed", 0), failures)
    ran = _UNITTEST_RAN.findall(output)
    if ran:
        total = int(ran[-1])
        failed = 0
        if bad := _UNITTEST_FAILED.findall(output):
            failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", bad[-1]))
        failures = [f"{where}.{name}" for name, where in _UNITTEST_FAILURE.findall(output)]
        return SuiteCounts(total - failed, failed, list(dict.fromkeys(failures)))
    return SuiteCounts(None, None, [])


def _tail(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        length = handle.tell()
        handle.seek(max(length - size, 0))
        data = handle.read()
    if length > size:
        return f"[first {length - size} bytes of the log omitted]\n".encode() + data
    return data


def _describe(run: CommandRun) -> str:
    if run.timed_out:
        return "timed out"
    if run.signal:
        return f"killed by {run.signal}"
    counts = f"{run.passed} passed, {run.failed} failed" if run.passed is not None else ""
    state = "passed" if run.exit_code == 0 else f"failed (exit {run.exit_code})"
    return f"{state}{f': {counts}' if counts else ''}"


# ---------------------------------------------------------------------------- the activity


class _Scratch:
    """Folders for one verification; removed afterwards."""

    def __init__(self, parent: Path, incident: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{incident}-", dir=parent))
        self.repo = self.root / "repo"
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.home.mkdir()
        self.logs.mkdir()


async def _git(*args: str | Path) -> tuple[int, str]:
    """(exit code, output and errors) of a git command preparing the scratch clone."""
    result = await run_git_async(args, timeout=GIT_TIMEOUT_S, check=False, on_wait=heartbeat)
    return result.returncode, "\n".join(filter(None, [result.text, result.stderr.strip()]))


class SandboxActivities:
    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self._config = config
        self._store = store
        self._isolation: list[str] | None = None
        self._probed = False

    async def isolation(self) -> list[str] | None:
        if not self._probed:
            self._isolation = await asyncio.to_thread(network_isolation_prefix)
            self._probed = True
        return self._isolation

    def _limits(self) -> SandboxLimits:
        limits = self._config.limits
        return SandboxLimits(
            wall_s=float(limits.test_timeout_s),
            cpu_s=limits.test_cpu_s,
            memory_bytes=limits.test_memory_mb * MB,
            file_bytes=limits.test_max_file_mb * MB,
        )

    async def _run(self, incident: str, label: str, command: str, scratch: _Scratch) -> CommandRun:
        log = scratch.logs / f"{label}.log"
        outcome = await run_sandboxed(
            command,
            cwd=scratch.repo,
            home=scratch.home,
            log=log,
            limits=self._limits(),
            isolation=await self.isolation(),
        )
        stored = _tail(log, MAX_STORED_LOG_BYTES)
        ref: ArtifactRef = self._store.put_bytes(f"{incident}/verify/{label}.log", stored)
        counts = parse_test_output(_tail(log, PARSED_TAIL_BYTES).decode("utf-8", errors="replace"))
        return CommandRun(
            label=label,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            signal=outcome.signal,
            duration_s=outcome.duration_s,
            passed=counts.passed,
            failed=counts.failed,
            failures=counts.failures,
            log=ref,
        )

    @activity.defn(name=names.ACTIVITY_VERIFY_PATCH)
    async def verify_patch(self, request: VerifyRequest) -> VerificationResult:
        try:
            incident = names.safe_id(request.incident_id, "incident id")
        except ValueError as exc:
            raise ApplicationError(str(exc), type="BadRequest", non_retryable=True) from None
        service = self._config.services.get(request.worktree.service)
        command = service.test_command if service else None
        if not command:
            return VerificationResult(
                status="skipped",
                summary=f"service {request.worktree.service} has no test_command in remedy.toml",
            )
        if not request.patch.applied or request.patch.diff is None:
            return VerificationResult(status="error", summary="there is no applied patch to verify")
        isolated = await self.isolation() is not None
        scratch = _Scratch(self._config.home_dir / "sandbox", incident)
        try:
            result = await self._verify(request, command, request.patch.diff, scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch.root, True)
        if not isolated:
            result.summary += (
                "\nNetwork isolation was unavailable on this worker (no usable `unshare`): "
                "the tests could reach the network."
            )
        result.network_isolated = isolated
        result.artifact = self._store.put_json(
            f"{incident}/verify/report.json",
            {"command": command, **result.model_dump(mode="json", exclude={"artifact"})},
        )
        return result

    async def _verify(
        self, request: VerifyRequest, command: str, diff: ArtifactRef, scratch: _Scratch
    ) -> VerificationResult:
        incident, worktree = request.incident_id, request.worktree
        short = worktree.commit[:12]
        code, out = await _git(
            "clone", "--quiet", "--shared", "--no-checkout", worktree.path, scratch.repo
        )
        if code == 0:
            code, out = await _git(
                "-C", scratch.repo, "checkout", "--quiet", "--detach", worktree.commit
            )
        if code != 0:
            return VerificationResult(
                status="error", summary=f"could not copy the worktree at {short}: {out[-500:]}"
            )
        test = request.regression_test
        test_path = repo_path(test.path) if test else None
        test_text = self._store.get_bytes(test.content) if test else b""
        runs: list[CommandRun] = []

        async def regression(label: str) -> CommandRun:
            assert test_path is not None
            target = scratch.repo / test_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(test_text)
            try:
                return await self._run(
                    incident, label, f"{command} {shlex.quote(test_path)}", scratch
                )
            finally:
                # The suite runs without it, so its failure never counts as the suite's.
                target.unlink(missing_ok=True)

        before = await self._run(incident, "before", command, scratch)
        runs.append(before)
        if test_path:
            runs.append(regression_before := await regression("regression-before"))
        # What the first runs left behind (bytecode caches whose timestamps a same-second patch
        # would not invalidate, build output) must not leak into the runs after the patch.
        code, out = await _git("-C", scratch.repo, "clean", "-ffdxq")
        if code == 0:
            patch_file = self._store.path_of(diff)
            code, out = await _git("-C", scratch.repo, "apply", "--whitespace=nowarn", patch_file)
        if code != 0:
            return VerificationResult(
                status="error",
                summary=f"the patch does not apply at {short}: {out[-500:]}",
                runs=runs,
                regression_test=test_path,
            )
        after = await self._run(incident, "after", command, scratch)
        runs.append(after)
        reproduced: bool | None = None
        if test_path:
            runs.append(regression_after := await regression("regression-after"))
            failed_before = regression_before.exit_code != 0 and not regression_before.timed_out
            passed_after = regression_after.exit_code == 0 and not regression_after.timed_out
            reproduced = failed_before and passed_after
        return self._judge(command, before, after, runs, test_path, reproduced)

    @staticmethod
    def _judge(
        command: str,
        before: CommandRun,
        after: CommandRun,
        runs: list[CommandRun],
        test_path: str | None,
        reproduced: bool | None,
    ) -> VerificationResult:
        passed = after.exit_code == 0 and not after.timed_out
        new_failures = [f for f in after.failures if f not in before.failures]
        before_ok = before.exit_code == 0 and not before.timed_out
        if not passed and not new_failures and before_ok:
            new_failures = [f"{command!r}: {_describe(after)} after the patch, passed before"]
        lines = [f"Tests before the patch: {_describe(before)}.", f"After: {_describe(after)}."]
        if new_failures:
            lines.append(f"New failures: {', '.join(new_failures[:10])}.")
        elif not passed:
            lines.append("No new failures: the suite already failed before the patch.")
        if test_path:
            verdict = (
                "fails before the patch and passes after it: reproduced and fixed"
                if reproduced
                else f"before: {_describe(runs[1])}, after: {_describe(runs[-1])}: not reproduced"
            )
            lines.append(f"Regression test {test_path} {verdict}.")
        tests_run = (after.passed or 0) + (after.failed or 0) if after.passed is not None else None
        return VerificationResult(
            status="passed" if passed else "failed",
            summary=" ".join(lines),
            tests_run=tests_run,
            new_failures=new_failures,
            reproduced=reproduced,
            regression_test=test_path,
            runs=runs,
        )
