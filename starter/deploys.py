"""Telling the incidents that follow a change that a release of their service now runs.

One function for every way Remedy hears of a release: POST /v1/deploys, `remedy deployed`,
and the first report of the service that names a release it had not seen (starter/reporter.py).
Each incident checks for itself whether the release holds its fix; this only finds the
incidents that wait for one and signals them.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.models import DeploySignal, Phase
from workflows.incident import IncidentWorkflow

# Phases at which an incident still waits for a release with its fix: its change is open or
# merged. A deployed fix is past that; a later release only matters through reports.
WAITING_FOR_RELEASE = (Phase.PR_OPENED, Phase.FIX_MERGED)
_CONCURRENT_SIGNALS = 8
# More than this many incidents of one service following changes is a bug elsewhere.
MAX_INCIDENTS = 1000


def waiting_for_release_query(service: str) -> str:
    """The visibility query of the service's incidents that wait for a release."""
    phases = ", ".join(names.query_literal(phase.value) for phase in WAITING_FOR_RELEASE)
    return (
        "WorkflowType = 'IncidentWorkflow' AND ExecutionStatus = 'Running' AND "
        f"{names.SA_SERVICE.name} = {names.query_literal(service)} AND "
        f"{names.SA_PHASE.name} IN ({phases})"
    )


async def announce_release(
    client: Client, service: str, release: str, source: Literal["deploy", "report"]
) -> list[str]:
    """Signal `deployed` to each incident of `service` waiting for a release; the ids of
    those told. A run that closed meanwhile is skipped; any other refusal by Temporal
    (RPCError) reaches the caller. Raises pydantic's ValidationError for a release that no
    DeploySignal can carry."""
    signal = DeploySignal(release=release, source=source)
    executions = [
        execution
        async for execution in client.list_workflows(
            waiting_for_release_query(service), limit=MAX_INCIDENTS
        )
        # A recurrence run follows no change.
        if not await execution.memo_value(names.MEMO_RECURRENCE_OF, default="")
    ]
    gate = asyncio.Semaphore(_CONCURRENT_SIGNALS)

    async def tell(execution: WorkflowExecution) -> str | None:
        handle = client.get_workflow_handle_for(
            IncidentWorkflow.run, execution.id, run_id=execution.run_id
        )
        async with gate:
            try:
                await handle.signal(IncidentWorkflow.deployed, signal)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # it closed since the listing
                    return None
                raise
        # A run continued as new while following names the incident it continues.
        continues = await execution.memo_value(names.MEMO_INCIDENT_ID, default="")
        if continues:
            return str(continues)
        attributes = execution.typed_search_attributes
        fingerprint = attributes.get(names.SA_FINGERPRINT) or execution.id[-16:]
        return names.incident_id_for(service, fingerprint, execution.run_id)

    told = await asyncio.gather(*(tell(execution) for execution in executions))
    return sorted(incident for incident in told if incident is not None)
