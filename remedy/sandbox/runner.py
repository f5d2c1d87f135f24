"""The one sandbox runner: every test run Remedy starts goes through `run_confined`.

A run is a shell command on a copy of a worktree, confined by bubblewrap (`Bubblewrap`, found
by `find_bubblewrap` and tried once with `probe`), or, only where a deployment set
`[sandbox] allow_unsandboxed`, by a network namespace alone (`Unsandboxed`). Either way its
output goes to a log file the worker opened, it gets the rlimits of `SandboxLimits` and no
variable of the worker's environment but PATH, HOME and LANG, and its wall clock is enforced
by killing its process group: bwrap's own, whose sandbox dies with it (--die-with-parent), and
with the sandbox's init every process in its pid namespace, `setsid` children included.

Standard library only, so a driver under the system Python (an unprivileged user in the
tests) runs exactly this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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

from remedy.sandbox.bwrap import HOME, SRC, Mount, bwrap_argv, staged_argv
from remedy.sandbox.limits import SandboxLimits, apply_rlimits

HEARTBEAT_INTERVAL_S = 2.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OnWait = Callable[[str], None]


@dataclass(frozen=True)
class Bubblewrap:
    """This worker's sandbox: the tools, what runs may read, and (worker as root) whom as."""

    bwrap: str
    prlimit: str
    read_only: tuple[str, ...] = ()
    run_as: tuple[int, int] | None = None
    unshare: str = ""
    setpriv: str = ""
    mount: str = ""


@dataclass(frozen=True)
class Unsandboxed:
    """`[sandbox] allow_unsandboxed`: a network namespace (`network`, when there is one), a
    scrubbed environment and rlimits, with the worker's user and view of the filesystem."""

    network: tuple[str, ...] | None


Confinement = Bubblewrap | Unsandboxed


@dataclass(frozen=True)
class SandboxOutcome:
    exit_code: int | None
    timed_out: bool
    signal: str | None
    duration_s: float


def find_bubblewrap(read_only: Sequence[str], run_as: tuple[int, int]) -> Bubblewrap | str:
    """The sandbox with the tools it needs, or why there is none (untried: see `probe`)."""
    found = {
        name: shutil.which(name, path=SYSTEM_PATH)
        for name in ("bwrap", "prlimit", "unshare", "setpriv", "mount")
    }
    needed = ["bwrap", "prlimit"] + (["unshare", "setpriv", "mount"] if os.geteuid() == 0 else [])
    missing = [name for name in needed if not found[name]]
    if "bwrap" in missing:
        return "bwrap is not installed (Debian and Ubuntu: apt-get install bubblewrap)"
    if missing:
        return f"{', '.join(missing)} not found (util-linux)"
    root = os.geteuid() == 0
    return Bubblewrap(
        bwrap=str(found["bwrap"]),
        prlimit=str(found["prlimit"]),
        read_only=tuple(read_only),
        run_as=run_as if root else None,
        unshare=found["unshare"] or "",
        setpriv=found["setpriv"] or "",
        mount=found["mount"] or "",
    )


async def probe(sandbox: Bubblewrap, limits: SandboxLimits) -> str | None:
    """None when a trivial run works in `sandbox` here, else bwrap's own words for why not
    (no user namespaces for this user, a tool that is too old, a folder it cannot read)."""
    with tempfile.TemporaryDirectory(prefix="remedy-probe-") as folder:
        copy, log = Path(folder) / "src", Path(folder) / "probe.log"
        copy.mkdir()
        outcome = await run_confined(
            "true", copy=copy, home=copy, log=log, limits=limits, confinement=sandbox
        )
        if outcome.exit_code == 0:
            return None
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return (lines[-1] if lines else f"a trial run ended with {outcome}")[:300]


