"""OpenTelemetry tracing: one incident is one trace, from the intake's request through the
workflow to every activity.

With `[tracing] enabled`, every Temporal client of the process carries Temporal's
OpenTelemetry interceptor (`client_interceptors`, passed to `Client.connect`), which puts the
span context into workflow and activity headers; a worker built from that client uses it too.
Spans go over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the OpenTelemetry SDK's variables
apply: OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS ...) unless the process installed a
tracer provider of its own first (tests, an embedding application).
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor

from remedy.config import TracingConfig

_lock = threading.Lock()


def install_tracer_provider() -> None:
    """An SDK tracer provider exporting over OTLP/HTTP, unless one is installed already."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with _lock:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return
        name = os.environ.get("OTEL_SERVICE_NAME") or "remedy"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)


def flush_spans(timeout_s: float = 5.0) -> None:
    """Export what the batch processor still holds: a process about to exit loses it otherwise."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=int(timeout_s * 1000))


def client_interceptors(config: TracingConfig) -> list[TracingInterceptor]:
    """What `Client.connect` gets as `interceptors`: Temporal's tracing one, when enabled."""
    if not config.enabled:
        return []
    install_tracer_provider()
    return [TracingInterceptor()]
