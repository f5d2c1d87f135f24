"""Hostile tests: what a test command, a conftest.py or a model's regression test tries first.

A repository's tests/conftest.py runs a probe at import in every verification run: it reads
every /proc/*/environ for the worker's planted secret, enters the worker's network namespace,
connects to a port the worker listens on, writes into Remedy's home and outside its copy,
reads ~/.ssh and the env file next to the state directory, tries to be uid 0, writes a host
sysctl, signals the worker, leaves a `setsid` child behind and forks until something stops
it. Each probe records whether it got through, in its copy and in the run's log; every one
must fail while the repository's real pytest suite still gives the same before/after verdict.

The same probe runs once more under an unprivileged user (a worker that is not root), driven
by the system Python through the same runner, where this machine lets that user make user
namespaces.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sandbox import SandboxActivities
from remedy.artifacts import ArtifactStore
from remedy.config import LimitsConfig, RemedyConfig, SandboxConfig, ServiceConfig
from remedy.models import PatchResult, RegressionTest, VerificationResult, VerifyRequest, Worktree
from remedy.sandbox.runner import Unsandboxed, run_confined
from tests.repos import git, make_service_repo
from tests.test_sandbox import (
    CART,
    CART_TEST,
    LIMITS,
    REGRESSION,
    needs_sandbox,
    processes_marked,
    wait_until_gone,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MAX_PROCESSES = 64
NOBODY = 65534
FORK_CAP = 2 * MAX_PROCESSES
INCIDENT = "checkout-0123456789abcdef-b1b2c3d4"
PROBE_LINE = "HOSTILE-PROBES "

# Standard library only: it runs under the worker's Python and under the system one.
PROBE = r'''
"""Try to get out; record each attempt as {"probe", "escaped", "detail"}."""
import json, os, signal, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = json.load(open(os.path.join(HERE, "hostile.json")))


def attempt(name, action):
    try:
        evidence = action()
        return {"probe": name, "escaped": bool(evidence), "detail": str(evidence)[:300]}
    except Exception as exc:
        return {"probe": name, "escaped": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}


def read_environ():
    pids = {CFG["worker_pid"], CFG["secret_pid"], os.getppid()}
    pids |= {int(p) for p in os.listdir("/proc") if p.isdigit()}
    found = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if CFG["secret"].encode() in handle.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def nsenter():
    target = f"--net=/proc/{CFG['worker_pid']}/ns/net"
    done = subprocess.run(["nsenter", target, "true"], capture_output=True, timeout=10)
    return done.returncode == 0 and "entered the worker's network namespace"


def connect():
    socket.create_connection(("127.0.0.1", CFG["port"]), 2).close()
    return "connected"


def write_home():
    written = []
    for name in ("pwned", "temporal.sqlite"):
        with open(os.path.join(CFG["home"], name), "ab") as handle:
            handle.write(b"pwned")
        written.append(name)
    return written


def read_files(paths):
    def read():
        for path in map(os.path.expanduser, paths):
            try:
                if os.path.isdir(path):
                    return f"{path}: {os.listdir(path)}"
                with open(path, "rb") as handle:
                    return f"{path}: {handle.read(80)!r}"
            except OSError:
                continue
        return None
    return read


def write_outside():
    written = []
    for path in CFG["outside"]:
        try:
            with open(path, "w") as handle:
                handle.write("pwned")
            written.append(path)
        except OSError:
            continue
    return written


def be_root():
    if os.getuid() == 0 or os.geteuid() == 0:
        return f"uid {os.getuid()}"
    try:
        os.setuid(0)
        return "setuid(0)"
    except OSError:
        pass
    nested = subprocess.run(["unshare", "-r", "id", "-u"], capture_output=True, timeout=10)
    return nested.returncode == 0 and f"a new user namespace: uid {nested.stdout.strip()}"


def write_sysctl():
    path = "/proc/sys/kernel/printk_ratelimit_burst"
    with open(path) as handle:
        value = handle.read()
    with open(path, "w") as handle:  # the value it has: harmless if this ever got through
        handle.write(value)
    return "wrote a host sysctl"


def signal_worker():
    os.kill(CFG["worker_pid"], 0)
    return "could signal the worker"


def leave_child():
    subprocess.Popen(
        ["setsid", sys.executable, "-c", "import time; time.sleep(300)", CFG["marker"]],
        start_new_session=True,
    )
    return None  # judged by the test, after the run


def fork_bomb():
    children = []
    try:
        while len(children) < CFG["fork_cap"]:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
    except OSError:
        pass
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    FORKED.append(len(children))
    return len(children) >= CFG["fork_cap"] and f"{len(children)} processes"


FORKED = []


def run_all():
    results = [
        attempt("read the worker's environment", read_environ),
        attempt("nsenter into the worker's network", nsenter),
        attempt("connect to the host's loopback", connect),
        attempt("write into Remedy's home", write_home),
        attempt("read ~/.ssh", read_files(CFG["ssh"])),
        attempt("read the env file next to the state dir", read_files([CFG["env_file"]])),
        attempt("write outside the copy", write_outside),
        attempt("be uid 0", be_root),
        attempt("write a host sysctl", write_sysctl),
        attempt("signal the worker", signal_worker),
        attempt("leave a setsid child", leave_child),
        attempt("fork bomb", fork_bomb),
    ]
    report = {"uid": os.getuid(), "forked": FORKED[0] if FORKED else None, "probes": results}
    with open("probes.json", "w") as handle:  # its own copy: the one place it may write
        json.dump(report, handle)
    return report


if __name__ == "__main__":
    CFG["worker_pid"] = int(sys.argv[1])  # the driver's: unknown when the file was written
    print("HOSTILE-PROBES " + json.dumps(run_all()), flush=True)
'''

# pytest captures what a conftest prints while it is imported; the terminal summary is not.
CONFTEST = """
from hostile_probe import run_all

