"""Heartbeats: long work reports progress, and every activity shows it is alive.

`heartbeat(note)` is what activity code calls while it waits on something slow.
`LivenessInterceptor` (registered on every worker) heartbeats for each running activity
every few seconds whatever its code does. A worker that dies stops those beats, so Temporal
retries the activity on a live worker within the heartbeat timeout the workflow sets
(seconds) instead of waiting out its start-to-close timeout (minutes). A beat repeats the
activity's own last heartbeat details, so a resumable activity keeps its progress.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

# Well inside the workflow's heartbeat timeouts (workflows/incident.py), so a busy machine
# that delays a beat by a few seconds does not look like a dead worker.
LIVENESS_INTERVAL_S = 3.0


def heartbeat(note: str) -> None:
    """Heartbeat `note` when running inside an activity; a no-op anywhere else (CLI, tests)."""
    if activity.in_activity():
        activity.heartbeat(note)


class LivenessInterceptor(Interceptor):
    def __init__(self, every_s: float = LIVENESS_INTERVAL_S) -> None:
        self._every_s = every_s

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BeatWhileRunning(next, self._every_s)


class _RememberLastDetails(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.last_details: tuple[Any, ...] = ()

    def heartbeat(self, *details: Any) -> None:
        self.last_details = details
        super().heartbeat(*details)


class _BeatWhileRunning(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, every_s: float) -> None:
        super().__init__(next)
        self._every_s = every_s
        self._outbound: _RememberLastDetails | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self._outbound = _RememberLastDetails(outbound)
        super().init(self._outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        beats = asyncio.create_task(self._beat())
        try:
            return await super().execute_activity(input)
        finally:
            beats.cancel()

    async def _beat(self) -> None:
        # Runs on the worker's event loop, where the SDK takes heartbeats for sync and
        # async activities alike.
        while True:
            await asyncio.sleep(self._every_s)
            if self._outbound is not None:
                self._outbound.heartbeat(*self._outbound.last_details)
