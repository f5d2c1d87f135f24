"""Slack clicks: signed requests into POST /slack/events (and Socket Mode) become `decide` Updates.

Each incident is the real IncidentWorkflow, driven to awaiting_approval by activity doubles
whose diagnosis has edits (tests/workflow_harness.py), except `notify`: the real Slack activity
posts the message with the buttons on a loopback Slack, so every click carries the incident id
and approval request id the workflow made. Clicks arrive through the intake app (create_app),
and the workflow's own validator decides who may decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.slack import SlackActivities
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, ServiceConfig, SlackConfig
from remedy.models import Decision, IncidentStart, IncidentStatus, IntakeResponse, Phase
from remedy.render.slack import (
    APPROVE_ACTION_ID,
    DECISION_BLOCK_ID,
    REJECT_ACTION_ID,
    button_value,
)
from remedy.render.slack_modal import REASON_INPUT_ID
from starter.app import create_app
from starter.slack import SlackListener, mount_slack, slack_listener
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
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    eventually,
    fix_diagnosis,
    make_start,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow

Handle = WorkflowHandle[IncidentWorkflow, IncidentStatus]


class NoReports:
    """The intake's reporter: a click on a button never reports an error."""

    async def report(self, start: IncidentStart) -> IntakeResponse:
        raise AssertionError(f"a Slack click reported an error of {start.service}")


@dataclass
class OpenIncident:
    handle: Handle
    status: IncidentStatus
    message: dict[str, Any]