REPORT = run_all()


def pytest_terminal_summary(terminalreporter):
    import json

    terminalreporter.write_line("HOSTILE-PROBES " + json.dumps(REPORT))
"""

UNITTEST_CART = """import unittest

from app.cart import total


class CartTest(unittest.TestCase):
    def test_total(self):
        self.assertEqual(total([{"price": 2, "qty": 3}]), 6)
"""


@dataclass
class Planted:
    """What the worker's side holds that a test must never read or change."""

    secret: str
    secret_pid: int
    home: Path
    env_file: Path
    ssh_key: Path
    outside: list[Path]
    marker: str

    def probe_config(self, port: int, worker_pid: int) -> str:
        ssh = [str(self.ssh_key), str(self.ssh_key.parent), "/root/.ssh", "~/.ssh"]
        return json.dumps(
            {
                "secret": self.secret,
                "worker_pid": worker_pid,
                "secret_pid": self.secret_pid,
                "port": port,
                "home": str(self.home),
                "env_file": str(self.env_file),
                "ssh": ssh,
                "outside": [str(path) for path in self.outside],
                "marker": self.marker,
                "fork_cap": FORK_CAP,
            }
        )

    def assert_untouched(self) -> None:
        assert not (self.home / "pwned").exists()
        assert (self.home / "temporal.sqlite").read_bytes() == b"SQLite format 3\0"
        for path in self.outside:
            assert not path.exists(), path


