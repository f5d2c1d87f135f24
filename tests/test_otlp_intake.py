"""OpenTelemetry intake, driven by the real OpenTelemetry Python SDK and its OTLP/HTTP
exporters: exceptions in log records and span events become incidents with the frames of
their stacktrace and the release of their resource; bad exports get 4xx, never 5xx."""

from __future__ import annotations

import base64
import gzip
import logging
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remedy.config import RemedyConfig
from remedy.service_policy import Severity
from starter.otlp import MAX_DISTINCT_ERRORS
from tests.apps import harness
from tests.apps.cart import checkout
from tests.apps.harness import (
    python_app,
    run_app,
    shop_and_billing,
)
from tests.intake_harness import RecordingReporter
from tests.test_intake import SHOP_TOKEN

# The SDK's LoggingHandler is what services run today; its successor lives in another package.
pytestmark = pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk`")

RESOURCE = {
    "service.name": "shop",
    "service.version": "1.4.0",
    "vcs.ref.head.revision": "4f2a9c1e",
    "deployment.environment.name": "prod",
}


# The SDK tests' shared fixtures, over this module's `config`.
reporter = harness.reporter
http = harness.http
served = harness.served


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    return shop_and_billing(monkeypatch)


async def run_otel_app(url: str, service_name: str, mode: str, count: int) -> str:
    return await run_app(
        *python_app("otel_python_app.py", url, SHOP_TOKEN, service_name, mode, str(count))
    )


def bearer(token: str = SHOP_TOKEN, media: str = "application/x-protobuf") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": media}


def sdk_logs(resource: dict[str, str] = RESOURCE) -> ExportLogsServiceRequest:
    """The OTLP request the SDK's exporter sends for one `logger.exception`."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(resource))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"test.otlp.{id(exporter)}")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))
    try:
        checkout({"price": 3})
    except RuntimeError:
        logger.exception("checkout failed")
    provider.shutdown()
    request: ExportLogsServiceRequest = encode_logs(exporter.get_finished_logs())
    return request


def as_otlp_json(message: Any) -> dict[str, Any]:
    """OTLP's JSON encoding: protobuf's JSON mapping with trace and span ids in hex."""

    def hexed(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: base64.b64decode(v).hex() if k in ("traceId", "spanId") else hexed(v)
                for k, v in value.items()
            }
        return [hexed(v) for v in value] if isinstance(value, list) else value

    result: dict[str, Any] = hexed(json_format.MessageToDict(message))
    return result


# ---------------------------------------------------------------------------- real SDK


async def test_the_sdk_log_exporter_reports_exceptions(
    served: str, reporter: RecordingReporter
) -> None:
    await run_otel_app(served, "shop", "logs", 3)
    assert len(reporter.starts) == 3  # the record without an exception is left alone
    assert len({start.fingerprint for start in reporter.starts}) == 1
    event = reporter.starts[0].event
    assert (event.service, event.release, event.environment) == ("shop", "4f2a9c1e", "prod")
    assert event.error.type == "RuntimeError"
    assert event.error.message == "checkout failed for the order"
    innermost = event.frames[-1]
    assert innermost.file.endswith("tests/apps/cart.py") and innermost.function == "checkout"
    assert innermost.line == 12
    assert event.tags["otel.source"] == "log" and event.tags["service.version"] == "1.4.0"
    assert event.traceback is not None and "KeyError: 'sku'" in event.traceback
    assert reporter.starts[0].severity == Severity.HIGH  # ERROR: the policy decides


async def test_a_storm_in_one_export_counts_every_record(
    served: str, reporter: RecordingReporter
) -> None:
    await run_otel_app(served, "shop", "logs", 400)
    assert len(reporter.starts) == 400
    assert len({start.fingerprint for start in reporter.starts}) == 1


async def test_too_many_different_errors_in_one_export_are_refused(
    http: httpx.AsyncClient, reporter: RecordingReporter
) -> None:
    request = sdk_logs()
    [record] = request.resource_logs[0].scope_logs[0].log_records
    for n in range(MAX_DISTINCT_ERRORS):
        extra = request.resource_logs[0].scope_logs[0].log_records.add()
        extra.CopyFrom(record)
        for pair in extra.attributes:
            if pair.key == "exception.type":
                pair.value.string_value = f"Error{n}"
    reply = await http.post("/v1/logs", content=request.SerializeToString(), headers=bearer())
    assert reply.status_code == 413 and "different errors" in reply.json()["error"]
    assert reporter.starts == []


async def test_the_sdk_span_exporter_reports_exception_events(
    served: str, reporter: RecordingReporter
) -> None:
    await run_otel_app(served, "shop", "traces", 4)
    assert len(reporter.starts) == 4
    assert len({start.fingerprint for start in reporter.starts}) == 1
    event = reporter.starts[0].event
    assert event.error.type == "RuntimeError" and event.release == "4f2a9c1e"
    assert event.frames[-1].function == "checkout"
    assert event.tags["otel.span"] == "POST /checkout"
    assert len(event.tags["otel.trace_id"]) == 32


async def test_a_token_of_another_service_reports_nothing(
    served: str, reporter: RecordingReporter
) -> None:
    output = await run_otel_app(served, "billing", "logs", 1)
    assert "403" in output
    assert reporter.starts == []


# ---------------------------------------------------------------------------- encodings


async def test_json_and_gzip_encodings(
    http: httpx.AsyncClient, reporter: RecordingReporter
) -> None:
    request = sdk_logs()
    body = as_otlp_json(request)
    reply = await http.post("/v1/logs", json=body, headers=bearer(media="application/json"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json" and reply.json() == {}
    reply = await http.post(
        "/v1/logs",
        content=gzip.compress(request.SerializeToString()),
        headers={**bearer(), "Content-Encoding": "gzip"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/x-protobuf"
    assert ExportLogsServiceResponse.FromString(reply.content) == ExportLogsServiceResponse()
    json_start, proto_start = reporter.starts
    assert json_start.fingerprint == proto_start.fingerprint
    assert json_start.event.timestamp == proto_start.event.timestamp

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create(RESOURCE))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with tracer_provider.get_tracer("t").start_as_current_span("job"):
            checkout({})
    except RuntimeError:
        pass
    [span] = exporter.get_finished_spans()
    body = as_otlp_json(encode_spans([span]))
    reply = await http.post("/v1/traces", json=body, headers=bearer(media="application/json"))
    assert reply.status_code == 200, reply.text
    tags = reporter.starts[-1].event.tags
    assert tags["otel.span"] == "job"
    assert span.context is not None
    assert tags["otel.trace_id"] == format(span.context.trace_id, "032x")  # hex in OTLP JSON


async def test_records_of_other_services_are_a_partial_success(
    http: httpx.AsyncClient, reporter: RecordingReporter
) -> None:
    mixed = sdk_logs()
    mixed.MergeFrom(sdk_logs({**RESOURCE, "service.name": "billing"}))
    reply = await http.post("/v1/logs", content=mixed.SerializeToString(), headers=bearer())
    assert reply.status_code == 200, reply.text
    partial = ExportLogsServiceResponse.FromString(reply.content).partial_success
    assert partial.rejected_log_records == 1 and "billing" in partial.error_message
    assert [start.service for start in reporter.starts] == ["shop"]
    # An SDK that never set service.name reports for the token's service.
    unnamed = sdk_logs({"service.version": "1.4.0"})
    reply = await http.post("/v1/logs", content=unnamed.SerializeToString(), headers=bearer())
    assert reply.status_code == 200 and reporter.starts[-1].service == "shop"


# ---------------------------------------------------------------------------- fuzz


def _bad_exports(valid: bytes) -> Iterator[tuple[str, Any, dict[str, str]]]:
    json_media = {"Content-Type": "application/json"}
    yield "no token", valid, {"Authorization": ""}
    yield "wrong token", valid, {"Authorization": "Bearer nope"}
    yield "text/plain", valid, {"Content-Type": "text/plain"}
    yield "not protobuf", b"\xff" * 64, {}
    yield "truncated protobuf", valid[: len(valid) // 2], {}
    yield "not json", b"{nope", json_media
    yield "json array", b"[1]", json_media
    yield "json deep", b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", json_media
    for shape in (
        {"resourceLogs": 5},
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]},
        {"resourceLogs": [{"resource": {"attributes": [{"key": 1, "value": []}]}}]},
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz", "body": 5}]}]}]},
    ):
        yield f"json shape {shape}", shape, json_media
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    yield "gzip bomb", bomb, {"Content-Encoding": "gzip"}
    yield "unknown encoding", valid, {"Content-Encoding": "zstd"}
    yield "json bomb", bomb, {"Content-Encoding": "gzip", **json_media}


async def test_fuzzed_exports_get_4xx_and_start_nothing(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    config.intake.max_envelope_bytes = 1024 * 1024
    valid_request = sdk_logs()
    valid = valid_request.SerializeToString()
    cases = list(_bad_exports(valid))
    rng = random.Random(7)
    for n in range(200):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append((f"mutation {n}", bytes(mutated), {}))
    for path in ("/v1/logs", "/v1/traces"):
        for name, body, headers in cases:
            before = len(reporter.starts)
            sent = {**bearer(), **headers}
            if isinstance(body, dict):
                reply = await http.post(path, json=body, headers=sent)
            else:
                reply = await http.post(path, content=body, headers=sent)
            assert reply.status_code < 500, (path, name, reply.text)
            if not name.startswith(("mutation", "json shape")):
                assert 400 <= reply.status_code < 500, (path, name, reply.text)
            if reply.status_code >= 400:
                assert len(reporter.starts) == before, (path, name)
            if name.endswith("bomb"):
                assert reply.status_code == 413, (path, name, reply.text)
