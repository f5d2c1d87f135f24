"""A worker process killed in the middle of `notify` or `open_pull_request`, then restarted.

The kill lands after Slack stored the message (or GitHub the pull request) and before the
worker learned of it: the worst moment. The retry, on a fresh worker, must find what the dead
one made: one message, one pull request.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from remedy.config import load_config
from remedy.models import (
    IncidentStatus,
    NotifyRequest,
    NotifyResult,
    Phase,
    Proposal,
    ProposeRequest,
)
from tests.fakes.github_server import TOKEN, GitHubServer
from tests.fakes.incident_factory import APPROVER, CART_BEFORE, make_incident
from tests.fakes.slack_server import BOT_TOKEN, SlackServer
from tests.slack_github_worker import activity_worker

ROOT = Path(__file__).resolve().parents[1]
REPO = "acme/checkout"


@workflow.defn(name="NotifyThenOpenPullRequest")
class NotifyThenOpenPullRequest:
    """The tail of IncidentWorkflow: tell Slack, then open the pull request."""

    @workflow.run
    async def run(self, incident: IncidentStatus) -> Proposal:
        options = {
            "task_queue": f"{workflow.info().task_queue}-activities",
            # A dead worker's activity is retried once this passes without an answer.
            "start_to_close_timeout": timedelta(seconds=2),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(milliseconds=100),
                maximum_interval=timedelta(milliseconds=200),
            ),
        }
        await workflow.execute_activity(
            "notify", NotifyRequest(incident=incident), result_type=NotifyResult, **options
        )
        proposal: Proposal = await workflow.execute_activity(
            "open_pull_request", ProposeRequest(incident=incident), result_type=Proposal, **options
        )
        return proposal


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo(REPO, {"app/cart.py": CART_BEFORE})
        yield server


@pytest.mark.parametrize(
    ("killed_in", "held_call"),
    [("notify", "chat.postMessage"), ("open_pull_request", "POST pulls")],
)
async def test_a_worker_killed_mid_activity_yields_one_message_and_one_pull_request(
    client: Client,
    slack: SlackServer,
    github: GitHubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    killed_in: str,
    held_call: str,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    config_path = tmp_path / "remedy.toml"
    config_path.write_text(
        f'home = "{tmp_path / "home"}"\n'
        f'[slack]\napi_url = "{slack.api_url}"\n'
        f'[github]\napi_url = "{github.api_url}"\nwrite_interval_s = 0\n'
        f'[services.checkout]\nrepo = "{tmp_path}"\nslack_channel = "#checkout-incidents"\n'
        f'github_repo = "{REPO}"\napprovers = ["{APPROVER}"]\n'
    )
    server = slack if killed_in == "notify" else github
    server.fail(held_call, "hold")
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    incident = make_incident(Phase.OPENING_PR, decision="approve")

    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.slack_github_worker", str(config_path),
        client.service_client.config.target_host, client.namespace, f"{queue}-activities",
        cwd=ROOT,
        env=os.environ.copy(),
    )  # fmt: skip
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[NotifyThenOpenPullRequest],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            handle = await client.start_workflow(
                NotifyThenOpenPullRequest.run,
                incident,
                id=f"kill-{queue}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=60),
            )
            assert await asyncio.to_thread(server.wait_held, 30), f"{held_call} never happened"
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()

            with ThreadPoolExecutor(max_workers=4) as executor:
                restarted = activity_worker(
                    client, load_config(config_path), f"{queue}-activities", executor
                )
                async with restarted:
                    proposal = await asyncio.wait_for(handle.result(), 30)
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()

    assert len(slack.top_level()) == 1
    [pull] = github.pulls(REPO)
    assert proposal.pr_url and proposal.pr_url.endswith(f"/pull/{pull['number']}")
    assert github.writes().count("POST /repos/acme/checkout/pulls") == 1
