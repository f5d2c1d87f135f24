"""Finding incidents in Temporal: by id (status query) and by filter (visibility)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.models import DecideRequest, DecideResult, IncidentStatus
from workflows.incident import IncidentWorkflow


class IncidentNotFound(LookupError):
    pass


class IncidentSummary(BaseModel):
    incident_id: str
    workflow_id: str
    service: str
    phase: str
    severity: str
    error_type: str
    occurrences: int
    started: datetime | None
    running: bool


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        if run is None or names.run_tag(latest.run_id) == run:
            return client.get_workflow_handle_for(
                IncidentWorkflow.run, workflow_id, run_id=latest.run_id
            )
    if run is not None:
        async for execution in client.list_workflows(f"WorkflowId = {_quote(workflow_id)}"):
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
    limit: int = 50,
) -> list[IncidentSummary]:
    clauses = ["WorkflowType = 'IncidentWorkflow'"]
    if service:
        clauses.append(f"{names.SA_SERVICE.name} = {_quote(service)}")
    if phase:
        clauses.append(f"{names.SA_PHASE.name} = {_quote(phase)}")
    found: list[IncidentSummary] = []
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
    return found
