"""The command lines that confine a test run in bubblewrap; building them starts nothing.

What a run sees: the host's system folders and a few /etc files read-only, the Python the
tests need read-only at its own path, its copy of the worktree writable at /src, and private
in-memory /tmp, /dev/shm and HOME. Nothing else of the host exists inside: not Remedy's home,
not other worktrees, not the worker's home. It gets its own user (nobody), user, pid, mount,
ipc, uts and network namespaces (only its own loopback), no capabilities, no new privileges,
no further user namespaces, a fresh /proc with only its own processes, and a read-only root.

A worker running as root never lets bwrap map the sandbox to uid 0 outside: a process that is
uid 0 on the host may write global sysctls (/proc/sys/kernel/*) even without capabilities, and
RLIMIT_NPROC does not apply to it. It starts bwrap as `[sandbox] run_as_uid` instead, after
binding the folders that user may not reach (a Python under /root, a 0700 state directory)
onto empty stand-ins, in a mount namespace private to that one run (`staged_argv`).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from remedy.sandbox.limits import SandboxLimits

SRC = "/src"
HOME = "/home/sandbox"
NOBODY = 65534
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What programs and Python need from /etc; secrets (shadow, ssl/private, the worker's own
# configuration) are not among them.
ETC_FILES = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "protocols",
    "services",
    "mime.types",
    "os-release",
    "ssl/certs",
    "ssl/openssl.cnf",
)
# Mounts every staged source onto its stand-in, then execs the rest of its arguments.
_STAGE_SCRIPT = (
    'mount=$1; shift; while [ "$1" != -- ]; do '
    '"$mount" --bind -- "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)


@dataclass(frozen=True)
class Mount:
    source: str
    dest: str
    writable: bool = False


def system_mounts(root: Path = Path("/")) -> list[str]:
    """bwrap arguments showing the host's system folders as they are laid out here: merged
    /usr (symlinks) or separate folders."""
    argv: list[str] = []
    for name in SYSTEM_DIRS:
        path = root / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), f"/{name}"]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", str(root / "etc" / name), f"/etc/{name}"]
    return argv


def bwrap_argv(
    bwrap: str,
    prlimit: str,
    command: str,
    *,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    limits: SandboxLimits,
) -> list[str]:
    """The bwrap command line that runs `command` with `/bin/sh -c` inside the sandbox."""
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--hostname",
        "sandbox",
        *system_mounts(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for private in ("/tmp", "/dev/shm", HOME):
        argv += ["--size", str(limits.tmpfs_bytes), "--tmpfs", private]
    for mount in mounts:
        argv += ["--bind" if mount.writable else "--ro-bind", mount.source, mount.dest]
    argv += ["--chdir", SRC, "--remount-ro", "/", "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    processes = f"--nproc={limits.processes}:{limits.processes}"
    return [*argv, "--", prlimit, processes, "--", "/bin/sh", "-c", command]


def staged_argv(
    tools: Mapping[str, str],
    stages: Sequence[tuple[str, str]],
    run_as: tuple[int, int],
    inner: Sequence[str],
) -> list[str]:
    """`inner` (a bwrap command line) started by root as `run_as`, with each (source, stand-in)
    bound first in a mount namespace of its own. `tools` names unshare, setpriv and mount."""
    pairs = [path for stage in stages for path in stage]
    uid, gid = run_as
    return [
        tools["unshare"],
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        _STAGE_SCRIPT,
        "stage",
        tools["mount"],
        *pairs,
        "--",
        tools["setpriv"],
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--",
        *inner,
    ]


# ---------------------------------------------------------------------------- what to show


def python_prefixes(executable: str) -> list[str]:
    """The folders a Python needs: its virtualenv, the installation the virtualenv names in
    pyvenv.cfg, and the installation its real binary lies in."""
    found: list[Path] = []
    exe = Path(os.path.abspath(executable))
    for binary in (exe, Path(os.path.realpath(exe))):
        prefix = binary.parent.parent if binary.parent.name == "bin" else binary.parent
        found.append(prefix)
        config = prefix / "pyvenv.cfg"
        if config.is_file():
            for line in config.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    home = Path(value.strip())
                    found += [home.parent if home.name == "bin" else home]
                    found += [Path(os.path.realpath(found[-1]))]
    return [str(path) for path in found]


def command_prefixes(command: str, path_env: str) -> list[str]:
    """The installation of the program a test command starts, when it is not in the copy."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if not words or (not words[0].startswith("/") and "/" in words[0]):
        return []  # empty, or a program inside the repository
    program = shutil.which(words[0], path=path_env)
    return python_prefixes(program) if program else []


def read_only_paths(candidates: Sequence[str]) -> list[str]:
    """`candidates` that exist, without system folders (always shown) or duplicates, each
    once even where one lies inside another."""
    system = tuple(f"/{name}" for name in SYSTEM_DIRS)
    paths = sorted(
        {
            os.path.normpath(path)
            for path in candidates
            if os.path.isabs(path) and os.path.exists(path)
        }
    )
    kept: list[str] = []
    for path in paths:
        if path == "/" or any(path == top or path.startswith(top + "/") for top in system):
            continue
        if not any(path.startswith(outer.rstrip("/") + "/") for outer in kept):
            kept.append(path)
    return kept


def exposed(paths: Sequence[str], private: Sequence[str]) -> str | None:
    """The first read-only path that would show a private folder (Remedy's home), or None."""
    for path in paths:
        outer = os.path.realpath(path)
        for folder in private:
            inner = os.path.realpath(folder)
            if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
                return f"{path} contains {folder}"
    return None
