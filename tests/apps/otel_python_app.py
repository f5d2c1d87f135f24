"""A small service on the real OpenTelemetry SDK with its OTLP/HTTP exporters, run by
tests/test_otlp_intake.py.

    python otel_python_app.py ENDPOINT TOKEN SERVICE_NAME MODE [COUNT]

MODE `logs`: COUNT errors logged with `logger.exception` through the OTLP log exporter.
MODE `traces`: COUNT spans that end in the same exception (recorded as span events).
"""

from __future__ import annotations

import logging
import sys

from cart import checkout
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

endpoint, token, service_name, mode = sys.argv[1:5]
count = int(sys.argv[5]) if len(sys.argv) > 5 else 1
headers = {"Authorization": f"Bearer {token}"}
resource = Resource.create(
    {
        "service.name": service_name,
        "service.version": "1.4.0",
        "vcs.ref.head.revision": "4f2a9c1e",
        "deployment.environment.name": "prod",
    }
)

if mode == "logs":
    provider = LoggerProvider(resource=resource)
    exporter = OTLPLogExporter(
        endpoint=f"{endpoint}/v1/logs", headers=headers, compression=Compression.Gzip
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger("shop.checkout")
    logger.addHandler(LoggingHandler(logger_provider=provider))
    for _ in range(count):
        try:
            checkout({"price": 3})
        except RuntimeError:
            logger.exception("checkout failed")
    logger.info("a record without an exception is left alone")
    provider.shutdown()
else:
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers))
    )
    tracer = tracer_provider.get_tracer("shop")
    for _ in range(count):
        try:
            with tracer.start_as_current_span("POST /checkout"):
                checkout({"price": 3})
        except RuntimeError:
            pass
    with tracer.start_as_current_span("GET /healthz"):
        pass
    tracer_provider.shutdown()