def network_isolation_prefix() -> list[str] | None:
    """The unsandboxed fallback's command prefix for a fresh network namespace, or None."""
    unshare = shutil.which("unshare", path=SYSTEM_PATH)
    if unshare is None:
        return None
    # Root can make the namespace directly; anyone else needs a user namespace around it.
    options = ["--net", "-rn"] if os.geteuid() == 0 else ["-rn"]
    for option in options:
        try:
            trial = subprocess.run(
                [unshare, option, "true"], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if trial.returncode == 0:
            return [unshare, option]
    return None


def scrubbed_env(home: str | Path) -> dict[str, str]:
    """All a test run inherits: where programs are, a home of its own, and the locale.

    The worker's own interpreter folder comes first, so `python` in a test_command is the
    Python the worker runs under (its virtualenv), not whatever is first on the host's PATH.
    """
    path = os.environ.get("PATH") or SYSTEM_PATH
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}",
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def hand_over(tree: Path, uid: int, gid: int) -> None:
    """Make `tree` the sandbox user's, links included and never followed."""
    os.chown(tree, uid, gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    """Remove a run's folder, also where its tests took away their own permissions."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for folder, dirs, _ in os.walk(path):
        for name in dirs:  # before os.walk enters them
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, name), 0o700, follow_symlinks=False)
    shutil.rmtree(path, ignore_errors=True)


def _bwrap_command(
    command: str, copy: Path, limits: SandboxLimits, sandbox: Bubblewrap, stage_root: Path | None
) -> list[str]:
    mounts = [Mount(path, path) for path in sandbox.read_only]
    mounts.append(Mount(str(copy), SRC, writable=True))
    env = scrubbed_env(HOME)
    if sandbox.run_as is None or stage_root is None:
        return bwrap_argv(
            sandbox.bwrap, sandbox.prlimit, command, mounts=mounts, env=env, limits=limits
        )
    stages: list[tuple[str, str]] = []
    staged: list[Mount] = []
    for number, mount in enumerate(mounts):
        stand_in = stage_root / str(number)
        if os.path.isdir(mount.source):
            stand_in.mkdir()
        else:
            stand_in.touch()
        stages.append((mount.source, str(stand_in)))
        staged.append(Mount(str(stand_in), mount.dest, mount.writable))
    inner = bwrap_argv(
        sandbox.bwrap, sandbox.prlimit, command, mounts=staged, env=env, limits=limits
    )
    tools = {"unshare": sandbox.unshare, "setpriv": sandbox.setpriv, "mount": sandbox.mount}
    return staged_argv(tools, stages, sandbox.run_as, inner)


def _unsandboxed_command(command: str, network: Sequence[str] | None) -> list[str]:
    if not network:
        return ["/bin/sh", "-c", command]
    ip = shutil.which("ip", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    # The namespace's loopback starts down; up, tests can still serve on 127.0.0.1.
    lo_up = f"{shlex.quote(ip)} link set lo up 2>/dev/null; " if ip else ""
    return [*network, "/bin/sh", "-c", f'{lo_up}exec /bin/sh -c "$1"', "sandbox", command]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(exit_code: int | None) -> str | None:
    if exit_code is None:
        return None
    # A shell that did not exec its command, and bwrap, report a death by signal as 128 + it.
    number = -exit_code if exit_code < 0 else exit_code - 128 if exit_code > 128 else 0
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return None


async def run_confined(
    command: str,
    *,
    copy: Path,
    home: Path,
    log: Path,
    limits: SandboxLimits,
    confinement: Confinement,
    on_wait: OnWait | None = None,
) -> SandboxOutcome:
    """Run a shell command in `copy`, confined; stdout and stderr go to `log`.

    `home` is HOME for an unsandboxed run only: a sandboxed one has its own, in memory.
    """
    stage_root: Path | None = None
    if isinstance(confinement, Bubblewrap):
        if confinement.run_as is not None:
            hand_over(copy, *confinement.run_as)
            stage_root = Path(tempfile.mkdtemp(prefix="remedy-stage-"))
            os.chmod(stage_root, 0o755)  # the sandbox user passes through to the stand-ins
        argv = _bwrap_command(command, copy, limits, confinement, stage_root)
        cwd, env = Path("/"), {"PATH": SYSTEM_PATH}
    else:
        argv = _unsandboxed_command(command, confinement.network)
        cwd, env = copy, scrubbed_env(home)
    started = time.monotonic()
    try:
        with log.open("wb") as output:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=apply_rlimits(limits),
            )
        timed_out = await _wait(proc, started, limits.wall_s, on_wait)
    finally:
        if stage_root is not None:
            remove_tree(stage_root)
    code = proc.returncode
    return SandboxOutcome(
        exit_code=code,
        timed_out=timed_out,
        signal=None if timed_out else _signal_name(code),
        duration_s=round(time.monotonic() - started, 3),
    )


async def _wait(
    proc: asyncio.subprocess.Process, started: float, wall_s: float, on_wait: OnWait | None
) -> bool:
    """Wait for the run within its wall clock; True when it had to be killed."""
    timed_out = False
    try:
        while True:
            remaining = started + wall_s - time.monotonic()
            if remaining <= 0:
                timed_out = True
                _kill_group(proc.pid)
                await proc.wait()
                break
            try:
                await asyncio.wait_for(proc.wait(), min(HEARTBEAT_INTERVAL_S, remaining))
                break
            except TimeoutError:
                if on_wait is not None:
                    on_wait(f"tests running for {time.monotonic() - started:.0f}s")
    finally:
        # Unsandboxed background children outlive their parent otherwise; a cancelled wait
        # must not leave the run behind either.
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    return timed_out
