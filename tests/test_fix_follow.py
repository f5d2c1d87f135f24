"""After pr_opened the incident follows its change (issue 13): merged, deployed, held; failed
(a new incident opens, linked); abandoned; stale releases. Days of hold window pass on the
time-skipping server; one incident goes the whole way on the dev server in seconds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Literal

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from remedy import fix_follow, names
from remedy.models import (
    ChangeSignal,
    ChangeState,
    DecideRequest,
    DeploySignal,
    Evidence,
    FixFollowUp,
    IncidentStart,
    IncidentStatus,
    OccurrenceSignal,
    Phase,
    Proposal,
    Worktree,
)
from remedy.render.slack import detail_text, status_line
from remedy.render.terminal import render_status
from remedy.temporal import data_converter
from starter.incidents import find_incident
from tests.conftest import TEMPORAL
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    eventually,
    finished,
    fix_diagnosis,
    make_start,
    now,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow

BRANCH_COMMIT = "c" * 40
MERGE_COMMIT = "9f1c0e5d" * 5
FIXED = "2026.12.2"  # a release with the fix
OLD = "2026.11.30"  # one without it
WEEK = 7 * 86_400
MONTH = 30 * 86_400
DEPLOYS = (Phase.FIX_DEPLOYED, Phase.FIX_HELD, Phase.FIX_FAILED)


def following(
    *, forge: Literal["local", "github"] = "local", hold_window_s: int = WEEK
) -> IncidentStart:
    """An incident at pr_opened, as a run continued while following its change starts."""
    start = make_start(follow_fix_s=MONTH, hold_window_s=hold_window_s, forge=forge)
    workflow_id = names.workflow_id_for(start.service, start.fingerprint)
    incident_id = names.incident_id_for(start.service, start.fingerprint, uuid.uuid4().hex)
    at = now()
    status = IncidentStatus(
        incident_id=incident_id,
        workflow_id=workflow_id,
        service=start.service,
        fingerprint=start.fingerprint,
        phase=Phase.PR_OPENED,
        severity=start.severity,
        error_type=start.event.error.type,
        error_message=start.event.error.message,
        occurrences=1,
        first_seen=at,
        last_seen=at,
        release=start.event.release,
        worktree=Worktree(
            service=start.service,
            path="/tmp/w",
            commit="0" * 40,
            branch="main",
            commit_source="release",
        ),
        evidence=Evidence(summary="KeyError in app/cart.py:2 total()"),
        proposal=Proposal(
            branch=names.branch_for(incident_id),
            commit=BRANCH_COMMIT,
            title="fix(shop): KeyError in app/cart.py",
            pr_url="http://github.test/o/r/pull/1" if forge == "github" else None,
        ),
        reason=f"approved by {APPROVER}",
        # What the run before had begun to follow (a run continued as new always has it).
        fix=FixFollowUp(commit=BRANCH_COMMIT, follow_until=at + timedelta(seconds=MONTH)),
    )
    return start.model_copy(update={"follow_up": status})


@pytest.fixture
def fakes() -> FakeActivities:
    return FakeActivities(releases_with_fix={FIXED})


@pytest.fixture
async def skipping(
    time_skipping_env: WorkflowEnvironment, fakes: FakeActivities
) -> AsyncIterator[tuple[Client, str]]:
    queue = f"follow-{uuid.uuid4()}"
    client = time_skipping_env.client
    async with Worker(
        client,
        task_queue=queue,
        workflows=[IncidentWorkflow],
        activities=fakes.all(),
        # A cancelled watch learns of it at its next beat, and the test server skips no time
        # while it runs: beat often.
        max_heartbeat_throttle_interval=timedelta(milliseconds=300),
    ):
        yield client, queue


async def begin(
    client: Client, queue: str, start: IncidentStart, fakes: FakeActivities
) -> WorkflowHandle[IncidentWorkflow, IncidentStatus]:
    """Start the following incident; return once it watches the forge (it follows)."""
    handle = await start_incident(client, queue, start, execution_timeout=timedelta(days=90))
    await eventually(lambda: _watched(fakes))
    return handle


async def test_merged_then_deployed_then_held_after_the_window(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    handle = await begin(client, queue, following(), fakes)
    await handle.signal(
        IncidentWorkflow.change,
        ChangeSignal(state="merged", merge_commit=MERGE_COMMIT, source="webhook"),
    )
    merged = await wait_for_phase(handle, Phase.FIX_MERGED)
    assert merged.fix is not None and merged.fix.commit == MERGE_COMMIT
    assert merged.reason == f"merged as {MERGE_COMMIT[:12]} (webhook)"
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED))
    deployed = await wait_for_phase(handle, Phase.FIX_DEPLOYED)
    assert deployed.fix is not None and deployed.fix.deployed_release == FIXED
    # A squash merge: releases are checked for the merge commit, not the branch's.
    assert [(c.release, c.commit) for c in fakes.release_checks] == [(FIXED, MERGE_COMMIT)]

    final = await finished(handle)  # the week passes on the test server's clock
    assert final.phase == Phase.FIX_HELD
    assert final.reason == (
        f"no report of the error from a release with fix {MERGE_COMMIT[:12]} for 7 d"
    )
    assert final.fix is not None and final.fix.hold_until is not None
    phases = [change.phase for change in final.history]
    assert phases[-3:] == [Phase.FIX_MERGED, Phase.FIX_DEPLOYED, Phase.FIX_HELD]
    # One thread reply per step, and the outcome feeds the past-incidents index.
    assert fakes.notifications[-3:] == [
        ("update", Phase.FIX_MERGED),
        ("update", Phase.FIX_DEPLOYED),
        ("update", Phase.FIX_HELD),
    ]
    assert [r.outcome for r in fakes.recorded] == ["fix_held"]
    assert fakes.comments == []


async def test_reports_from_a_release_without_the_fix_do_not_fail_it(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    handle = await begin(client, queue, following(), fakes)
    await handle.signal(IncidentWorkflow.change, ChangeSignal(state="merged", source="webhook"))
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED))
    await wait_for_phase(handle, Phase.FIX_DEPLOYED)
    # Old pods still run OLD while the rollout finishes: its reports are stale.
    await handle.signal(IncidentWorkflow.occurrence, OccurrenceSignal(count=5, releases={OLD: 5}))
    await handle.signal(IncidentWorkflow.occurrence, OccurrenceSignal(count=2, releases={OLD: 2}))

    async def counted() -> IncidentStatus | None:
        status = await handle.query(IncidentWorkflow.status)
        return status if status.fix and status.fix.stale_reports == 7 else None

    status = await eventually(counted)
    assert status.phase == Phase.FIX_DEPLOYED and status.occurrences == 8
    assert status.fix is not None and status.fix.releases_seen == {FIXED: True, OLD: False}
    # OLD was checked once; its second batch counted from what the first check found.
    assert [c.release for c in fakes.release_checks] == [FIXED, OLD]
    final = await finished(handle)
    assert final.phase == Phase.FIX_HELD
    assert final.reason is not None and final.reason.endswith("; 7 from releases without it")


async def test_the_error_recurring_on_a_fixed_release_fails_the_fix_and_opens_a_linked_incident(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    start = following(forge="github")
    first = start.follow_up
    assert first is not None
    handle = await begin(client, queue, start, fakes)
    await handle.signal(
        IncidentWorkflow.change, ChangeSignal(state="merged", merge_commit=MERGE_COMMIT)
    )
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED, source="report"))
    await wait_for_phase(handle, Phase.FIX_DEPLOYED)
    await handle.signal(
        IncidentWorkflow.occurrence, OccurrenceSignal(count=3, releases={FIXED: 2, OLD: 1})
    )

    first_run = client.get_workflow_handle_for(
        IncidentWorkflow.run, start_id(start), run_id=handle.result_run_id
    )
    failed = await eventually(lambda: _closed_status(first_run))
    assert failed.phase == Phase.FIX_FAILED
    assert failed.reason == (
        f"the error came back in {FIXED}, which contains fix {MERGE_COMMIT[:12]} (2 reports); "
        "a new incident opens"
    )
    # The pull request hears of it once; Slack gets its thread reply.
    assert [c.incident.fix.failed_release for c in fakes.comments if c.incident.fix] == [FIXED]
    assert fakes.calls.get("comment_on_pull_request") == 1
    assert ("update", Phase.FIX_FAILED) in fakes.notifications

    # The workflow continued as a new incident: its own id, the link, the note first.
    reopened = await finished(client.get_workflow_handle_for(IncidentWorkflow.run, start_id(start)))
    assert reopened.incident_id != first.incident_id
    assert reopened.phase == Phase.TRIAGED  # the fakes diagnose nothing
    assert reopened.reopened_after is not None
    assert reopened.reopened_after.incident_id == first.incident_id
    assert reopened.reopened_after.fix_commit == MERGE_COMMIT
    assert reopened.reopened_after.pr_url == "http://github.test/o/r/pull/1"
    assert reopened.release == FIXED and reopened.occurrences == 2
    assert reopened.evidence is not None
    assert reopened.evidence.summary.startswith(
        f"recurred after fix {MERGE_COMMIT[:12]} in {FIXED}. KeyError"
    )


async def test_a_change_closed_unmerged_is_abandoned(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    handle = await begin(client, queue, following(), fakes)
    await handle.signal(IncidentWorkflow.change, ChangeSignal(state="closed", source="webhook"))
    final = await finished(handle)
    assert final.phase == Phase.FIX_ABANDONED
    assert final.reason == "the change was closed without a merge (webhook)"
    assert fakes.release_checks == [] and fakes.comments == []
    assert fakes.notifications[-1] == ("update", Phase.FIX_ABANDONED)
    assert [r.outcome for r in fakes.recorded] == ["fix_abandoned"]


async def test_the_forge_watch_finds_the_merge_and_a_late_webhook_changes_nothing(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    # The first watch span ends with the change still open; the second finds it merged.
    fakes.change_states = [ChangeState(state="open"), ChangeState(state="merged")]
    handle = await begin(client, queue, following(), fakes)
    merged = await wait_for_phase(handle, Phase.FIX_MERGED)
    assert merged.reason == f"merged as {BRANCH_COMMIT[:12]} (poll)"
    assert len(fakes.watches) == 2 and fakes.watches[0].branch == "main"
    await handle.signal(IncidentWorkflow.change, ChangeSignal(state="closed", source="webhook"))
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED))
    assert (await wait_for_phase(handle, Phase.FIX_DEPLOYED)).fix is not None


async def test_a_merged_change_never_deployed_stops_being_followed(
    skipping: tuple[Client, str], fakes: FakeActivities
) -> None:
    client, queue = skipping
    handle = await begin(client, queue, following(), fakes)
    await handle.signal(IncidentWorkflow.change, ChangeSignal(state="merged"))
    await wait_for_phase(handle, Phase.FIX_MERGED)
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=OLD))
    final = await finished(handle)  # 30 days pass
    assert final.phase == Phase.FIX_MERGED
    assert final.reason == "stopped following the change after 30 d without a release with the fix"
    assert final.fix is not None and final.fix.releases_seen == {OLD: False}


async def test_an_incident_follows_its_change_from_approval_to_held_on_the_dev_server(
    client: Client,
) -> None:
    """The whole way in one run: pr_opened sets RemedyPrOpenedAt, and a release that holds
    the branch's own commit deploys it (no merge was heard of)."""
    fakes = FakeActivities(diagnosis=fix_diagnosis(), releases_with_fix={FIXED})
    queue = f"follow-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        handle = await start_incident(
            client, queue, make_start(follow_fix_s=MONTH, hold_window_s=2)
        )
        waiting = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        assert waiting.approval is not None
        await handle.execute_update(
            IncidentWorkflow.decide,
            DecideRequest(
                decision="approve", approver=APPROVER, request_id=waiting.approval.request_id
            ),
        )
        await wait_for_phase(handle, Phase.PR_OPENED)
        await eventually(lambda: _watched(fakes))
        description = await handle.describe()
        assert description.typed_search_attributes.get(names.SA_PR_OPENED_AT) is not None
        await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED))
        final = await finished(handle)
    assert final.phase == Phase.FIX_HELD
    assert final.fix is not None
    assert (final.fix.commit, final.fix.merged_by) == ("c" * 40, "release")
    assert [change.phase for change in final.history][-4:] == [
        Phase.OPENING_PR,
        Phase.PR_OPENED,
        Phase.FIX_DEPLOYED,
        Phase.FIX_HELD,
    ]
    assert fakes.calls.get("watch_branch") == 1


