"""Metrics: after one incident through the intake and the product's worker (scripted
activities under the real names), the intake's GET /metrics and the worker's [metrics] port
both show Remedy's counters; [metrics] temporal_port serves the Temporal SDK's own."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity
from temporalio.client import Client

from remedy import metrics, names
from remedy.config import MetricsConfig, RemedyConfig, ServiceConfig
from remedy.models import (
    DiagnoseRequest,
    DiagnosisResult,
    IndexRequest,
    IndexResult,
    LLMUsage,
    Phase,
)
from remedy.temporal import connect_options
from starter.app import create_app
from starter.reporter import TemporalReporter
from tests.conftest import free_port
from tests.workflow_harness import (
    FakeActivities,
    eventually,
    fix_diagnosis,
    make_start,
    start_incident,
)
from worker import build_worker
from workflows.incident import IncidentWorkflow

# A service of its own: incidents are per (service, fingerprint) in the session's
# namespace, so no other test's open or recently closed "shop" incident is joined.
SERVICE = "metrics-shop"
TOKEN = "metrics-shop-token-0123456789"
EVENT = {
    "service": SERVICE,
    "release": "0" * 40,
    "error": {"type": "KeyError", "message": "'sku'"},
    "frames": [{"file": "app/cart.py", "line": 2, "function": "total"}],
}
USAGE = LLMUsage(
    backend="claude", model="claude-metrics-test", input_tokens=1200, output_tokens=300,
    cost_usd=0.0081,
)  # fmt: skip
EMBEDDED = 37

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _activity_name(function: Callable[..., Any]) -> str:
    return str(getattr(function, "__temporal_activity_definition").name)


def scripted_activities() -> list[Callable[..., Any]]:
    """The harness's activities, with a diagnosis that spent tokens and an index run that
    embedded chunks; verification passes; the approval then expires."""

    @activity.defn(name=names.ACTIVITY_DIAGNOSE)
    async def diagnose(request: DiagnoseRequest) -> DiagnosisResult:
        return DiagnosisResult(
            diagnosis=fix_diagnosis(), backend="claude", tokens=1500, usage=[USAGE]
        )

    @activity.defn(name=names.ACTIVITY_INDEX_REPO)
    async def index_repo(request: IndexRequest) -> IndexResult:
        return IndexResult(
            repo=request.worktree.service, commit=request.worktree.commit, embedded=EMBEDDED
        )

    replaced = {names.ACTIVITY_DIAGNOSE: diagnose, names.ACTIVITY_INDEX_REPO: index_repo}
    fakes = FakeActivities(diagnosis=fix_diagnosis(), verification="passed").all()
    return [replaced.get(_activity_name(f), f) for f in fakes]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("METRICS_SHOP_TOKEN", TOKEN)
    config = RemedyConfig(
        home=str(tmp_path / "home"),
        services={
            SERVICE: ServiceConfig(
                repo=str(tmp_path / "shop"),
                intake_token_env="METRICS_SHOP_TOKEN",
                approvers=["U024BE7LH"],
                allowed_paths=["app/**"],
            )
        },
    )
    config.temporal.task_queue = f"metrics-{uuid.uuid4()}"
    config.limits.quiet_window_s = 0
    config.limits.approval_timeout_s = 2  # the incident closes as expired
    config.metrics.port = free_port()
    return config


async def test_one_incident_shows_in_the_intake_and_worker_counters(
    client: Client, config: RemedyConfig
) -> None:
    metrics.serve(config.metrics)
    worker_url = f"http://127.0.0.1:{config.metrics.port}/metrics"
    reporter = TemporalReporter(
        client, task_queue=config.temporal.task_queue, coalesce_interval_s=0.05, ui_url="http://ui"
    )
    app = create_app(config, reporter=reporter, client=client)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        build_worker(client, config, activities=scripted_activities()),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http,
        httpx.AsyncClient(timeout=10) as scraper,
    ):
        scraped = await http.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        before = samples(scraped.text)

        first = await http.post("/v1/errors", json=EVENT, headers=headers)
        again = await http.post("/v1/errors", json=EVENT, headers=headers)
        refused = await http.post("/v1/errors", json=EVENT, headers={"Authorization": "Bearer x"})
        assert (first.status_code, again.status_code, refused.status_code) == (202, 202, 401)
        assert again.json()["deduplicated"] is True
        handle = client.get_workflow_handle_for(IncidentWorkflow.run, first.json()["workflow_id"])
        status = await asyncio.wait_for(handle.result(), 60)
        assert status.phase == Phase.EXPIRED

        async def closed_counted() -> Samples | None:
            # The worker counts the close after the result is recorded; poll for it.
            now = samples((await scraper.get(worker_url)).text)
            closed = delta(now, before, "remedy_incidents_closed_total", phase="expired")
            return now if closed else None

        after: Samples = await eventually(closed_counted, timeout_s=30)
        intake_view = samples((await http.get("/metrics")).text)
        await reporter.close()

    # One registry per process: the intake's endpoint shows the worker's counters too.
    assert delta(intake_view, before, "remedy_incidents_closed_total", phase="expired") == 1
    assert delta(after, before, "remedy_reports_total", outcome="accepted", status="202") == 1
    assert delta(after, before, "remedy_reports_total", outcome="deduplicated", status="202") == 1
    assert delta(after, before, "remedy_reports_total", outcome="rejected", status="401") == 1
    assert delta(after, before, "remedy_incidents_closed_total", phase="expired") == 1
    for phase in ("received", "diagnosing", "verifying", "awaiting_approval", "expired"):
        assert delta(after, before, "remedy_incident_phases_total", phase=phase) == 1, phase
    llm = {"backend": "claude", "model": "claude-metrics-test"}
    assert delta(after, before, "remedy_llm_tokens_total", kind="input", **llm) == 1200
    assert delta(after, before, "remedy_llm_tokens_total", kind="output", **llm) == 300
    assert delta(after, before, "remedy_llm_cost_usd_total", **llm) == pytest.approx(0.0081)
    assert delta(after, before, "remedy_verifications_total", status="passed") == 1
    assert delta(after, before, "remedy_index_chunks_embedded_total") == EMBEDDED


DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "remedy.json"


def dashboard_metrics(prefix: str) -> set[str]:
    """The metric names the sample Grafana dashboard queries, by prefix."""
    exprs = [
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    ]
    return {name for expr in exprs for name in re.findall(rf"\b{prefix}_[a-z_]+", expr)}


def test_the_dashboard_queries_only_remedy_counters_that_exist() -> None:
    queried = dashboard_metrics("remedy")
    exposed = {family.name + "_total" for family in text_string_to_metric_families(
        metrics.exposition().decode()
    ) if family.type == "counter"}  # fmt: skip
    assert queried and queried <= exposed, queried - exposed


async def test_the_temporal_sdk_serves_its_metrics_on_temporal_port(client: Client) -> None:
    """An incident through a worker on a client with [metrics] temporal_port: the SDK's
    metrics the dashboard queries are served there."""
    config = RemedyConfig(metrics=MetricsConfig(temporal_port=free_port()))
    config.temporal.address = client.service_client.config.target_host
    config.temporal.task_queue = f"sdk-metrics-{uuid.uuid4()}"
    options = connect_options(config)
    assert options["runtime"] is metrics.temporal_runtime(config.metrics), "one per process"
    own = await Client.connect(**options)
    async with build_worker(own, config, activities=FakeActivities().all()):
        handle = await start_incident(own, config.temporal.task_queue, make_start(notify_only=True))
        assert (await asyncio.wait_for(handle.result(), 60)).phase == Phase.NOTIFIED
        url = f"http://127.0.0.1:{config.metrics.temporal_port}/metrics"
        wanted = dashboard_metrics("temporal")
        assert len(wanted) == 3, wanted
        async with httpx.AsyncClient(timeout=10) as scraper:

            async def served() -> bool:
                names_served = {
                    sample.name
                    for family in text_string_to_metric_families((await scraper.get(url)).text)
                    for sample in family.samples
                }
                return wanted <= names_served

            await eventually(served, timeout_s=30)
