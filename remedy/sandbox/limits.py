"""What one test run may use. CPU, memory and file size are rlimits set before the sandbox
starts; processes are RLIMIT_NPROC set inside it (`prlimit`), where the count covers only
the sandbox's own user namespace; the wall clock is the runner's."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float
    cpu_s: int
    memory_bytes: int
    file_bytes: int
    processes: int = 256
    tmpfs_bytes: int = 256 * MB


def apply_rlimits(limits: SandboxLimits) -> Callable[[], None]:
    """A preexec function setting the per-process rlimits; bwrap and the tests inherit them."""

    def apply() -> None:  # runs in the child between fork and exec: no allocation, no locks
        # Soft CPU limit sends SIGXCPU; the hard one a second later is SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply
