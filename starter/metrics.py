"""`GET /metrics` on the intake: the process's Prometheus registry (remedy.metrics)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from remedy import metrics


def mount_metrics(app: FastAPI) -> None:
    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
