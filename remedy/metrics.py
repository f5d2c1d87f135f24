"""Remedy's own Prometheus counters, and the Temporal SDK's runtime metrics.

The intake counts the reports it answers and refuses; a worker counts, from what its
activities and incident workflows return (activities/metrics.py), the incidents by outcome
and by phase passed, the LLM tokens and their cost, the verification results and the index
chunks embedded. The intake also shows `remedy stats` as gauges (IncidentStatsCollector),
listed from Temporal visibility at scrape time (starter/metrics.py). Both sides fill the one
registry of their process: the intake serves it at `GET /metrics`, a worker at
`[metrics] port`. `[metrics] temporal_port` is the SDK's own endpoint (pollers, task slots,
latencies), served by Temporal's Rust core from every process that connects
(`temporal_runtime`, passed to `Client.connect`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from remedy.config import MetricsConfig
from remedy.models import (
    DiagnosisResult,
    IncidentStatus,
    IndexResult,
    RegressionTestResult,
    VerificationResult,
)
from remedy.stats import STAGES, IncidentStats

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


class IncidentStatsCollector(Collector):
    """`remedy stats` as gauges: the figures of the intake's last listing of the incidents
    (starter/metrics.py refreshes them before a scrape, at most once per interval)."""

    def __init__(self) -> None:
        self.stats: IncidentStats | None = None
        self.up = False
        self.listed_at: float | None = None

    def describe(self) -> list[Metric]:
        # Nothing to check against other names, and no figures to compute at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "remedy_stats_up",
            "1 when the intake's last listing of the incidents (Temporal visibility) answered",
        )
        up.add_metric([], 1.0 if self.up else 0.0)
        yield up
        if self.listed_at is not None:
            yield GaugeMetricFamily(
                "remedy_stats_listed_timestamp_seconds",
                "When the listing the remedy_incidents and remedy_fixes figures come from ran",
                value=self.listed_at,
            )
        if self.stats is None:
            return
        labels = ["service", "error_type"]
        incidents = GaugeMetricFamily(
            "remedy_incidents", "Incidents (recurrence runs not counted)", labels=labels
        )
        fixes = GaugeMetricFamily(
            "remedy_fixes",
            "Incidents whose fix reached the stage or went beyond: proposed (awaiting "
            "approval), approved, merged, held, failed (the fix did not stop the error)",
            labels=[*labels, "stage"],
        )
        to_pr = GaugeMetricFamily(
            "remedy_time_to_pr_median_seconds",
            "Median time from an incident's first report to its pull request",
            labels=labels,
        )
        to_held = GaugeMetricFamily(
            "remedy_time_to_held_median_seconds",
            "Median time from an incident's first report to its fix holding in production",
            labels=labels,
        )
        for row in self.stats.rows:
            key = [row.service, row.error_type]
            incidents.add_metric(key, row.incidents)
            for stage in STAGES:
                fixes.add_metric([*key, stage], row.stage(stage))
            if row.median_s_to_pr is not None:
                to_pr.add_metric(key, row.median_s_to_pr)
            if row.median_s_to_held is not None:
                to_held.add_metric(key, row.median_s_to_held)
        yield from (incidents, fixes, to_pr, to_held)


INCIDENT_STATS = IncidentStatsCollector()
_stats_registered = False


def publish_incident_stats(stats: IncidentStats | None, *, listed_at: float) -> None:
    """Show these figures from now on (None: the listing failed; the last figures stay)."""
    global _stats_registered
    with _lock:
        if not _stats_registered:
            REGISTRY.register(INCIDENT_STATS)
            _stats_registered = True
        INCIDENT_STATS.up = stats is not None
        if stats is not None:
            INCIDENT_STATS.stats = stats
            INCIDENT_STATS.listed_at = listed_at


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
