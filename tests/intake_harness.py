"""End-to-end tests drive the product as it runs: the intake app and a worker with the
worker's own activity set (worker.build_activities), a few replaced by doubles under their real
names. tests/test_slack_workflow_e2e.py uses it; tests/test_spine_e2e.py can too. Tests that
must prove nothing started give the intake a RecordingReporter instead of Temporal's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from temporalio.client import Client

from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.models import IncidentStart, IntakeResponse
from starter.app import create_app
from starter.reporter import TemporalReporter
from worker import build_activities, build_worker

UI_BASE = "http://127.0.0.1:8233/namespaces/default"


class RecordingReporter:
    """The intake's reporter, keeping what would have started an incident."""

    def __init__(self) -> None:
        self.starts: list[IncidentStart] = []

    async def report(self, start: IncidentStart) -> IntakeResponse:
        self.starts.append(start)
        return IntakeResponse(
            incident_id=f"{start.service}-{start.fingerprint}-00000000",
            workflow_id=f"incident-{start.service}-{start.fingerprint}",
            deduplicated=len(self.starts) > 1,
            occurrences=len(self.starts),
            ui_url="http://ui",
        )


@contextlib.asynccontextmanager
async def running_intake(
    client: Client, config: RemedyConfig, doubles: Mapping[str, Callable[..., Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the intake app (errors in, Slack clicks in), while a worker runs the
    worker's activities with `doubles` (activity name -> double) in place of those names."""
    store = ArtifactStore(config.artifacts_dir)
    # The worker's activities are bound methods named like the activity they define.
    real = [a for a in build_activities(config, store) if a.__name__ not in doubles]
    reporter = TemporalReporter(
        client, task_queue=config.temporal.task_queue, coalesce_interval_s=0.05, ui_url=UI_BASE
    )
    app = create_app(config, reporter=reporter, client=client)
    async with build_worker(client, config, activities=[*real, *doubles.values()]):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            yield http
        await reporter.close()


async def report_error(http: httpx.AsyncClient, token: str, event: dict[str, Any]) -> str:
    """POST the event to /v1/errors with the service's intake token; the new incident's id."""
    reply = await http.post("/v1/errors", json=event, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 202, reply.text
    incident_id: str = reply.json()["incident_id"]
    return incident_id
