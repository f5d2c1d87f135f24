"""A storm costs what a bare endpoint costs: a body seen before is not parsed again, every
request still passes the token and size checks, the count stays exact, and Temporal calls
per incident stay bounded when reports trickle in."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.worker import Worker

from remedy import names
from remedy.config import RemedyConfig, ServiceConfig
from starter.app import IncidentBuilder, create_app
from starter.recent_reports import RecentReports
from starter.reporter import MAX_WAIT_INTERVALS, TemporalReporter
from tests.intake_harness import RecordingReporter
from tests.test_intake import auth, event, real_traceback
from tests.workflow_harness import FakeActivities, eventually, make_start
from workflows.incident import IncidentWorkflow

SHOP_TOKEN = "shop-token-0123456789"
BILLING_TOKEN = "billing-token-9876543210"


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("TEST_SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("TEST_BILLING_TOKEN", BILLING_TOKEN)
    return RemedyConfig(
        services={
            "shop": ServiceConfig(repo="/nonexistent/shop", intake_token_env="TEST_SHOP_TOKEN"),
            "billing": ServiceConfig(
                repo="/nonexistent/billing", intake_token_env="TEST_BILLING_TOKEN"
            ),
        }
    )


@pytest.fixture
async def running(
    config: RemedyConfig, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, IncidentBuilder, RecordingReporter, bytes]]:
    """The intake with its lifespan (so its IncidentBuilder counts builds) and the raw bytes
    of a report with a real traceback."""
    reporter = RecordingReporter()
    app = create_app(config, reporter=reporter)
    body = json.dumps(event(frames=[], traceback=real_traceback(tmp_path))).encode()
    async with app.router.lifespan_context(app), client_of(app) as http:
        yield http, app.state.builder, reporter, body


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")


def headers(token: str = SHOP_TOKEN) -> dict[str, str]:
    return {**auth(token), "Content-Type": "application/json"}


async def test_identical_bodies_are_parsed_once_and_each_is_reported(
    running: tuple[httpx.AsyncClient, IncidentBuilder, RecordingReporter, bytes],
) -> None:
    http, builder, reporter, body = running
    replies = [await http.post("/v1/errors", content=body, headers=headers()) for _ in range(5)]
    assert [r.status_code for r in replies] == [202] * 5
    assert builder.built == 1
    assert len(reporter.starts) == 5
    assert {s.fingerprint for s in reporter.starts} == {reporter.starts[0].fingerprint}
    assert reporter.starts[0].event.frames[-1].function == "total"


async def test_a_changed_body_is_parsed(
    running: tuple[httpx.AsyncClient, IncidentBuilder, RecordingReporter, bytes],
) -> None:
    http, builder, reporter, body = running
    changed = body.replace(b"'sku'", b"'qty'", 1)
    assert changed != body
    for payload in (body, changed, body, changed):
        reply = await http.post("/v1/errors", content=payload, headers=headers())
        assert reply.status_code == 202, reply.text
    assert builder.built == 2
    assert [s.event.error.message for s in reporter.starts] == ["'sku'", "'qty'"] * 2


async def test_a_cached_body_still_needs_the_services_token(
    running: tuple[httpx.AsyncClient, IncidentBuilder, RecordingReporter, bytes],
    config: RemedyConfig,
) -> None:
    http, builder, reporter, body = running
    assert (await http.post("/v1/errors", content=body, headers=headers())).status_code == 202

    refused = await http.post("/v1/errors", content=body, headers=headers("not-a-token"))
    assert refused.status_code == 401, refused.text
    missing = await http.post(
        "/v1/errors", content=body, headers={"Content-Type": "application/json"}
    )
    assert missing.status_code == 401
    # Another service's valid token: the body is its own key there, parsed and refused.
    foreign = await http.post("/v1/errors", content=body, headers=headers(BILLING_TOKEN))
    assert foreign.status_code == 403, foreign.text
    assert "may not report for service 'shop'" in foreign.json()["error"]
    assert len(reporter.starts) == 1

    # The size check runs before the lookup: a cached body over a lowered limit is refused.
    report = json.loads(body)
    padded = json.dumps({**report, "traceback": "log line\n" * 150 + report["traceback"]})
    assert (await http.post("/v1/errors", content=padded, headers=headers())).status_code == 202
    config.intake.max_body_bytes = 1024
    too_big = await http.post("/v1/errors", content=padded, headers=headers())
    assert too_big.status_code == 413, too_big.text
    assert (len(reporter.starts), builder.built) == (2, 2)


def test_recent_reports_are_bounded_in_entries_bytes_and_age() -> None:
    start = make_start()
    by_entries = RecentReports(max_entries=2, max_bytes=1000)
    for body in (b"a", b"b", b"c"):
        by_entries.put("shop", body, start)
    assert by_entries.get("shop", b"a") is None
    assert by_entries.get("shop", b"c") is start
    assert by_entries.get("billing", b"c") is None  # the service is part of the key

    by_bytes = RecentReports(max_entries=10, max_bytes=10)
    by_bytes.put("shop", b"x" * 6, start)
    by_bytes.put("shop", b"y" * 6, start)
    assert (by_bytes.get("shop", b"x" * 6), len(by_bytes)) == (None, 1)
    by_bytes.put("shop", b"z" * 11, start)  # larger than the whole budget: not kept
    assert by_bytes.get("shop", b"z" * 11) is None and len(by_bytes) == 1

    expired = RecentReports(ttl_s=0)
    expired.put("shop", b"a", start)
    assert expired.get("shop", b"a") is None and len(expired) == 0


@pytest.fixture
async def task_queue(client: Client) -> AsyncIterator[str]:
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=FakeActivities().all()
    ):
        yield queue


def reporter_for(client: Client, task_queue: str, interval: float) -> TemporalReporter:
    return TemporalReporter(
        client,
        task_queue=task_queue,
        coalesce_interval_s=interval,
        ui_url="http://127.0.0.1:8233/namespaces/default",
    )


async def test_a_storm_through_the_cache_keeps_an_exact_count(
    client: Client, task_queue: str, config: RemedyConfig, tmp_path: Path
) -> None:
    config.limits.quiet_window_s = 600
    reporter = reporter_for(client, task_queue, 0.05)
    app = create_app(config, reporter=reporter)
    body = json.dumps(event(frames=[], traceback=real_traceback(tmp_path))).encode()
    async with client_of(app) as http:
        replies = await asyncio.gather(
            *(http.post("/v1/errors", content=body, headers=headers()) for _ in range(300))
        )
    await reporter.close()
    assert [r.status_code for r in replies] == [202] * 300
    assert app.state.recent_reports.hits == 299
    workflow_id = replies[0].json()["workflow_id"]
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)

    async def exact() -> bool:
        return (await handle.query(IncidentWorkflow.status)).occurrences == 300

    await eventually(exact)
    await client.get_workflow_handle(workflow_id).terminate("test done")


async def test_a_trickle_is_signalled_in_batches_and_its_count_follows(
    client: Client, task_queue: str
) -> None:
    interval = 0.05
    start = make_start(quiet_window_s=600)
    workflow_id = names.workflow_id_for(start.service, start.fingerprint)
    reporter = reporter_for(client, task_queue, interval)
    await reporter.report(start)
    calls_after_start = reporter.temporal_calls
    # 200 reports, one every 10 ms: a signal per interval would be one per 5 reports; a
    # batch waits for MAX_WAIT_INTERVALS intervals (0.2 s). A few more calls are allowed for
    # the recurrence run that follows the incident's outcome (describe, start, a refused signal).
    began = time.monotonic()
    for _ in range(200):
        await reporter.report(start)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - began
    calls = reporter.temporal_calls - calls_after_start
    assert calls <= elapsed / (interval * MAX_WAIT_INTERVALS) + 5, (calls, elapsed)

    handle = client.get_workflow_handle(workflow_id)

    async def follows() -> bool:
        described = await handle.describe()
        return described.typed_search_attributes.get(names.SA_OCCURRENCES) == 201

    # Without close(): the count arrives by the flusher alone, within its wait.
    await eventually(follows, timeout_s=5)
    await reporter.close()
    await handle.terminate("test done")
