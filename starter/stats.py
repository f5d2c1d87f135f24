"""The incident runs from Temporal visibility, for `remedy stats` and the intake's gauges.

One listing of every IncidentWorkflow run: search attributes, start and close times, close
status and memo, turned into remedy.stats.IncidentRun; remedy.stats does the counting.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client

from remedy import names
from remedy.stats import RUNNING, IncidentRun, IncidentStats, incident_stats
from remedy.temporal import TemporalUnreachable

QUERY = "WorkflowType = 'IncidentWorkflow'"
# The whole listing, all pages: past it the command says so in one line.
LIST_TIMEOUT_S = 30.0
_RPC_TIMEOUT = timedelta(seconds=10)


async def incident_runs(client: Client, *, service: str | None = None) -> list[IncidentRun]:
    query = (
        QUERY
        if not service
        else f"{QUERY} AND {names.SA_SERVICE.name} = {names.query_literal(service)}"
    )
    runs: list[IncidentRun] = []
    async for execution in client.list_workflows(query, rpc_timeout=_RPC_TIMEOUT):
        attributes = execution.typed_search_attributes
        runs.append(
            IncidentRun(
                workflow_id=execution.id,
                run_id=execution.run_id,
                service=attributes.get(names.SA_SERVICE) or "",
                error_type=attributes.get(names.SA_ERROR_TYPE) or "",
                phase=attributes.get(names.SA_PHASE) or "",
                fingerprint=attributes.get(names.SA_FINGERPRINT) or "",
                started=execution.start_time,
                closed=execution.close_time,
                status=execution.status.name.lower() if execution.status else RUNNING,
                first_run_id=execution.raw_info.first_run_id,
                pr_opened_at=attributes.get(names.SA_PR_OPENED_AT),
                recurrence_of=str(await execution.memo_value(names.MEMO_RECURRENCE_OF, "") or ""),
                continues=str(await execution.memo_value(names.MEMO_INCIDENT_ID, "") or ""),
            )
        )
    return runs


async def stats(
    client: Client, *, service: str | None = None, timeout_s: float = LIST_TIMEOUT_S
) -> IncidentStats:
    """The table from one listing (`service`: that service's incidents only). A listing
    longer than `timeout_s` (a server that accepts the connection but does not answer) is
    TemporalUnreachable."""
    try:
        async with asyncio.timeout(timeout_s):
            runs = await incident_runs(client, service=service)
    except TimeoutError:
        raise TemporalUnreachable(
            _address(client), f"no incident listing within {timeout_s:.0f} s"
        ) from None
    return incident_stats(runs)


def _address(client: Client) -> str:
    return str(client.service_client.config.target_host)