SECRET_NAMES = ("GITHUB_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
StartWorker = Callable[[str, int | None], int]


@pytest.fixture
def start_worker() -> Iterator[StartWorker]:
    """Starts a process that holds the secrets from its start, as a deployed worker does
    (a later setenv never shows in /proc/<pid>/environ); yields (secret, uid) -> its pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(secret: str, uid: int | None) -> int:
        drop = (
            [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        )
        env = {"PATH": "/usr/bin:/bin", **dict.fromkeys(SECRET_NAMES, secret)}
        started.append(subprocess.Popen([*drop, "sleep", "600"], env=env))
        return started[-1].pid

    yield start
    for process in started:
        process.kill()
        process.wait()


def plant(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_worker: StartWorker,
    extra_outside: list[Path],
    uid: int | None = None,
) -> Planted:
    secret = f"planted-secret-{uuid.uuid4().hex}"
    for name in SECRET_NAMES:
        monkeypatch.setenv(name, secret)
    secret_pid = start_worker(secret, uid)
    worker_home = root / "worker-home"
    (worker_home / ".ssh").mkdir(parents=True)
    ssh_key = worker_home / ".ssh" / "id_ed25519"
    ssh_key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n")
    monkeypatch.setenv("HOME", str(worker_home))
    home = root / "home"
    home.mkdir()
    (home / "temporal.sqlite").write_bytes(b"SQLite format 3\0")
    env_file = root / ".env"
    env_file.write_text(f"GITHUB_TOKEN={secret}\n")
    outside = [root / "pwned", Path(sys.prefix) / "pwned", Path("/usr/pwned"), *extra_outside]
    marker = f"remedy-hostile-{uuid.uuid4().hex}"
    return Planted(secret, secret_pid, home, env_file, ssh_key, outside, marker)


@dataclass
class Listener:
    port: int
    peers: list[str]


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A port on the host's loopback that records who reached it."""
    server = socket.create_server(("127.0.0.1", 0))
    served = Listener(port=server.getsockname()[1], peers=[])
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, peer = server.accept()
                served.peers.append(str(peer))
                conn.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield served
    stop.set()
    thread.join(2)
    server.close()


def probe_reports(log: str) -> list[dict[str, Any]]:
    reports = [
        json.loads(line[len(PROBE_LINE) :])
        for line in log.splitlines()
        if line.startswith(PROBE_LINE)
    ]
    assert reports, f"the probe did not report:\n{log[-3000:]}"
    return reports


def assert_nothing_escaped(report: dict[str, Any]) -> None:
    escaped = [f"{p['probe']}: {p['detail']}" for p in report["probes"] if p["escaped"]]
    assert escaped == [], escaped
    assert report["uid"] == 65534
    assert 0 < report["forked"] < MAX_PROCESSES, report["forked"]


# ---------------------------------------------------------------------------- the worker here


@needs_sandbox
async def test_hostile_tests_take_nothing_and_change_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listener: Listener,
    start_worker: StartWorker,
) -> None:
    repo = make_service_repo(tmp_path)
    planted = plant(
        tmp_path, monkeypatch, start_worker, [repo.work / "pwned", repo.origin / "pwned"]
    )
    files = {
        "app/__init__.py": "",
        "app/cart.py": CART,
        "tests/test_cart.py": CART_TEST,
        "tests/conftest.py": CONFTEST,
        "tests/hostile_probe.py": PROBE,
        "tests/hostile.json": planted.probe_config(listener.port, os.getpid()),
    }
    commit = repo.commit(files, "Add cart, with a conftest that wants out")
    store = ArtifactStore(tmp_path / "artifacts")
    (repo.work / "app/cart.py").write_text(CART.replace('item["qty"]', 'item.get("qty", 1)'))
    diff = git(repo.work, "diff", "--no-color") + "\n"
    git(repo.work, "checkout", "--", "app/cart.py")
    patch = PatchResult(
        applied=True,
        files=["app/cart.py"],
        lines_added=1,
        lines_removed=1,
        diff=store.put_text(f"{INCIDENT}/patch.diff", diff),
    )
    test = RegressionTest(
        path="tests/test_regression_qty.py",
        content=store.put_text(f"{INCIDENT}/regression/test_file.py", REGRESSION),
    )
    command = f"{PYTHON} -m pytest -q -p no:cacheprovider"
    config = RemedyConfig(
        home=str(planted.home),
        limits=LimitsConfig(test_timeout_s=60, test_cpu_s=60),
        sandbox=SandboxConfig(max_processes=MAX_PROCESSES),
        services={"checkout": ServiceConfig(repo=str(repo.origin), test_command=command)},
    )
    worktree = Worktree(
        service="checkout",
        path=str(repo.work),
        commit=commit,
        branch="main",
        commit_source="release",
    )
    request = VerifyRequest(
        incident_id=INCIDENT, worktree=worktree, patch=patch, regression_test=test
    )
    activities = SandboxActivities(config, store)
    result: VerificationResult = await ActivityEnvironment().run(activities.verify_patch, request)

    # The verdict is what the real suite says, probes or not.
    logs = "\n".join(store.get_text(run.log)[-2000:] for run in result.runs if run.log)
    assert result.status == "passed", f"{result.summary}\n{logs}"
    assert result.reproduced is True and result.tests_run == 1, result.summary
    assert [run.exit_code == 0 for run in result.runs] == [True, False, True, True]
    for run in result.runs:
        assert not run.timed_out and run.duration_s < 60
        assert run.log is not None
        (report,) = probe_reports(store.get_text(run.log))
        assert_nothing_escaped(report)
    planted.assert_untouched()
    assert listener.peers == []
    assert git(repo.work, "status", "--porcelain") == ""
    assert await wait_until_gone(planted.marker) == []


async def test_without_the_sandbox_the_same_probe_gets_through(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listener: Listener,
    start_worker: StartWorker,
) -> None:
    """The control: the probe is no paper tiger. Only folders under tmp_path are written."""
    planted = plant(tmp_path, monkeypatch, start_worker, [])
    planted.outside = [tmp_path / "pwned"]
    copy = tmp_path / "src"
    (copy / "tests").mkdir(parents=True)
    (copy / "tests/hostile_probe.py").write_text(PROBE)
    (copy / "tests/hostile.json").write_text(planted.probe_config(listener.port, 0))
    try:
        await run_confined(
            f"{PYTHON} tests/hostile_probe.py {os.getpid()}",
            copy=copy,
            home=tmp_path / "home",
            log=tmp_path / "run.log",
            limits=LIMITS,
            confinement=Unsandboxed(network=None),
        )
        (report,) = probe_reports((tmp_path / "run.log").read_text())
    finally:
        for pid in processes_marked(planted.marker):
            os.kill(pid, signal.SIGKILL)
    escaped = {probe["probe"] for probe in report["probes"] if probe["escaped"]}
    expected = {
        "read the worker's environment",
        "connect to the host's loopback",
        "write into Remedy's home",
        "read ~/.ssh",
        "read the env file next to the state dir",
        "write outside the copy",
        "signal the worker",
        "fork bomb",
    }
    if os.geteuid() == 0:
        expected |= {"nsenter into the worker's network", "be uid 0", "write a host sysctl"}
    assert expected <= escaped, report
    assert listener.peers != [] and (planted.home / "pwned").exists()


