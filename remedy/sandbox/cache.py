"""Results of finished test runs, kept so that no run is repeated for the same inputs.

A run's result is a function of what it sees: the files of its copy (a git tree, plus the
regression test written into it), the command line, and where it runs (the confinement, its
limits, the interpreter and its installed packages, PATH and LANG). `RunInputs.key()` hashes
all of them, so a second incident on the same commit reuses the suite's "before" run, and a
retried verification reuses every run it finished before it was interrupted, while another
commit, command or environment never matches.

Entries live under Remedy's home, which no test run can see or write (docs/sandbox.md), and
only results of runs that ended on their own are kept: not one that timed out, was killed by
a signal or was cancelled with its activity. An entry is two files written atomically, the
log first and the record naming the log's hash last, so a crash between them leaves a record
that does not exist or a log without one; either reads as a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path

from remedy.artifacts import ArtifactStore
from remedy.sandbox.limits import SandboxLimits
from remedy.sandbox.runner import Confinement, scrubbed_env

FORMAT = 1
MAX_ENTRIES = 2000  # the oldest go first; a run no longer kept only costs running it again


def environment_of(confinement: Confinement, limits: SandboxLimits) -> str:
    """A hash of everything outside the copy that a run's result depends on."""
    packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    for shown in getattr(confinement, "read_only", ()):  # the installations a run can read
        packages.update(str(path) for path in Path(shown).glob("lib/python*/site-packages"))
    described = {
        "format": FORMAT,
        "confinement": type(confinement).__name__,
        "how": asdict(confinement),
        "limits": asdict(limits),
        "python": [os.path.realpath(sys.executable), sys.version],
        # Installing or removing a package changes its site-packages folder's mtime.
        "packages": sorted((path, _mtime_ns(path)) for path in packages),
        "env": {k: v for k, v in scrubbed_env("/").items() if k != "HOME"},
    }
    return _digest(described)


@dataclass(frozen=True)
class RunInputs:
    """What one run sees; equal inputs give the same key."""

    tree: str
    command: str
    environment: str
    written: tuple[str, str] | None = None  # (path, sha256) of a file written into the copy

    def key(self) -> str:
        return _digest(asdict(self))


@dataclass(frozen=True)
class RunRecord:
    """The result of a finished run, as verify_patch reports it."""

    exit_code: int | None
    timed_out: bool
    signal: str | None
    duration_s: float
    passed: int | None
    failed: int | None
    failures: list[str] = field(default_factory=list)
    log: bytes = b""
    commit: str = ""  # the commit whose verification ran it

    @property
    def reusable(self) -> bool:
        """Whether the run ended on its own: a timeout or a kill may be the machine's doing."""
        return self.exit_code is not None and not self.timed_out and self.signal is None


class RunCache:
    """Finished runs by `RunInputs.key()`, in a folder no test run can see."""

    def __init__(self, root: Path, max_entries: int = MAX_ENTRIES) -> None:
        self._root = root
        self._store = ArtifactStore(root)
        self._max_entries = max_entries

    def get(self, key: str) -> RunRecord | None:
        try:
            record = self._store.get_json(f"{key}.json")
            log = self._store.get_bytes(f"{key}.log")
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        if record.pop("log_sha256", None) != hashlib.sha256(log).hexdigest():
            return None  # a log without its record's hash: not the run the record describes
        record.pop("format")
        try:
            return RunRecord(**record, log=log)
        except TypeError:
            return None

    def put(self, key: str, run: RunRecord) -> None:
        if not run.reusable:
            return
        stored = self._store.put_bytes(f"{key}.log", run.log)  # redacted as logs are
        record = {k: v for k, v in asdict(run).items() if k != "log"}
        self._store.put_json(
            f"{key}.json", {**record, "format": FORMAT, "log_sha256": stored.sha256}
        )
        self._prune()

    def _prune(self) -> None:
        """Keep the newest `max_entries`: the record goes first, so a reader sees a miss."""
        entries = []
        for entry in os.scandir(self._root):
            if entry.name.endswith(".json"):
                with contextlib.suppress(OSError):
                    entries.append((entry.stat().st_mtime_ns, entry.path))
        for _, record in sorted(entries)[: max(len(entries) - self._max_entries, 0)]:
            for path in (record, record.removesuffix(".json") + ".log"):
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