async def _end(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminate the incident if it still runs: a run closes at its outcome, perhaps while
    this is asked."""
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        with contextlib.suppress(RPCError):
            await handle.terminate("test over")


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
            "shop": ServiceConfig(
                repo=str(tmp_path), slack_channel="#checkout-incidents", approvers=[APPROVER]
            )
        },
    )


@pytest.fixture
def fakes() -> FakeActivities:
    return FakeActivities(diagnosis=fix_diagnosis())


@pytest.fixture
async def task_queue(
    client: Client, config: RemedyConfig, fakes: FakeActivities
) -> AsyncIterator[str]:
    """A worker for the real workflow: activity doubles, and the real Slack `notify`."""
    queue = f"slack-clicks-{uuid.uuid4()}"
    notify = SlackActivities(config, ArtifactStore(config.artifacts_dir)).notify
    activities = [a for a in fakes.all() if a.__name__ != "notify"] + [notify]
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=activities
    ):
        yield queue


@pytest.fixture
async def incident(
    client: Client, task_queue: str, slack: SlackServer
) -> AsyncIterator[OpenIncident]:
    """An incident awaiting approval, its Slack message posted and the workflow idle."""
    handle = await start_incident(client, task_queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    def with_buttons() -> dict[str, Any] | None:
        return next((m for m in slack.top_level() if _buttons(m)), None)

    message = await slack.wait_for_async(with_buttons)
    await _idle(handle)
    yield OpenIncident(handle, status, message)
    await _end(handle)


@pytest.fixture
async def intake(config: RemedyConfig, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, reporter=NoReports(), client=client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        yield http


def _buttons(message: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message.get("blocks", [])
        if block.get("block_id") == DECISION_BLOCK_ID
        for element in block["elements"]
    ]


async def _idle(handle: Handle) -> None:
    """Wait until no activity of the incident runs (notify has finished talking to Slack)."""

    async def no_pending() -> bool:
        return not (await handle.describe()).raw_description.pending_activities

    await eventually(no_pending, timeout_s=10)


async def post_signed(intake: httpx.AsyncClient, payload: dict, **sign: Any) -> httpx.Response:
    body = form_body(payload)
    return await intake.post("/slack/events", content=body, headers=signed_headers(body, **sign))


async def decision_of(handle: Handle) -> Decision | None:
    status = await handle.query(IncidentWorkflow.status)
    return status.approval.decision if status.approval else None


async def accepted_decisions(handle: Handle) -> int:
    """Updates the workflow accepted, from its history (a refused one leaves no trace there)."""
    history = await handle.fetch_history()
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    return sum(1 for event in history.events if event.event_type == accepted)


async def test_the_buttons_carry_the_workflows_incident_and_request_ids(
    incident: OpenIncident,
) -> None:
    assert _buttons(incident.message) == [APPROVE_ACTION_ID, REJECT_ACTION_ID]
    approval = incident.status.approval
    assert approval is not None
    click = block_actions(incident.message, APPROVE_ACTION_ID, APPROVER)
    assert json.loads(click["actions"][0]["value"]) == {
        "incident_id": incident.status.incident_id,
        "request_id": approval.request_id,
    }


async def test_forged_or_stale_signatures_get_401_and_touch_nothing(
    slack: SlackServer, incident: OpenIncident, intake: httpx.AsyncClient
) -> None:
    calls_before = len(slack.calls)
    click = block_actions(incident.message, APPROVE_ACTION_ID, APPROVER)

    forged = await post_signed(intake, click, secret="not-the-signing-secret")
    stale = await post_signed(intake, click, timestamp=int(time.time()) - 600)
    unsigned = await intake.post("/slack/events", content=form_body(click))

    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    await asyncio.sleep(0.3)  # give a wrongly started listener the time to act
    assert slack.calls[calls_before:] == []
    assert await decision_of(incident.handle) is None
    assert await accepted_decisions(incident.handle) == 0
    status = await incident.handle.query(IncidentWorkflow.status)
    assert status.phase == Phase.AWAITING_APPROVAL


async def test_an_approver_click_is_acked_decided_shown_and_proposed(
    slack: SlackServer,
    fakes: FakeActivities,
    incident: OpenIncident,
    intake: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await post_signed(
        intake, block_actions(incident.message, APPROVE_ACTION_ID, APPROVER)
    )
    assert response.status_code == 200
    assert time.monotonic() - started < 3, "Slack retries clicks not acked within 3 seconds"

    final = await wait_for_phase(incident.handle, Phase.PR_OPENED)
    decision = final.approval.decision if final.approval else None
    assert decision is not None and (decision.decision, decision.approver) == ("approve", APPROVER)
    [proposed] = fakes.proposals
    assert proposed.incident.incident_id == incident.status.incident_id

    def shows_the_branch() -> dict[str, Any] | None:
        [now] = [m for m in slack.top_level() if m["ts"] == incident.message["ts"]]
        return now if names.branch_for(final.incident_id) in json.dumps(now["blocks"]) else None

    shown = await slack.wait_for_async(shows_the_branch)
    assert f"Approved by <@{APPROVER}>" in json.dumps(shown["blocks"])
    assert _buttons(shown) == []
    assert slack.ephemerals == []


async def test_an_unauthorised_click_changes_nothing_and_is_told_why(
    slack: SlackServer, incident: OpenIncident, intake: httpx.AsyncClient
) -> None:
    click = block_actions(incident.message, APPROVE_ACTION_ID, "UINTRUDER")

    response = await post_signed(intake, click)

    assert response.status_code == 200
    [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
    assert ephemeral["user"] == "UINTRUDER"
    assert "'UINTRUDER' is not an approver of this incident" in ephemeral["text"]
    assert await decision_of(incident.handle) is None
    assert await accepted_decisions(incident.handle) == 0
    assert "chat.update" not in slack.methods_called()


async def test_a_double_click_yields_one_decision(
    slack: SlackServer,
    fakes: FakeActivities,
    incident: OpenIncident,
    intake: httpx.AsyncClient,
) -> None:
    click = block_actions(incident.message, APPROVE_ACTION_ID, APPROVER)

    first, second = await asyncio.gather(post_signed(intake, click), post_signed(intake, click))

    assert first.status_code == second.status_code == 200
    [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
    assert "already approved" in ephemeral["text"] or "not awaiting" in ephemeral["text"]
    await wait_for_phase(incident.handle, Phase.PR_OPENED)
    assert await accepted_decisions(incident.handle) == 1
    assert fakes.calls["propose_change"] == 1


async def test_reject_asks_for_a_reason_in_a_modal(
    slack: SlackServer, incident: OpenIncident, intake: httpx.AsyncClient
) -> None:
    click = block_actions(incident.message, REJECT_ACTION_ID, APPROVER)
    assert (await post_signed(intake, click)).status_code == 200
    [opened] = await slack.wait_for_async(lambda: slack.views)
    assert opened["trigger_id"] == click["trigger_id"]
    assert await decision_of(incident.handle) is None, "a click on Reject alone decides nothing"

    submit = view_submission(opened["view"], APPROVER, {REASON_INPUT_ID: "touches billing"})
    assert (await post_signed(intake, submit)).status_code == 200

    final = await wait_for_phase(incident.handle, Phase.REJECTED)
    decision = final.approval.decision if final.approval else None
    assert decision is not None and (decision.decision, decision.reason) == (
        "reject",
        "touches billing",
    )
    assert final.reason == f"rejected by {APPROVER}: touches billing"


async def test_socket_mode_delivers_the_same_clicks(
    client: Client, config: RemedyConfig, slack: SlackServer, incident: OpenIncident
) -> None:
    socket_config = config.model_copy(
        update={"slack": config.slack.model_copy(update={"socket_mode": True})}
    )
    app = FastAPI()
    listener = mount_slack(app, socket_config, lambda: client)
    assert listener is not None and listener.socket_mode
    assert not any(getattr(r, "path", "") == "/slack/events" for r in app.routes)

    await listener.start()
    try:
        ack = await asyncio.to_thread(
            slack.send_envelope, block_actions(incident.message, APPROVE_ACTION_ID, APPROVER)
        )
        assert "envelope_id" in ack
        final = await wait_for_phase(incident.handle, Phase.OPENING_PR, Phase.PR_OPENED)
    finally:
        await listener.stop()
    assert final.approval is not None and final.approval.decision is not None
    assert final.approval.decision.approver == APPROVER


async def test_without_tokens_slack_is_off(
    config: RemedyConfig, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert slack_listener(config, lambda: client) is None
    app = create_app(config, reporter=NoReports(), client=client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://intake"
    ) as http:
        assert (await http.post("/slack/events", content=b"{}")).status_code == 404


async def test_a_click_nobody_processes_is_not_confirmed(
    client: Client, slack: SlackServer, config: RemedyConfig
) -> None:
    start = make_start()
    handle = await start_incident(client, f"no-worker-polls-this-{uuid.uuid4()}", start)
    assert handle.result_run_id is not None
    incident_id = names.incident_id_for(start.service, start.fingerprint, handle.result_run_id)
    # Without a worker the workflow never ran, so nothing posted its message: build the button.
    message = {
        "ts": "1.000001",
        "channel": "C0INCIDENTS",
        "blocks": [
            {
                "type": "actions",
                "block_id": DECISION_BLOCK_ID,
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION_ID,
                        "value": button_value(incident_id, "request-never-made"),
                    }
                ],
            }
        ],
    }
    listener = SlackListener(
        config, lambda: client, bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET,
        decide_timeout_s=0.5,
    )  # fmt: skip
    app = FastAPI()
    app.add_api_route("/slack/events", listener.handle, methods=["POST"])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake"
        ) as http:
            click = block_actions(message, APPROVE_ACTION_ID, APPROVER)
            assert (await post_signed(http, click)).status_code == 200
            [ephemeral] = await slack.wait_for_async(lambda: slack.ephemerals)
        assert "not confirmed" in ephemeral["text"]
    finally:
        await _end(handle)
