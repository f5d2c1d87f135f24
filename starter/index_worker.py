"""`remedy search` and `remedy index` through the running index worker.

The command starts a standalone activity (remedy.names: ACTIVITY_SEARCH_INDEX,
ACTIVITY_INDEX_ON_REQUEST) on the index task queue. The worker there keeps the embedding
model loaded, so a question costs one query embedding instead of a model load, and it works
across machines with no port of its own. The result is the activity's result (small: at
most `--limit` hits); `remedy index` reads the activity's heartbeat details with
`describe()` while it runs, which is what its bar shows.

`ask` returns None, after one line on stderr saying why, when no stack answers: Temporal
unreachable, no worker polling the queue, a server without standalone activities, or no
worker picking the task up in time. The command then does the work in its own process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import ActivityFailureError, Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, TimeoutError, TimeoutType
from temporalio.service import RPCError

from remedy.config import RemedyConfig
from remedy.temporal import TemporalUnreachable, reach

T = TypeVar("T")

CONNECT_TIMEOUT_S = 3.0
# A live worker polls again within about a minute of its last poll.
POLLER_FRESH_S = 90.0
# A worker that polls picks a task up at once; this long means it is gone or saturated.
PICKUP_TIMEOUT_S = 10.0
HEARTBEAT_TIMEOUT_S = 30.0
WATCH_EVERY_S = 0.5


class WorkerRefused(Exception):
    """The index worker answered with a failure: its message, for the person."""


def fallback(reason: str) -> None:
    typer.echo(f"{reason}; loading the embedding model in this process", err=True)


def index_queue(config: RemedyConfig) -> str:
    return config.temporal.index_task_queue or config.temporal.task_queue


def ask(
    config: RemedyConfig,
    activity: str,
    arg: Any,
    result_type: type[T],
    *,
    run_timeout_s: float,
    attempts: int = 1,
    on_details: Callable[[Any], None] | None = None,
) -> T | None:
    """The activity's result from the index worker; None (said on stderr) when none runs."""
    return asyncio.run(
        _ask(config, activity, arg, result_type, run_timeout_s, attempts, on_details)
    )


async def _ask(
    config: RemedyConfig,
    activity: str,
    arg: Any,
    result_type: type[T],
    run_timeout_s: float,
    attempts: int,
    on_details: Callable[[Any], None] | None,
) -> T | None:
    try:
        client = await reach(Client.connect, config, timeout_s=CONNECT_TIMEOUT_S)
    except TemporalUnreachable as exc:
        fallback(f"no stack running (Temporal at {exc.address}: {exc.reason})")
        return None
    queue = index_queue(config)
    try:
        if not await worker_polls(client, queue):
            fallback(f"no index worker polls task queue {queue!r}")
            return None
        handle = await client.start_activity(
            activity,
            arg,
            id=f"remedy-cli-{activity}-{uuid.uuid4().hex[:16]}",
            task_queue=queue,
            result_type=result_type,
            schedule_to_start_timeout=timedelta(seconds=PICKUP_TIMEOUT_S),
            start_to_close_timeout=timedelta(seconds=run_timeout_s),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT_S),
            retry_policy=RetryPolicy(maximum_attempts=attempts),
        )
    except RPCError as exc:
        fallback(f"Temporal at {config.temporal.address} cannot run it ({exc.message})")
        return None
    result = asyncio.ensure_future(handle.result())
    try:
        while not result.done():
            await asyncio.wait({result}, timeout=WATCH_EVERY_S)
            if on_details is not None and not result.done():
                described = await handle.describe(include_heartbeat_details=True)
                details = await described.heartbeat_details()
                if details:
                    on_details(details[0])
        return result.result()
    except asyncio.CancelledError:
        # Ctrl-C: the worker stops too, at its next heartbeat.
        await asyncio.shield(handle.cancel(reason="the CLI was interrupted"))
        raise
    except ActivityFailureError as exc:
        cause = exc.cause
        if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
            fallback(f"no index worker took the request within {PICKUP_TIMEOUT_S:.0f}s")
            return None
        message = getattr(cause, "message", None) or str(cause)
        if isinstance(cause, ApplicationError) and cause.type == "NotFoundError":
            fallback(f"the worker on {queue!r} has no {activity} activity (an older Remedy)")
            return None
        if isinstance(cause, ApplicationError):
            raise WorkerRefused(message) from None
        raise WorkerRefused(f"the index worker failed: {message}") from None


async def worker_polls(client: Client, queue: str) -> bool:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    now = datetime.now(UTC)
    return any(
        (now - poller.last_access_time.ToDatetime(UTC)).total_seconds() < POLLER_FRESH_S
        for poller in described.pollers
    )
