"""Slack clicks: signed requests into POST /slack/events (and Socket Mode) become `decide` Updates.

The workflow here is a stand-in with the real one's names and validator (`status` query,
`decide` Update refused by `remedy.policy.approval_refusal`), so the listener is tested against
real Temporal without running the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.slack import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    SlackActivities,
    render_message,
)
from remedy import names, policy
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, ServiceConfig, SlackConfig
from remedy.models import (
    DecideRequest,
    DecideResult,
    Decision,
    IncidentStatus,
    NotifyRequest,
)
from starter.slack import REASON_INPUT_ID, SlackListener, mount_slack, slack_listener
from tests.fakes.incident_factory import APPROVER, make_incident
from tests.fakes.slack_server import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackServer,
    block_actions,
    form_body,
    signed_headers,
    view_submission,
)

TASK_QUEUE = "slack-clicks"


@workflow.defn(name="IncidentWorkflow")
class ApprovalStandIn:
    """Awaits one decision like IncidentWorkflow (same names, same validator) and counts the
    decisions it accepted."""

    @workflow.init
    def __init__(self, status: IncidentStatus) -> None:
        self._status = status
        self._accepted = 0

    @workflow.run
    async def run(self, status: IncidentStatus) -> IncidentStatus:
        await workflow.wait_condition(lambda: False, timeout=600)
        return self._status

    @workflow.query(name="status")
    def status(self) -> IncidentStatus:
        return self._status

    @workflow.query(name="accepted")
    def accepted(self) -> int:
        return self._accepted

    @workflow.update(name="decide")
    def decide(self, request: DecideRequest) -> DecideResult:
        assert self._status.approval is not None
        self._accepted += 1
        decision = Decision(
            decision=request.decision,
            approver=request.approver,
            reason=request.reason,
            at=workflow.now(),
        )
        self._status.approval.decision = decision
        return DecideResult(
            incident_id=self._status.incident_id, phase=self._status.phase, decision=decision
        )

    @decide.validator
    def _validate(self, request: DecideRequest) -> None:
        refusal = policy.approval_refusal(self._status.phase, self._status.approval, request)
        if refusal:
            raise ApplicationError(refusal, type="DecisionRefused", non_retryable=True)


@pytest.fixture(scope="module")
async def temporal(client: Client) -> AsyncIterator[Client]:
    """The session's Temporal dev server with a worker for the stand-in workflow."""
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[ApprovalStandIn],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield client


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture
def config(slack: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    return RemedyConfig(
        home=str(tmp_path / "home"),
        slack=SlackConfig(api_url=slack.api_url),
        services={
            "checkout": ServiceConfig(
                repo=str(tmp_path), slack_channel="#checkout-incidents", approvers=[APPROVER]
            )
        },
    )


@pytest.fixture
async def intake(config: RemedyConfig, temporal: Client) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    assert mount_slack(app, config, lambda: temporal) is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


async def open_incident(
    temporal: Client, slack: SlackServer, config: RemedyConfig
) -> tuple[IncidentStatus, dict]:
    """Start a stand-in incident awaiting approval and post its message through `notify`."""
    incident = make_incident(fingerprint=uuid.uuid4().hex[:16])
    await temporal.start_workflow(
        "IncidentWorkflow",
        incident,
        id=names.workflow_id_for("checkout", incident.fingerprint),
        task_queue=TASK_QUEUE,
    )
    activities = SlackActivities(config, ArtifactStore(config.artifacts_dir))
    result = await ActivityEnvironment().run(activities.notify, NotifyRequest(incident=incident))
    [message] = [m for m in slack.top_level() if m["ts"] == result.ts]
    return incident, message


async def post_signed(intake: httpx.AsyncClient, payload: dict, **sign: object) -> httpx.Response:
    body = form_body(payload)
    return await intake.post("/slack/events", content=body, headers=signed_headers(body, **sign))  # type: ignore[arg-type]


async def decision_of(temporal: Client, incident: IncidentStatus) -> Decision | None:
    handle = temporal.get_workflow_handle(incident.workflow_id)
    status = await handle.query("status", result_type=IncidentStatus)
    return status.approval.decision if status.approval else None


async def decided(temporal: Client, incident: IncidentStatus, timeout: float = 10) -> Decision:
    deadline = time.monotonic() + timeout
    while (decision := await decision_of(temporal, incident)) is None:
        assert time.monotonic() < deadline, f"no decision on {incident.incident_id}"
        await asyncio.sleep(0.05)
    return decision


async def test_forged_or_stale_signatures_get_401_and_touch_nothing(
    temporal: Client, slack: SlackServer, config: RemedyConfig, intake: httpx.AsyncClient
) -> None:
    incident, message = await open_incident(temporal, slack, config)
    calls_before = len(slack.calls)
    click = block_actions(message, APPROVE_ACTION_ID, APPROVER)

    forged = await post_signed(intake, click, secret="not-the-signing-secret")
    stale = await post_signed(intake, click, timestamp=int(time.time()) - 600)
    unsigned = await intake.post("/slack/events", content=form_body(click))

    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    await asyncio.sleep(0.3)  # give a wrongly started listener the time to act
    assert slack.calls[calls_before:] == []
    assert await decision_of(temporal, incident) is None


async def test_an_approver_click_is_acked_decided_and_shown(
    temporal: Client, slack: SlackServer, config: RemedyConfig, intake: httpx.AsyncClient
) -> None:
    incident, message = await open_incident(temporal, slack, config)

    started = time.monotonic()
    response = await post_signed(intake, block_actions(message, APPROVE_ACTION_ID, APPROVER))
    assert response.status_code == 200
    assert time.monotonic() - started < 3, "Slack retries clicks not acked within 3 seconds"

    def edited() -> dict | None:
        [now] = [m for m in slack.top_level() if m["ts"] == message["ts"]]
        return now if "edited" in now else None

    shown = await slack.wait_for_async(edited)
    decision = await decided(temporal, incident)
    assert (decision.decision, decision.approver) == ("approve", APPROVER)
    assert f"Approved by <@{APPROVER}>" in json.dumps(shown["blocks"])
    assert not any(block["type"] == "actions" for block in shown["blocks"])
    assert slack.ephemerals == []


async def test_an_unauthorised_click_changes_nothing_and_is_told_why(
    temporal: Client, slack: SlackServer, config: RemedyConfig, intake: httpx.AsyncClient
) -> None:
    incident, message = await open_incident(temporal, slack, config)

    response = await post_signed(intake, block_actions(message, APPROVE_ACTION_ID, "UINTRUDER"))

    assert response.status_code == 200
    [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
    assert ephemeral["user"] == "UINTRUDER"
    assert "'UINTRUDER' is not an approver of this incident" in ephemeral["text"]
    assert await decision_of(temporal, incident) is None
    assert "chat.update" not in slack.methods_called()


async def test_a_double_click_yields_one_decision(
    temporal: Client, slack: SlackServer, config: RemedyConfig, intake: httpx.AsyncClient
) -> None:
    incident, message = await open_incident(temporal, slack, config)
    click = block_actions(message, APPROVE_ACTION_ID, APPROVER)

    first, second = await asyncio.gather(post_signed(intake, click), post_signed(intake, click))

    assert first.status_code == second.status_code == 200
    [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
    assert "already approved" in ephemeral["text"] or "not awaiting" in ephemeral["text"]
    handle = temporal.get_workflow_handle(incident.workflow_id)
    assert await handle.query("accepted", result_type=int) == 1


async def test_reject_asks_for_a_reason_in_a_modal(
    temporal: Client, slack: SlackServer, config: RemedyConfig, intake: httpx.AsyncClient
) -> None:
    incident, message = await open_incident(temporal, slack, config)

    click = block_actions(message, REJECT_ACTION_ID, APPROVER)
    assert (await post_signed(intake, click)).status_code == 200
    [opened] = await slack.wait_for_async(lambda: slack.views)
    assert opened["trigger_id"] == click["trigger_id"]
    assert await decision_of(temporal, incident) is None, "a click on Reject alone decides nothing"

    submit = view_submission(opened["view"], APPROVER, {REASON_INPUT_ID: "touches billing"})
    assert (await post_signed(intake, submit)).status_code == 200

    decision = await decided(temporal, incident)
    assert (decision.decision, decision.reason) == ("reject", "touches billing")


async def test_socket_mode_delivers_the_same_clicks(
    temporal: Client, slack: SlackServer, config: RemedyConfig
) -> None:
    socket_config = config.model_copy(
        update={"slack": config.slack.model_copy(update={"socket_mode": True})}
    )
    app = FastAPI()
    listener = mount_slack(app, socket_config, lambda: temporal)
    assert listener is not None and listener.socket_mode
    assert not any(getattr(r, "path", "") == "/slack/events" for r in app.routes)
    incident, message = await open_incident(temporal, slack, config)

    await listener.start()
    try:
        ack = await asyncio.to_thread(
            slack.send_envelope, block_actions(message, APPROVE_ACTION_ID, APPROVER)
        )
        assert "envelope_id" in ack
        decision = await decided(temporal, incident)
    finally:
        await listener.stop()
    assert decision.approver == APPROVER


async def test_without_tokens_slack_is_off(
    config: RemedyConfig, temporal: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert slack_listener(config, lambda: temporal) is None
    app = FastAPI()
    assert mount_slack(app, config, lambda: temporal) is None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://intake"
    ) as client:
        assert (await client.post("/slack/events", content=b"{}")).status_code == 404


async def test_a_click_nobody_processes_is_not_confirmed(
    temporal: Client, slack: SlackServer, config: RemedyConfig
) -> None:
    incident = make_incident(fingerprint=uuid.uuid4().hex[:16])
    await temporal.start_workflow(
        "IncidentWorkflow",
        incident,
        id=names.workflow_id_for("checkout", incident.fingerprint),
        task_queue="no-worker-polls-this",
    )
    listener = SlackListener(
        config, lambda: temporal, bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET,
        decide_timeout_s=0.5,
    )  # fmt: skip
    app = FastAPI()
    app.add_api_route("/slack/events", listener.handle, methods=["POST"])
    message = {"ts": "1.000001", "channel": "C0INCIDENTS", "blocks": render_message(incident)[1]}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://intake"
    ) as intake:
        click = block_actions(message, APPROVE_ACTION_ID, APPROVER)
        assert (await post_signed(intake, click)).status_code == 200
        [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
    assert "not confirmed" in ephemeral["text"]
    await temporal.get_workflow_handle(incident.workflow_id).terminate()