# ---------------------------------------------------------------------------- a non-root worker

DRIVER = """
import asyncio, dataclasses, json, os, sys
from pathlib import Path

from remedy.sandbox.bwrap import python_prefixes, read_only_paths
from remedy.sandbox.limits import SandboxLimits
from remedy.sandbox.runner import find_bubblewrap, probe, run_confined

copy, log = Path(sys.argv[1]), Path(sys.argv[2])
limits = SandboxLimits(
    wall_s=60, cpu_s=60, memory_bytes=1 << 30, file_bytes=64 << 20, processes=int(sys.argv[3])
)
found = find_bubblewrap(read_only_paths(python_prefixes(sys.executable)), (65534, 65534))
reason = found if isinstance(found, str) else asyncio.run(probe(found, limits))
if reason:
    print(json.dumps({"no_sandbox": reason}))
    sys.exit(0)
py = sys.executable
command = (
    f"{py} tests/hostile_probe.py {os.getpid()} && {py} -m unittest discover -s tests -t . -v"
)
outcome = asyncio.run(
    run_confined(command, copy=copy, home=copy, log=log, limits=limits, confinement=found)
)
print(json.dumps({"outcome": dataclasses.asdict(outcome), "run_as": found.run_as}))
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder the unprivileged user owns (pytest's tmp_path is root's, mode 0700), so what
    the probe must not reach is reachable to that user outside the sandbox."""
    base = Path(tempfile.mkdtemp(prefix="remedy-unprivileged-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _drive_unprivileged(
    base: Path, planted: Planted, port: int, python: str
) -> tuple[dict[str, Any], str]:
    """Run the probe and a unittest suite through the runner as uid NOBODY; (answer, log)."""
    copy, log = base / "src", base / "run.log"
    files = {
        "app/__init__.py": "",
        "app/cart.py": CART,
        "tests/__init__.py": "",
        "tests/test_cart.py": UNITTEST_CART,
        "tests/hostile_probe.py": PROBE,
        "tests/hostile.json": planted.probe_config(port, 0),
    }
    for name, text in files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)
    (base / "driver.py").write_text(DRIVER)
    for folder, dirs, names in os.walk(base):
        for name in (".", *dirs, *names):
            os.chown(os.path.join(folder, name), NOBODY, NOBODY, follow_symlinks=False)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": os.environ["HOME"],
        "GITHUB_TOKEN": planted.secret,
    }
    drop = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    arguments = [str(base / "driver.py"), str(copy), str(log), str(MAX_PROCESSES)]
    driver = subprocess.run(
        ["setpriv", *drop, python, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert driver.returncode == 0, driver.stdout + driver.stderr
    answer = json.loads(driver.stdout.strip().splitlines()[-1])
    return answer, log.read_text(errors="replace") if log.exists() else ""


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the worker already runs as a non-root user: the test above"
)
async def test_as_an_unprivileged_worker_hostile_tests_take_nothing(
    monkeypatch: pytest.MonkeyPatch,
    listener: Listener,
    start_worker: StartWorker,
    open_folder: Path,
) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system Python for an unprivileged driver")
    outside = open_folder / "outside"
    outside.mkdir()
    planted = plant(open_folder, monkeypatch, start_worker, [outside / "pwned"], NOBODY)
    answer, output = await asyncio.to_thread(
        _drive_unprivileged, open_folder, planted, listener.port, python
    )
    if "no_sandbox" in answer:
        pytest.skip(f"uid {NOBODY} cannot run bubblewrap here: {answer['no_sandbox']}")
    assert answer["run_as"] is None  # not root: bwrap runs as the worker's own user
    outcome = answer["outcome"]
    assert outcome["exit_code"] == 0 and not outcome["timed_out"], output
    assert "Ran 1 test" in output and "OK" in output, output
    (report,) = probe_reports(output)
    assert_nothing_escaped(report)
    planted.assert_untouched()
    assert listener.peers == []
    assert await wait_until_gone(planted.marker) == []
    assert (open_folder / "src" / "probes.json").exists()  # its own copy: written, and only it
