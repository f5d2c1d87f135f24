"""`GET /metrics` on the intake: the process's Prometheus registry (remedy.metrics), with
`remedy stats` as gauges, refreshed from Temporal visibility before a scrape at most once
per SCRAPE_INTERVAL_S."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from temporalio.client import Client
from temporalio.service import RPCError

from remedy import metrics
from remedy.stats import IncidentStats
from remedy.temporal import TemporalUnreachable, unreachable_reason
from starter.stats import stats

log = logging.getLogger(__name__)

# Prometheus scrapes every 15-60 s and gives up after 10 s by default: a scrape waits this
# long for a listing, then shows the last figures with remedy_stats_up 0.
SCRAPE_INTERVAL_S = 30.0
SCRAPE_LIST_TIMEOUT_S = 5.0


class StatsRefresher:
    """Lists the incidents for the gauges at most once per `interval_s`, however many
    scrapes come (concurrent ones wait for the same listing). Temporal down, not reached yet
    or slow only sets remedy_stats_up to 0 until the next interval; the scrape still answers."""

    def __init__(
        self, interval_s: float = SCRAPE_INTERVAL_S, timeout_s: float = SCRAPE_LIST_TIMEOUT_S
    ) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.listings = 0
        self._last: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, client: Client | None) -> None:
        async with self._lock:
            if client is None:  # the intake has not reached Temporal yet: nothing to list
                metrics.publish_incident_stats(None, listed_at=time.time())
                return
            now = time.monotonic()
            if self._last is not None and now - self._last < self.interval_s:
                return
            self._last = now
            self.listings += 1
            figures: IncidentStats | None = None
            try:
                figures = await stats(client, timeout_s=self.timeout_s)
            except (TemporalUnreachable, RPCError, RuntimeError) as exc:
                reason = str(exc) if isinstance(exc, TemporalUnreachable) else None
                log.warning("incident stats for /metrics: %s", reason or unreachable_reason(exc))
            metrics.publish_incident_stats(figures, listed_at=time.time())


def mount_metrics(app: FastAPI) -> None:
    # Per app: app.state.client is the Temporal client once the intake has reached it.
    app.state.incident_stats = StatsRefresher()

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        refresher: StatsRefresher = request.app.state.incident_stats
        await refresher.refresh(request.app.state.client)
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
