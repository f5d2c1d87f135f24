"""Finding incidents in Temporal: by id (status query) and by filter (visibility)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.models import DecideRequest, DecideResult, IncidentStatus
from workflows.incident import IncidentWorkflow


class IncidentNotFound(LookupError):
    pass


# How long `list` waits for the incidents' status queries, all together; an incident that
# has not answered by then (no worker for its queue) is listed from visibility alone.
STATUS_WAIT = timedelta(seconds=5)
_CONCURRENT_QUERIES = 8


class IncidentSummary(BaseModel):
    incident_id: str
    workflow_id: str
    service: str
    phase: str
    severity: str
    error_type: str
    error_message: str = ""
    culprit: str = Field(default="", description="The innermost located frame, path:line")
    occurrences: int
    started: datetime | None
    running: bool


async def find_incident(
    client: Client, incident_id: str
) -> WorkflowHandle[IncidentWorkflow, IncidentStatus]:
    """The workflow run behind an incident id (or a bare workflow id: its latest run)."""
    try:
        workflow_id, run = names.parse_incident_id(incident_id)
    except ValueError as exc:
        raise IncidentNotFound(str(exc)) from None
    # The latest run first: one cheap, authoritative call that answers almost every lookup
    # (visibility can also lag a start by a moment). Older incidents of the same
    # fingerprint are found through visibility.
    try:
        latest = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    else:
        # A run continued as new while following its change is the same incident.
        continues = await latest.memo_value(names.MEMO_INCIDENT_ID, default="")
        if run is None or names.run_tag(latest.run_id) == run or continues == incident_id:
            return client.get_workflow_handle_for(
                IncidentWorkflow.run, workflow_id, run_id=latest.run_id
            )
    if run is not None:
        async for execution in client.list_workflows(
            f"WorkflowId = {names.query_literal(workflow_id)}"
        ):
            if names.run_tag(execution.run_id) == run:
                return client.get_workflow_handle_for(
                    IncidentWorkflow.run, workflow_id, run_id=execution.run_id
                )
    raise IncidentNotFound(f"no incident {incident_id!r}")


async def incident_status(client: Client, incident_id: str) -> IncidentStatus:
    handle = await find_incident(client, incident_id)
    return await handle.query(IncidentWorkflow.status)


async def decide(
    client: Client,
    incident_id: str,
    decision: str,
    approver: str,
    reason: str | None,
    *,
    authorize: Callable[[IncidentStatus], None] | None = None,
) -> DecideResult:
    """Approve or reject the incident's current approval request.

    `authorize` sees the incident before anything is sent and may raise to stop it (the CLI
    checks the approver's credential there). The validator's refusal surfaces as temporalio's
    WorkflowUpdateFailedError.
    """
    handle = await find_incident(client, incident_id)
    status = await handle.query(IncidentWorkflow.status)
    if authorize is not None:
        authorize(status)
    request_id = status.approval.request_id if status.approval else "none"
    return await handle.execute_update(
        IncidentWorkflow.decide,
        DecideRequest(
            decision=decision,
            approver=approver,
            request_id=request_id,
            reason=reason,
        ),
    )


async def list_incidents(
    client: Client,
    *,
    service: str | None = None,
    phase: str | None = None,
    severity: str | None = None,
    limit: int = 50,
) -> list[IncidentSummary]:
    """Incidents from visibility, newest first, each completed from its `status` query
    (the error message and frame are not search attributes; phase and occurrences there can
    lag the workflow by seconds)."""
    clauses = ["WorkflowType = 'IncidentWorkflow'"]
    if service:
        clauses.append(f"{names.SA_SERVICE.name} = {names.query_literal(service)}")
    if phase:
        clauses.append(f"{names.SA_PHASE.name} = {names.query_literal(phase)}")
    if severity:
        clauses.append(f"{names.SA_SEVERITY.name} = {names.query_literal(severity)}")
    found: list[IncidentSummary] = []
    run_ids: list[str] = []
    async for execution in client.list_workflows(" AND ".join(clauses), limit=limit):
        attributes = execution.typed_search_attributes
        fingerprint = attributes.get(names.SA_FINGERPRINT) or ""
        service_name = attributes.get(names.SA_SERVICE) or ""
        found.append(
            IncidentSummary(
                incident_id=names.incident_id_for(service_name, fingerprint, execution.run_id),
                workflow_id=execution.id,
                service=service_name,
                phase=attributes.get(names.SA_PHASE) or "",
                severity=attributes.get(names.SA_SEVERITY) or "",
                error_type=attributes.get(names.SA_ERROR_TYPE) or "",
                occurrences=attributes.get(names.SA_OCCURRENCES) or 0,
                started=execution.start_time,
                running=execution.close_time is None,
            )
        )
        run_ids.append(execution.run_id)
    await _complete_from_status(client, found, run_ids)
    return found


async def _complete_from_status(
    client: Client, found: list[IncidentSummary], run_ids: list[str]
) -> None:
    """Fill in what only the status query knows, for the incidents that answer in time."""
    gate = asyncio.Semaphore(_CONCURRENT_QUERIES)

    async def complete(item: IncidentSummary, run_id: str) -> None:
        handle = client.get_workflow_handle_for(
            IncidentWorkflow.run, item.workflow_id, run_id=run_id
        )
        async with gate:
            try:
                status = await handle.query(IncidentWorkflow.status, rpc_timeout=STATUS_WAIT)
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
                return
        item.phase, item.occurrences = status.phase.value, status.occurrences
        item.error_message = status.error_message
        frames = status.evidence.frames if status.evidence else []
        if frames:
            innermost = frames[0]
            item.culprit = (
                f"{innermost.path}:{innermost.line}" if innermost.line else innermost.path
            )
            if innermost.function:
                item.culprit += f" in {innermost.function}"

    tasks = [
        asyncio.create_task(complete(item, run)) for item, run in zip(found, run_ids, strict=True)
    ]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STATUS_WAIT.total_seconds())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
