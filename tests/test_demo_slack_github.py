"""`remedy demo` with Slack and GitHub configured: a signed Approve click opens a draft PR.

The demo runs as a process, the way a new user runs it, and starts its own Temporal, worker
and intake. The model is the instant LLM double; Slack and GitHub are the loopback servers,
spoken to by the real slack_sdk / PyGithub clients inside the demo's worker and intake. The
click is what Slack would send to the intake's POST /slack/events: a block_actions payload
signed with the app's signing secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from starter.demo import build_demo_repository
from tests.conftest import free_port
from tests.fakes.github_server import TOKEN as GITHUB_TOKEN
from tests.fakes.github_server import GitHubServer
from tests.fakes.llm_double import instant_llm
from tests.fakes.slack_server import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackServer,
    block_actions,
    form_body,
    signed_headers,
)
from tests.repos import git

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
GITHUB_REPO = "acme/demo"
CHANNEL_ID = "C0DEMO"
APPROVER = "U0DEMOREVIEW"
FIXED_LINE = "DISCOUNTS.get(code, 0.0)"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(channels={CHANNEL_ID: "demo-incidents"}) as server:
        yield server


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """The demo's bare origin, built before the demo runs (which then reuses it)."""
    origin = tmp_path / "demo" / "shop.git"
    build_demo_repository(origin)
    return origin


@pytest.fixture
def github(origin: Path) -> Iterator[GitHubServer]:
    """The loopback GitHub holding the demo repository as it is at its head."""
    work = origin.parent / "shop-work"
    with GitHubServer() as server:
        tracked = git(work, "ls-files").splitlines()
        server.add_repo(GITHUB_REPO, {path: (work / path).read_text() for path in tracked})
        yield server


def decision_buttons(message: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def wait_for(predicate: Any, demo: subprocess.Popen[str], workspace: Path, timeout_s: float) -> Any:
    """Poll `predicate` while the demo still runs; the demo's output on failure."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if demo.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"waited {timeout_s}s for {predicate.__name__} (demo exit {demo.poll()}):\n"
                + output(workspace)
            )
        time.sleep(0.1)
    return value


def output(workspace: Path) -> str:
    """The tail of the demo's own output and of its Temporal, worker and intake logs."""
    found = [*workspace.glob("demo.std*"), *(workspace / "state" / "logs").glob("*.log")]
    return "\n".join(
        f"--- {path.relative_to(workspace)}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(found)
    )


def test_demo_opens_a_draft_pull_request_after_a_signed_slack_click(
    tmp_path: Path, origin: Path, slack: SlackServer, github: GitHubServer
) -> None:
    intake_port = free_port()
    ui_port = free_port()
    with instant_llm() as ollama:
        config = tmp_path / "remedy.toml"
        config.write_text(
            f"""
home = "state"
[temporal]
address = "127.0.0.1:{free_port()}"
ui_url = "http://127.0.0.1:{ui_port}"
dev_ui_port = {ui_port}
[intake]
port = {intake_port}
[llm]
mode = "local"
ollama_host = "{ollama.url}"
[slack]
api_url = "{slack.api_url}"
[github]
api_url = "{github.api_url}"
write_interval_s = 0
draft = true
[services.demo]
repo = "demo/shop.git"
intake_token_env = "REMEDY_DEMO_TOKEN"
slack_channel = "#demo-incidents"
github_repo = "{GITHUB_REPO}"
approvers = ["{APPROVER}"]
allowed_paths = ["shop/**"]
test_command = "python -m pytest -q -p no:cacheprovider"
"""
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "GITHUB_TOKEN": GITHUB_TOKEN,
        }
        env.pop("REMEDY_DEMO_TOKEN", None)
        with (
            (tmp_path / "demo.stdout").open("w") as stdout,
            (tmp_path / "demo.stderr").open("w") as stderr,
        ):
            demo = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "starter.cli",
                    "demo",
                    "--until-done",
                    "--timeout",
                    "90",
                    "--json",
                    "--config",
                    str(config),
                ],
                stdout=stdout,
                stderr=stderr,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        try:

            def approve_button() -> list[dict[str, Any]]:
                return [m for m in slack.top_level(CHANNEL_ID) if decision_buttons(m)]

            [message] = wait_for(approve_button, demo, tmp_path, timeout_s=90)
            assert len(slack.top_level()) == 1

            body = form_body(block_actions(message, "remedy_approve", APPROVER))
            clicked = httpx.post(
                f"http://127.0.0.1:{intake_port}/slack/events",
                content=body,
                headers=signed_headers(body),
                timeout=10,
            )
            assert clicked.status_code == 200, clicked.text
            demo.wait(timeout=90)
        finally:
            if demo.poll() is None:
                # Ctrl-C lets the demo stop the Temporal, worker and intake it started.
                demo.send_signal(signal.SIGINT)
                try:
                    demo.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    demo.kill()
                    demo.wait()
    assert demo.returncode == 0, output(tmp_path)

    stdout_text = (tmp_path / "demo.stdout").read_text()
    status = json.loads(stdout_text[stdout_text.index("{\n") :])
    assert status["phase"] == "pr_opened", status["reason"]
    assert status["verification"]["status"] == "passed", status["verification"]
    assert status["approval"]["decision"]["approver"] == APPROVER
    proposal = status["proposal"]
    branch = f"remedy/{status['incident_id']}"
    assert proposal["branch"] == branch

    [pull] = github.pulls(GITHUB_REPO)
    assert pull["pull"]["head"] == branch and pull["pull"]["draft"] is True
    assert proposal["pr_url"].endswith(f"/pull/{pull['number']}")
    fixed = github.file_at(GITHUB_REPO, pull["pull"]["head_sha"], "shop/cart.py")
    assert fixed is not None and FIXED_LINE in fixed
    assert f"Approved by {APPROVER}" in pull["body"]

    [shown] = slack.top_level(CHANNEL_ID)
    assert shown["ts"] == message["ts"] and "edited" in shown
    assert proposal["pr_url"] in json.dumps(shown["blocks"])
    assert decision_buttons(shown) == []

    pushed = git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/remedy/")
    assert pushed == "", "with github_repo set nothing is pushed to the demo's origin"
    assert git(origin, "for-each-ref", "--format=%(refname)", "refs/heads/") == "refs/heads/main"
