"""Record IncidentWorkflow histories for the replay tests (tests/test_replay.py).

Run after a deliberate change to the workflow's commands, guarded by `workflow.patched()`:
the histories recorded before the change must keep replaying, so ADD new files rather than
overwriting old ones (name them for the change).

    .venv/bin/python -m tests.record_histories [SUFFIX [SCENARIO ...]]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from remedy import names
from remedy.models import (
    ChangeSignal,
    DecideRequest,
    DeploySignal,
    IncidentStatus,
    OccurrenceSignal,
    Phase,
    Recurrence,
)
from remedy.temporal import data_converter
from tests.conftest import TEMPORAL
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    fix_diagnosis,
    make_start,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow

HISTORIES = Path(__file__).parent / "histories"


SCENARIOS = (
    "triaged",
    "approved",
    "rejected",
    "failed",
    "recurrence",
    "repaired",
    "fix_held",
    "fix_failed",
)
# After pr_opened (issue 13): merged by the webhook, a release with the fix, then quiet
# (fix_held) or the error again from that release (fix_failed continues as a new incident).
_FOLLOWING = {"fix_held", "fix_failed"}
_FIXED_RELEASE = "2026.12.2"


async def _record(client: Client, name: str, scenario: str) -> None:
    triaged = scenario in {"triaged", "recurrence"}
    fakes = FakeActivities(
        diagnosis=None if triaged else fix_diagnosis(), releases_with_fix={_FIXED_RELEASE}
    )
    start = make_start(
        follow_fix_s=86_400 if scenario in _FOLLOWING else 0,
        hold_window_s=1 if scenario == "fix_held" else 3600,
    )
    if scenario == "repaired":  # the first patch does not apply; the second try is approved
        fakes.unapplied_patches = 1
    if scenario == "failed":
        fakes.sync_error = ApplicationError(
            "commit 0000000 not found in shop", type="CommitNotFound", non_retryable=True
        )
    if scenario == "recurrence":
        earlier = Recurrence(incident_id="shop-0123-earlier", phase=Phase.TRIAGED, occurrences=2)
        start = start.model_copy(update={"recurrence_of": earlier, "occurrences": 3})
    queue = f"record-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        handle = await start_incident(client, queue, start)
        if scenario not in {"triaged", "failed", "recurrence"}:
            status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
            await handle.signal(IncidentWorkflow.occurrence, OccurrenceSignal(count=3))
            assert status.approval is not None
            await handle.execute_update(
                IncidentWorkflow.decide,
                DecideRequest(
                    decision="reject" if scenario == "rejected" else "approve",
                    approver=APPROVER,
                    request_id=status.approval.request_id,
                    reason="not this way" if scenario == "rejected" else None,
                ),
            )
        if scenario in _FOLLOWING:
            await _follow(handle, scenario)
        with contextlib.suppress(WorkflowFailureError, WorkflowContinuedAsNewError):
            await handle.result(follow_runs=False)  # a failed incident's run fails
        first_run = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        history = await first_run.fetch_history()
        if scenario == "fix_failed":
            await client.get_workflow_handle(handle.id).terminate("recorded")
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}.json ({len(history.events)} events)")


async def _follow(handle: WorkflowHandle[IncidentWorkflow, IncidentStatus], scenario: str) -> None:
    await wait_for_phase(handle, Phase.PR_OPENED)
    await handle.signal(
        IncidentWorkflow.change, ChangeSignal(state="merged", merge_commit="9f1c0e5d" * 5)
    )
    await handle.signal(IncidentWorkflow.deployed, DeploySignal(release=_FIXED_RELEASE))
    await handle.signal(
        IncidentWorkflow.occurrence, OccurrenceSignal(count=2, releases={"2026.11.30": 2})
    )
    await wait_for_phase(handle, Phase.FIX_DEPLOYED, Phase.FIX_HELD)
    if scenario == "fix_failed":
        await handle.signal(
            IncidentWorkflow.occurrence, OccurrenceSignal(count=1, releases={_FIXED_RELEASE: 1})
        )


async def main(suffix: str, scenarios: tuple[str, ...]) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL,
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
    )
    try:
        for scenario in scenarios:
            await _record(env.client, f"incident_{scenario}{suffix}", scenario)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(
        main(f"_{sys.argv[1]}" if len(sys.argv) > 1 else "", tuple(sys.argv[2:]) or SCENARIOS)
    )
