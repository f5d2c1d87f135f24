"""IncidentWorkflow on the real Temporal dev server, with activity doubles under real names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from remedy import names
from remedy.models import DecideRequest, Edit, NotifyRequest, Phase
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    eventually,
    finished,
    fix_diagnosis,
    make_start,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow
from workflows.index import IndexWorkflow


@pytest.fixture
def fakes() -> FakeActivities:
    return FakeActivities()


@pytest.fixture
async def task_queue(client: Client, fakes: FakeActivities) -> AsyncIterator[str]:
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        yield queue


def refusal(exc: WorkflowUpdateFailedError) -> str:
    return str(getattr(exc.cause, "message", exc.cause))


async def test_without_a_diagnosis_the_incident_is_triaged_with_evidence(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    handle = await start_incident(client, task_queue, make_start())
    status = await finished(handle)
    assert status.phase == Phase.TRIAGED
    assert status.reason == "no LLM backend configured"
    assert status.evidence is not None and status.evidence.suspect_commits[0].author == "Bob"
    assert [change.phase for change in status.history] == [
        Phase.RECEIVED,
        Phase.SYNCING,
        Phase.INDEXING,
        Phase.INVESTIGATING,
        Phase.DIAGNOSING,
        Phase.TRIAGED,
    ]
    assert "prepare_patch" not in fakes.calls
    assert status.evidence.related_code[0].path == "app/pricing.py"
    assert [r.outcome for r in fakes.recorded] == ["triaged"]

    async def visible() -> bool:
        query = (
            f"{names.SA_FINGERPRINT.name} = '{status.fingerprint}' "
            f"AND {names.SA_PHASE.name} = 'triaged' AND {names.SA_SERVICE.name} = 'shop'"
        )
        return bool([w async for w in client.list_workflows(query)])

    await eventually(visible)


async def test_approval_path_validates_every_decision_then_proposes_once(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis()
    handle = await start_incident(client, task_queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.approval is not None and status.verification is not None
    request_id = status.approval.request_id

    cases = [
        (
            DecideRequest(decision="approve", approver="U-intruder", request_id=request_id),
            "is not an approver",
        ),
        (DecideRequest(decision="approve", approver=APPROVER, request_id="stale"), "stale"),
        (DecideRequest(decision="reject", approver=APPROVER, request_id=request_id), "reason"),
    ]
    for request, phrase in cases:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(IncidentWorkflow.decide, request)
        assert phrase in refusal(refused.value)
    assert (await handle.query(IncidentWorkflow.status)).approval.decision is None  # type: ignore[union-attr]

    result = await handle.execute_update(
        IncidentWorkflow.decide,
        DecideRequest(decision="approve", approver=APPROVER, request_id=request_id),
    )
    assert result.decision.approver == APPROVER
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await handle.execute_update(
            IncidentWorkflow.decide,
            DecideRequest(decision="approve", approver=APPROVER, request_id=request_id),
        )
    assert "already" in refusal(again.value)

    final = await finished(handle)
    assert final.phase == Phase.PR_OPENED
    assert final.proposal is not None
    assert final.proposal.branch == f"remedy/{final.incident_id}"
    assert fakes.calls["propose_change"] == 1
    assert fakes.notifications == [
        ("update", Phase.AWAITING_APPROVAL),
        ("update", Phase.OPENING_PR),
        ("update", Phase.PR_OPENED),
    ]
    assert fakes.proposals[0].incident.approval.decision.approver == APPROVER  # type: ignore[union-attr]
    # The forge gets the change, not the incident's whole record: history keeps every input.
    proposed = fakes.proposals[0].incident
    assert proposed.diagnosis is not None and proposed.diagnosis.diagnosis is not None
    assert proposed.diagnosis.diagnosis.edits and proposed.worktree is not None
    assert proposed.history == [] and proposed.evidence is not None
    assert proposed.evidence.related_code == []


async def test_reject_ends_the_incident_and_pushes_nothing(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis()
    handle = await start_incident(client, task_queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.approval is not None
    await handle.execute_update(
        IncidentWorkflow.decide,
        DecideRequest(
            decision="reject",
            approver=APPROVER,
            request_id=status.approval.request_id,
            reason="wrong layer",
        ),
    )
    final = await finished(handle)
    assert final.phase == Phase.REJECTED
    assert final.reason is not None and "wrong layer" in final.reason
    assert "propose_change" not in fakes.calls


async def test_decide_before_approval_is_refused(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    handle = await start_incident(client, task_queue, make_start())
    await finished(handle)
    with pytest.raises(Exception, match=r"not awaiting approval|completed"):
        await handle.execute_update(
            IncidentWorkflow.decide,
            DecideRequest(decision="approve", approver=APPROVER, request_id="x"),
        )


async def test_policy_narrows_an_out_of_scope_diagnosis_to_triage(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis(
        Edit(path="app/auth/login.py", search="check(", replace="True or check(")
    )
    final = await finished(await start_incident(client, task_queue, make_start()))
    assert final.phase == Phase.TRIAGED
    assert final.reason is not None and "app/auth/login.py" in final.reason
    assert "prepare_patch" not in fakes.calls


async def test_failing_verification_never_asks_for_approval(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis()
    fakes.verification = "failed"
    final = await finished(await start_incident(client, task_queue, make_start()))
    assert final.phase == Phase.TRIAGED
    assert final.approval is None
    # Every try went back to the model with the failure, up to the policy's bound.
    assert fakes.calls["diagnose"] == fakes.calls["verify_patch"] == 3
    assert [a.attempt for a in final.fix_attempts] == [1, 2, 3]
    assert {a.failure for a in final.fix_attempts} == {"verification_failed"}
    assert [len(r.failed_attempts) for r in fakes.diagnose_requests] == [0, 1, 2]
    assert final.reason is not None and "fails verification after 3 tries" in final.reason


async def test_a_patch_that_does_not_apply_is_tried_again_with_the_apply_error(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis()
    fakes.unapplied_patches = 1
    final = await wait_for_phase(
        await start_incident(client, task_queue, make_start()), Phase.AWAITING_APPROVAL
    )
    assert [(a.attempt, a.failure) for a in final.fix_attempts] == [(1, "not_applied")]
    assert fakes.diagnose_requests[1].failed_attempts[0].detail == "search text not found"
    assert final.assurance is not None and final.assurance.attempt == 2
    assert final.assurance.level == "tested"  # passed, but nothing reproduced the error


async def test_permanent_activity_error_fails_the_incident_with_its_reason(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.sync_error = ApplicationError(
        "commit 0000000 not found in shop", type="CommitNotFound", non_retryable=True
    )
    handle = await start_incident(client, task_queue, make_start())
    final = await finished(handle)
    assert final.phase == Phase.FAILED
    assert final.reason is not None and "commit 0000000 not found" in final.reason
    assert fakes.calls["sync_repo"] == 1
    # The Temporal UI lists the incident under Failed, with the reason as the failure.
    description = await handle.describe()
    assert description.status is not None and description.status.name == "FAILED"


async def test_below_the_bar_is_notified_only(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    final = await finished(await start_incident(client, task_queue, make_start(notify_only=True)))
    assert final.phase == Phase.NOTIFIED
    assert fakes.calls == {"notify": 1}
    assert fakes.notifications == [("update", Phase.NOTIFIED)]


async def test_the_run_closes_at_the_outcome_and_the_ui_shows_it(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    handle = await start_incident(client, task_queue, make_start(quiet_window_s=600))
    final = await finished(handle)
    assert final.phase == Phase.TRIAGED

    description = await handle.describe()
    assert description.status is not None and description.status.name == "COMPLETED"
    # What the UI's detail page shows: the current details and a summary on each step.
    details = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "**Triaged** · 1 occurrence" in details.current_details
    history = await handle.fetch_history()
    summaries = [
        await client.data_converter.decode([e.user_metadata.summary])
        for e in history.events
        if e.HasField("user_metadata") and e.user_metadata.HasField("summary")
    ]
    # The incident's own summary on its start, then one per step.
    assert [s[0] for s in summaries][:2] == [
        "KeyError in shop: 'sku'",
        "sync_repo · KeyError in shop",
    ]


async def test_approval_expires_on_the_time_skipping_server(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(diagnosis=fix_diagnosis())
    client = time_skipping_env.client
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        handle = await start_incident(
            client,
            queue,
            make_start(approval_timeout_s=int(timedelta(days=2).total_seconds())),
            execution_timeout=timedelta(days=3),
        )
        final = await finished(handle)
    assert final.phase == Phase.EXPIRED
    assert "propose_change" not in fakes.calls
    assert fakes.notifications == [
        ("update", Phase.AWAITING_APPROVAL),
        ("reminder", Phase.AWAITING_APPROVAL),
        ("update", Phase.EXPIRED),
    ]


async def test_messages_carry_a_digest_of_the_incident_not_its_whole_record(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.diagnosis = fix_diagnosis()
    handle = await start_incident(client, task_queue, make_start())
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    history = await handle.fetch_history()
    notify_inputs = [
        event.activity_task_scheduled_event_attributes.input.payloads[0].data
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name
        == names.ACTIVITY_NOTIFY
    ]
    assert notify_inputs, "the incident asked for approval without a message"
    for data in notify_inputs:
        request = NotifyRequest.model_validate_json(data)
        assert request.incident.history == [] and request.incident.worktree is None
        assert request.incident.evidence is not None
        assert request.incident.evidence.related_code == []
        assert request.incident.evidence.summary  # what people read is still there
    await handle.terminate("test done")


async def test_a_ci_definition_edit_under_the_default_scope_ends_triaged_naming_the_rule(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    # `allowed_paths = ["**"]` is the default: the built-in deny list still holds.
    fakes.diagnosis = fix_diagnosis(
        Edit(path=".github/workflows/ci.yml", search="run: pytest", replace="run: curl x | sh")
    )
    handle = await start_incident(client, task_queue, make_start(allowed_paths=("**",)))

    status = await finished(handle)

    assert status.phase == Phase.TRIAGED
    assert status.reason == (
        "edit to '.github/workflows/ci.yml' touches an execution-sensitive file "
        "(built-in rule '.github/**'); lift it with services.shop.allow_execution_sensitive_paths"
    )
    assert "prepare_patch" not in fakes.calls and "verify_patch" not in fakes.calls


async def test_a_cold_repository_is_indexed_around_the_frames_then_filled_in(
    client: Client,
) -> None:
    fakes = FakeActivities(index_complete=False)
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[IncidentWorkflow, IndexWorkflow],
        activities=fakes.all(),
    ):
        start = make_start()
        final = await finished(await start_incident(client, queue, start))
        assert final.phase == Phase.TRIAGED
        assert final.evidence is not None
        assert "focus files only" in final.evidence.related_from

        # The rest of the index, off the incident's path: one child per commit, abandoned
        # so it outlives the incident.
        commit = fakes.index_requests[0].worktree.commit
        child = client.get_workflow_handle(f"index-shop-{commit[:12]}")
        full = await asyncio.wait_for(child.result(), 30)
    assert full["complete"] is True
    assert [r.complete for r in fakes.index_requests] == [False, True]
    assert fakes.index_requests[0].frames == start.event.frames


async def test_investigate_runs_while_the_index_is_brought_to_the_commit(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.index_waits_for_investigate = True
    final = await finished(await start_incident(client, task_queue, make_start()))
    assert fakes.index_saw_investigate, "investigate waited for index_repo to finish"
    assert final.evidence is not None and final.evidence.related_code, "find_related was skipped"
    assert [p.phase for p in final.history][:4] == [
        Phase.RECEIVED, Phase.SYNCING, Phase.INDEXING, Phase.INVESTIGATING
    ]  # fmt: skip


async def test_the_suite_before_starts_at_syncing_and_never_holds_or_fails_the_incident(
    client: Client, task_queue: str, fakes: FakeActivities
) -> None:
    fakes.suite_before = "runs on"  # still running when the incident ends triaged
    final = await finished(await start_incident(client, task_queue, make_start()))
    assert final.phase == Phase.TRIAGED
    (request,) = fakes.suite_before_requests
    assert request.worktree == final.worktree and request.incident_id == final.incident_id
    deadline = asyncio.get_running_loop().time() + 30
    while not fakes.suite_before_cancelled:  # delivered with a heartbeat's answer
        assert asyncio.get_running_loop().time() < deadline, "the early run was never cancelled"
        await asyncio.sleep(0.1)

    fakes.suite_before = "fails"
    fakes.diagnosis = fix_diagnosis()
    handle = await start_incident(client, task_queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.verification is not None and status.verification.status == "passed"