def start_id(start: IncidentStart) -> str:
    return names.workflow_id_for(start.service, start.fingerprint)


async def _watched(fakes: FakeActivities) -> bool:
    return bool(fakes.watches)


async def _closed_status(
    handle: WorkflowHandle[IncidentWorkflow, IncidentStatus],
) -> IncidentStatus | None:
    """The first run's last status, once it continued as new."""
    description = await handle.describe()
    if description.status is None or description.status.name == "RUNNING":
        return None
    return await handle.query(IncidentWorkflow.status)


def test_the_terminal_and_slack_say_how_far_the_fix_got_with_release_text_escaped() -> None:
    hostile = "v1\x1b[2J\n<!channel> *bold*"
    status = following().follow_up
    assert status is not None
    at = now()
    status = status.model_copy(
        update={
            "phase": Phase.FIX_DEPLOYED,
            "reason": f"{hostile} runs fix {MERGE_COMMIT[:12]}",
            "fix": FixFollowUp(
                commit=MERGE_COMMIT,
                follow_until=at,
                merged_at=at,
                merged_by="webhook",
                deployed_release=hostile,
                deployed_at=at,
                hold_until=at + timedelta(days=7),
                stale_reports=4,
            ),
        }
    )
    shown = render_status(status)
    assert f"merged     {MERGE_COMMIT[:12]} at " in shown and "(webhook)" in shown
    assert "holds      if quiet until " in shown
    assert "stale      4 reports from releases without the fix" in shown
    assert "\x1b" not in shown and "deployed   v1" in shown
    line = status_line(status)
    assert line.startswith(":rocket: *Fix deployed*: ")
    assert "<!channel>" not in line and "\x1b" not in line
    assert detail_text(status).startswith("*Fix deployed*")


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "watching the forge"])
async def test_weeks_of_following_continue_as_new_as_the_same_incident(merged: bool) -> None:
    """A server that suggests a new run after 40 events: the follow-up continues as new,
    keeps its state and id, and the id still finds it (the webhook and CLI signal it so).
    A watch of the forge stops with the old run and starts again in the new one."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL,
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=40",
        ],
    )
    fakes = FakeActivities(releases_with_fix={FIXED})
    queue = f"follow-{uuid.uuid4()}"
    try:
        client = env.client
        async with Worker(
            client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
        ):
            start = following()
            assert start.follow_up is not None
            incident_id = start.follow_up.incident_id
            handle = await begin(client, queue, start, fakes)
            if merged:
                await handle.signal(IncidentWorkflow.change, ChangeSignal(state="merged"))
                await wait_for_phase(handle, Phase.FIX_MERGED)
            for _ in range(12):  # stale reports, each a few events of history
                await handle.signal(
                    IncidentWorkflow.occurrence, OccurrenceSignal(count=1, releases={OLD: 1})
                )

            async def continued() -> bool:
                return (await handle.describe()).run_id != handle.result_run_id

            await eventually(continued)
            latest = await handle.describe()
            assert await latest.memo_value(names.MEMO_INCIDENT_ID) == incident_id
            phase = Phase.FIX_MERGED if merged else Phase.PR_OPENED
            assert latest.typed_search_attributes.get(names.SA_PHASE) == phase.value
            found = await find_incident(client, incident_id)
            assert found.run_id == latest.run_id
            if not merged:
                await eventually(lambda: _watched_twice(fakes))
                assert {w.incident_id for w in fakes.watches} == {incident_id}
            await found.signal(IncidentWorkflow.deployed, DeploySignal(release=FIXED))
            status = await wait_for_phase(found, Phase.FIX_DEPLOYED)
            assert status.incident_id == incident_id
            assert status.fix is not None and status.fix.stale_reports == 12
            assert status.fix.releases_seen == {OLD: False, FIXED: True}
            # By id, not run: the deploy's events may have made this run continue as new too.
            await client.get_workflow_handle(found.id).terminate("test over")
    finally:
        await env.shutdown()


async def _watched_twice(fakes: FakeActivities) -> bool:
    return len(fakes.watches) >= 2


# ---------------------------------------------------------------------------- the rules


def test_a_release_heard_of_is_queued_with_its_reports_and_counted_once_checked() -> None:
    fix = FixFollowUp(commit=MERGE_COMMIT, follow_until=now())
    fix_follow.hear_of_release(fix, FIXED, 0)  # a deploy
    fix_follow.hear_of_release(fix, OLD, 2)
    fix_follow.hear_of_release(fix, OLD, 1)  # while the check runs
    assert fix.releases_to_check == {FIXED: 0, OLD: 3}
    assert fix_follow.settle_check(fix, FIXED, True) is True
    assert fix.failed_release is None  # deployed, and no report from it
    assert fix_follow.settle_check(fix, OLD, False) is False
    assert (fix.stale_reports, fix.releases_to_check) == (3, {})
    fix_follow.hear_of_release(fix, OLD, 4)  # known: counted at once, no second check
    fix_follow.hear_of_release(fix, FIXED, 2)
    assert (fix.stale_reports, fix.recurrences, fix.failed_release) == (7, 2, FIXED)
    assert fix.releases_to_check == {}


def test_a_check_that_could_not_run_forgets_the_release_and_the_queue_is_bounded() -> None:
    fix = FixFollowUp(commit=MERGE_COMMIT, follow_until=now())
    fix_follow.hear_of_release(fix, FIXED, 5)
    assert fix_follow.settle_check(fix, FIXED, None) is False
    assert fix.releases_seen == {} and fix.stale_reports == 5 and fix.failed_release is None
    for number in range(fix_follow.MAX_RELEASES_CHECKED + 3):
        fix_follow.hear_of_release(fix, f"r{number}", 1)
    assert len(fix.releases_to_check) == fix_follow.MAX_RELEASES_CHECKED
    assert fix.stale_reports == 5 + 3


def test_windows_read_in_whole_units() -> None:
    assert [fix_follow.duration_text(s) for s in (7 * 86_400, 6 * 3600, 90)] == [
        "7 d",
        "6 h",
        "90 s",
    ]
