"""Remedy's own Prometheus counters, and the Temporal SDK's runtime metrics.

The intake counts the reports it answers and refuses; a worker counts, from what its
activities and incident workflows return (activities/metrics.py), the incidents by outcome
and by phase passed, the LLM tokens and their cost, the verification results and the index
chunks embedded. Both sides fill the one registry of their process: the intake serves it at
`GET /metrics`, a worker at `[metrics] port`. `[metrics] temporal_port` is the SDK's own
endpoint (pollers, task slots, latencies), served by Temporal's Rust core from every process
that connects (`temporal_runtime`, passed to `Client.connect`).
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    generate_latest,
    start_http_server,
)
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from remedy.config import MetricsConfig
from remedy.models import (
    DiagnosisResult,
    IncidentStatus,
    IndexResult,
    RegressionTestResult,
    VerificationResult,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

REPORTS = Counter(
    "remedy_reports",
    "Error reports the intake answered: accepted (a new or joined incident), deduplicated "
    "(joined an open one), rejected (a 4xx/5xx, by status)",
    ["outcome", "status"],
)
INCIDENTS_CLOSED = Counter(
    "remedy_incidents_closed",
    "Incident workflows that returned, by the phase they ended in",
    ["phase"],
)
INCIDENT_PHASES = Counter(
    "remedy_incident_phases",
    "Phases that closed incidents passed through (one per incident and phase)",
    ["phase"],
)
LLM_TOKENS = Counter(
    "remedy_llm_tokens",
    "Tokens spent on diagnoses and regression tests",
    ["backend", "model", "kind"],
)
LLM_COST = Counter(
    "remedy_llm_cost_usd", "Estimated cost of those tokens ([llm] prices)", ["backend", "model"]
)
VERIFICATIONS = Counter("remedy_verifications", "verify_patch results", ["status"])
CHUNKS_EMBEDDED = Counter(
    "remedy_index_chunks_embedded", "Code chunks the index embedded (not reused vectors)"
)


def count_report(*, deduplicated: bool) -> None:
    REPORTS.labels("deduplicated" if deduplicated else "accepted", "202").inc()


def count_rejected_report(status: int) -> None:
    REPORTS.labels("rejected", str(status)).inc()


def observe_activity_result(result: object) -> None:
    """Count what an activity returned; results of other kinds count nothing."""
    if isinstance(result, DiagnosisResult | RegressionTestResult):
        for usage in result.usage:
            LLM_TOKENS.labels(usage.backend, usage.model, "input").inc(usage.input_tokens)
            LLM_TOKENS.labels(usage.backend, usage.model, "output").inc(usage.output_tokens)
            LLM_COST.labels(usage.backend, usage.model).inc(usage.cost_usd)
    elif isinstance(result, VerificationResult):
        VERIFICATIONS.labels(result.status).inc()
    elif isinstance(result, IndexResult):
        CHUNKS_EMBEDDED.inc(result.embedded)


def observe_incident_closed(status: IncidentStatus) -> None:
    INCIDENTS_CLOSED.labels(status.phase.value).inc()
    for phase in {change.phase for change in status.history} | {status.phase}:
        INCIDENT_PHASES.labels(phase.value).inc()


def exposition() -> bytes:
    """The registry in Prometheus text format (CONTENT_TYPE)."""
    return generate_latest(REGISTRY)


_served: set[tuple[str, int]] = set()
_runtimes: dict[str, Runtime] = {}
_lock = threading.Lock()


def serve(config: MetricsConfig) -> None:
    """Serve the registry at [metrics] host:port from a thread, once per process."""
    if config.port is None:
        return
    with _lock:
        if (config.host, config.port) not in _served:
            start_http_server(config.port, addr=config.host, registry=REGISTRY)
            _served.add((config.host, config.port))


def temporal_runtime(config: MetricsConfig) -> Runtime | None:
    """The Temporal runtime that serves the SDK's metrics at [metrics] temporal_port, made
    once per process (each binds its port); None: the SDK's default runtime, no metrics."""
    if config.temporal_port is None:
        return None
    address = f"{config.host}:{config.temporal_port}"
    with _lock:
        if address not in _runtimes:
            _runtimes[address] = Runtime(
                telemetry=TelemetryConfig(
                    metrics=PrometheusConfig(bind_address=address, counters_total_suffix=True)
                )
            )
        return _runtimes[address]
