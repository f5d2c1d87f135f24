"""Tracing: with [tracing] enabled, one report through the intake and the product's worker
(scripted activities under the real names) is one trace: the HTTP request (FastAPI's own
server span, continuing the reporting service's `traceparent`), the workflow start
(Temporal's tracing interceptor on the intake's client), the workflow run and every
activity, in an in-memory span exporter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from remedy.config import RemedyConfig, ServiceConfig
from remedy.models import Phase
from remedy.temporal import connect_options
from remedy.tracing import flush_spans
from starter.app import create_app
from starter.reporter import TemporalReporter
from tests.workflow_harness import FakeActivities, eventually
from worker import build_worker
from workflows.incident import IncidentWorkflow

# A service of its own: incidents are per (service, fingerprint) in the session's
# namespace, so no other test's open or recently closed "shop" incident is joined.
SERVICE = "tracing-shop"
TOKEN = "tracing-shop-token-0123456789"
# An instrumented service's own trace: the incident continues it.
SERVICE_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = f"00-{SERVICE_TRACE_ID:032x}-00f067aa0ba902b7-01"
EVENT = {
    "service": SERVICE,
    "release": "0" * 40,
    "error": {"type": "KeyError", "message": "'sku'"},
    "frames": [{"file": "app/cart.py", "line": 2, "function": "total"}],
}


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's SDK tracer provider (installed here if none is) with an in-memory
    exporter added; the product's remedy.tracing then keeps that provider."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()  # later tests' spans are not kept


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Client) -> RemedyConfig:
    monkeypatch.setenv("TRACING_SHOP_TOKEN", TOKEN)
    config = RemedyConfig(
        home=str(tmp_path / "home"),
        services={
            SERVICE: ServiceConfig(
                repo=str(tmp_path / "shop"),
                intake_token_env="TRACING_SHOP_TOKEN",
                approvers=["U024BE7LH"],
            )
        },
    )
    config.temporal.address = client.service_client.config.target_host
    config.temporal.task_queue = f"tracing-{uuid.uuid4()}"
    config.limits.quiet_window_s = 0
    config.tracing.enabled = True
    return config


def _names(spans: list[ReadableSpan]) -> list[str]:
    return sorted(span.name for span in spans)


async def test_one_incident_is_one_trace_from_intake_to_activities(
    config: RemedyConfig, spans: InMemorySpanExporter
) -> None:
    options = connect_options(config)
    assert any(isinstance(i, TracingInterceptor) for i in options["interceptors"])
    traced = await Client.connect(**options)
    reporter = TemporalReporter(
        traced, task_queue=config.temporal.task_queue, coalesce_interval_s=0.05, ui_url="http://ui"
    )
    app = create_app(config, reporter=reporter, client=traced)
    # The worker is built from the traced client: it takes the client's tracing interceptor.
    fakes = FakeActivities()  # no diagnosis: the incident ends triaged
    async with (
        build_worker(traced, config, activities=fakes.all()),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http,
    ):
        reply = await http.post(
            "/v1/errors",
            json=EVENT,
            headers={"Authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT},
        )
        assert reply.status_code == 202, reply.text
        handle = traced.get_workflow_handle_for(IncidentWorkflow.run, reply.json()["workflow_id"])
        status = await asyncio.wait_for(handle.result(), 60)
        assert status.phase == Phase.TRIAGED
        await reporter.close()

    def in_trace() -> list[ReadableSpan]:
        return [
            span
            for span in spans.get_finished_spans()
            if span.context is not None and span.context.trace_id == SERVICE_TRACE_ID
        ]

    async def workflow_span_done() -> bool:
        return "RunWorkflow:IncidentWorkflow" in _names(in_trace())

    await eventually(workflow_span_done, timeout_s=30)
    names = _names(in_trace())
    assert "POST /v1/errors" in names, names
    assert "StartWorkflow:IncidentWorkflow" in names, names
    ran = {name.removeprefix("RunActivity:") for name in names if name.startswith("RunActivity:")}
    assert set(fakes.calls) <= ran, f"activities outside the trace: {set(fakes.calls) - ran}"
    assert {"sync_repo", "investigate", "diagnose"} <= ran
    request = next(
        span
        for span in in_trace()
        if span.name == "POST /v1/errors" and span.kind == trace.SpanKind.SERVER
    )
    assert request.parent is not None and request.parent.span_id == 0x00F067AA0BA902B7
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["http.route"] == "/v1/errors"


def test_spans_still_batched_are_exported_before_the_process_exits(
    spans: InMemorySpanExporter,
) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    batched = InMemorySpanExporter()
    # The product's own processor: spans wait in a batch for seconds before they are sent.
    processor = BatchSpanProcessor(batched, schedule_delay_millis=60_000)
    provider.add_span_processor(processor)
    try:
        with trace.get_tracer(__name__).start_as_current_span("last words"):
            pass
        assert not batched.get_finished_spans()
        flush_spans()
        assert [span.name for span in batched.get_finished_spans()] == ["last words"]
    finally:
        processor.shutdown()
