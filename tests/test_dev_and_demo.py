"""`remedy dev` and `remedy demo` as processes, the way a new user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

REMEDY = [sys.executable, "-m", "starter.cli"]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    temporal_port, ui_port, intake_port = free_port(), free_port(), free_port()
    config = tmp_path / "remedy.toml"
    config.write_text(
        f"""
home = "state"
[temporal]
address = "127.0.0.1:{temporal_port}"
ui_url = "http://127.0.0.1:{ui_port}"
dev_ui_port = {ui_port}
[intake]
port = {intake_port}
[llm]
mode = "auto"
ollama_host = "http://127.0.0.1:{free_port()}"
[services.demo]
repo = "demo/shop.git"
intake_token_env = "REMEDY_DEMO_TOKEN"
approvers = ["demo-reviewer"]
allowed_paths = ["shop/**"]
"""
    )
    env = {**os.environ, "REMEDY_DEMO_TOKEN": "dev-test-token", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("ANTHROPIC_API_KEY", None)
    return config, env


def start_dev(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*REMEDY, "dev", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=config.parent,
    )
    assert process.stdout is not None
    banner = []
    deadline = time.monotonic() + 90
    for line in process.stdout:
        banner.append(line)
        if line.startswith("Press Ctrl-C"):
            break
        if time.monotonic() > deadline or process.poll() is not None:
            break
    text = "".join(banner)
    assert "Temporal UI" in text and "/v1/errors" in text, text
    return process


def stop_dev(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


@pytest.fixture
def dev(workspace: tuple[Path, dict[str, str]]) -> Iterator[subprocess.Popen[str]]:
    config, env = workspace
    process = start_dev(config, env)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_demo_on_a_running_dev_stack_then_state_survives_a_restart(
    workspace: tuple[Path, dict[str, str]], dev: subprocess.Popen[str]
) -> None:
    config, env = workspace
    intake = f"http://127.0.0.1:{_intake_port(config)}"
    assert httpx.get(f"{intake}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{intake}/docs").status_code == 200

    demo = subprocess.run(
        [*REMEDY, "demo", "--json", "--timeout", "400", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        # A cold embedding model and a first index on a busy machine take minutes.
        timeout=420,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    status = json.loads(demo.stdout[demo.stdout.index("{\n") :])
    assert status["phase"] == "triaged"
    assert "no LLM backend" in status["reason"]
    frames = status["evidence"]["frames"]
    assert any(f["path"] == "shop/cart.py" and f["function"] == "apply_discount" for f in frames)
    # Related code comes from the code index, served by `remedy dev`'s separate index worker.
    assert status["evidence"]["related_code"], status["evidence"]
    assert any(h["phase"] == "indexing" for h in status["history"])
    suspect = status["evidence"]["suspect_commits"][0]
    assert suspect["subject"] == "Support discount codes at checkout"
    assert suspect["author"] == "Bob Builder"

    output = stop_dev(dev)
    assert "stopped." in output
    assert not _listening(_intake_port(config))

    restarted = start_dev(config, env)
    try:
        shown = subprocess.run(
            [
                *REMEDY,
                "incidents",
                "show",
                status["incident_id"],
                "--json",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=config.parent,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["phase"] == "triaged"
    finally:
        stop_dev(restarted)


def _intake_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("port = "):
            return int(line.split("=")[1])
    raise AssertionError("no intake port")


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
    except httpx.HTTPError:
        return False
    return True
