"""Storm coalescing against the real dev server: one workflow, exact count, few calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client, Interceptor, OutboundInterceptor, SignalWorkflowInput
from temporalio.worker import Worker

from remedy import names
from remedy.models import Phase
from starter.incidents import IncidentNotFound, find_incident
from starter.reporter import BATCH_REPORTS, TemporalReporter
from tests.workflow_harness import (
    FakeActivities,
    eventually,
    finished,
    make_start,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow


@pytest.fixture
async def task_queue(client: Client) -> AsyncIterator[str]:
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=FakeActivities().all()
    ):
        yield queue


def reporter_for(client: Client, task_queue: str) -> TemporalReporter:
    return TemporalReporter(
        client,
        task_queue=task_queue,
        coalesce_interval_s=0.05,
        ui_url="http://127.0.0.1:8233/namespaces/default",
    )


async def occurrences(client: Client, workflow_id: str) -> int:
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
    return (await handle.query(IncidentWorkflow.status)).occurrences


async def test_a_storm_is_one_workflow_with_an_exact_count(client: Client, task_queue: str) -> None:
    start = make_start(quiet_window_s=600)
    workflow_id = names.workflow_id_for(start.service, start.fingerprint)
    reporter = reporter_for(client, task_queue)

    replies = await asyncio.gather(*(reporter.report(start) for _ in range(2000)))
    await reporter.close()

    assert sum(not reply.deduplicated for reply in replies) == 1
    assert {reply.incident_id for reply in replies} == {replies[0].incident_id}
    assert max(reply.occurrences for reply in replies) == 2000
    assert reporter.workflows_started == 1
    assert reporter.temporal_calls <= 20

    async def exact() -> bool:
        return await occurrences(client, workflow_id) == 2000

    await eventually(exact)

    # Another intake replica (or this one after a restart) joins the same open incident.
    replica = reporter_for(client, task_queue)
    reply = await replica.report(start)
    await replica.close()
    assert reply.deduplicated and reply.incident_id == replies[0].incident_id
    assert reply.occurrences == 2001

    async def exact_again() -> bool:
        return await occurrences(client, workflow_id) == 2001

    await eventually(exact_again)
    await client.get_workflow_handle(workflow_id).terminate("test done")


async def test_reports_after_an_incident_closed_open_the_next_one(
    client: Client, task_queue: str
) -> None:
    start = make_start(quiet_window_s=0)
    reporter = reporter_for(client, task_queue)
    first = await reporter.report(start)
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, first.workflow_id)
    closed = await finished(handle)
    assert closed.phase == Phase.TRIAGED

    await asyncio.gather(*(reporter.report(start) for _ in range(3)))
    await reporter.close()
    assert reporter.workflows_started == 2

    async def reopened() -> bool:
        description = await client.get_workflow_handle(first.workflow_id).describe()
        latest_id = names.incident_id_for(start.service, start.fingerprint, description.run_id)
        return latest_id != first.incident_id

    await eventually(reopened)
    latest = client.get_workflow_handle_for(IncidentWorkflow.run, first.workflow_id)
    status = await wait_for_phase(latest, Phase.TRIAGED)
    assert status.incident_id != first.incident_id
    assert status.occurrences == 3

    # The closed incident is still found by its id (through visibility, not the latest run).
    async def closed_found() -> bool:
        try:
            earlier = await find_incident(client, first.incident_id)
        except IncidentNotFound:
            return False
        return (await earlier.query(IncidentWorkflow.status)).incident_id == first.incident_id

    await eventually(closed_found)


async def test_reports_after_the_outcome_count_for_the_closed_incident(
    client: Client, task_queue: str
) -> None:
    start = make_start(quiet_window_s=600)
    reporter = reporter_for(client, task_queue)
    first = await reporter.report(start)
    latest = client.get_workflow_handle_for(IncidentWorkflow.run, first.workflow_id)
    assert (await finished(latest)).phase == Phase.TRIAGED
    closed_run = (await latest.describe()).run_id

    # Within the quiet window the error keeps coming: still the same incident, counted.
    replies = await asyncio.gather(*(reporter.report(start) for _ in range(30)))
    await reporter.close()
    assert all(r.deduplicated and r.incident_id == first.incident_id for r in replies)
    assert max(r.occurrences for r in replies) == 31
    assert reporter.workflows_started == 2

    recurrence = client.get_workflow_handle_for(IncidentWorkflow.run, first.workflow_id)

    async def counted() -> bool:
        return (await recurrence.query(IncidentWorkflow.status)).occurrences == 31

    await eventually(counted)
    status = await recurrence.query(IncidentWorkflow.status)
    assert (status.recurrence_of, status.phase) == (first.incident_id, Phase.TRIAGED)
    # The closed run stays closed, the way the UI lists it; only the recurrence runs.
    closed = client.get_workflow_handle(first.workflow_id, run_id=closed_run)
    assert (await closed.describe()).status.name == "COMPLETED"  # type: ignore[union-attr]

    # Another intake replica joins the recurrence and answers with the same incident.
    replica = reporter_for(client, task_queue)
    again = await replica.report(start)
    await replica.close()
    assert (again.deduplicated, again.incident_id, again.occurrences) == (
        True,
        first.incident_id,
        32,
    )
    assert replica.workflows_started == 0
    await recurrence.terminate("test done")


class _SlowSignalAnswers(Interceptor):
    """Temporal takes each signal, but its answer is slow to come back."""

    def __init__(self) -> None:
        self.in_flight = asyncio.Event()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        interceptor = self

        class Slow(OutboundInterceptor):
            async def signal_workflow(self, input: SignalWorkflowInput) -> None:
                await super().signal_workflow(input)
                interceptor.in_flight.set()
                await asyncio.sleep(0.5)

        return Slow(next)


async def test_closing_while_a_batch_is_in_flight_counts_it_once(
    client: Client, task_queue: str
) -> None:
    slow = _SlowSignalAnswers()
    config = client.config()
    config["interceptors"] = [slow]
    reporter = reporter_for(Client(**config), task_queue)
    start = make_start(quiet_window_s=600)

    await asyncio.gather(*(reporter.report(start) for _ in range(1 + BATCH_REPORTS)))
    await asyncio.wait_for(slow.in_flight.wait(), timeout=10)
    await reporter.close()

    workflow_id = names.workflow_id_for(start.service, start.fingerprint)
    assert reporter.workflows_started == 1
    assert await occurrences(client, workflow_id) == 1 + BATCH_REPORTS
