"""Activities show they are alive: a dead worker is noticed within the heartbeat timeout.

A real dev server, a real worker process killed with SIGKILL mid-activity, and a second
worker that takes the retry: the activity never heartbeats in its own code, so only the
LivenessInterceptor keeps it alive (and its absence is what lets the retry happen fast).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.progress import LivenessInterceptor

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_TIMEOUT = timedelta(seconds=4)


@activity.defn(name="quiet_work")
def quiet_work(seconds: float) -> str:
    """Work that never heartbeats by itself (a long git blame, a slow API call)."""
    time.sleep(seconds)
    return f"{activity.info().attempt}"


@workflow.defn(name="QuietWorkflow", sandboxed=False)
class QuietWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> str:
        result: str = await workflow.execute_activity(
            quiet_work,
            seconds,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
        )
        return result


def _worker(client: Client, queue: str, executor: ThreadPoolExecutor) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[QuietWorkflow],
        activities=[quiet_work],
        activity_executor=executor,
        interceptors=[LivenessInterceptor(every_s=0.5)],
    )


async def test_an_activity_longer_than_its_heartbeat_timeout_lives_while_its_worker_does(
    client: Client,
) -> None:
    queue = f"alive-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with _worker(client, queue, executor):
            attempt = await asyncio.wait_for(
                client.execute_workflow(
                    QuietWorkflow.run, 3 * HEARTBEAT_TIMEOUT.total_seconds(), id=queue,
                    task_queue=queue,
                ),
                60,
            )  # fmt: skip
    assert attempt == "1", "the first attempt must not time out while its worker lives"


async def test_a_killed_worker_is_replaced_within_the_heartbeat_timeout(client: Client) -> None:
    queue = f"killed-{uuid.uuid4().hex[:8]}"
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.test_liveness", client.service_client.config.target_host,
        client.namespace, queue,
        cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        handle = await client.start_workflow(
            QuietWorkflow.run, 2.0, id=queue, task_queue=queue,
            execution_timeout=timedelta(seconds=90),
        )  # fmt: skip

        async def started() -> bool:
            description = await handle.describe()
            return any(a.attempt == 1 for a in description.raw_description.pending_activities)

        deadline = time.monotonic() + 60
        while not await started():
            assert time.monotonic() < deadline, "the doomed worker never started the activity"
            await asyncio.sleep(0.1)
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
    killed_at = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with _worker(client, queue, executor):
            attempt = await asyncio.wait_for(handle.result(), 60)
    moved_on = time.monotonic() - killed_at
    assert attempt == "2"
    # The heartbeat timeout, the retry interval and the 2 s of work, with room for a busy
    # machine; without heartbeats this waits out the five-minute start-to-close.
    assert moved_on < HEARTBEAT_TIMEOUT.total_seconds() + 20, f"took {moved_on:.1f}s"


async def _serve(address: str, namespace: str, queue: str) -> None:
    from remedy.temporal import data_converter

    client = await Client.connect(address, namespace=namespace, data_converter=data_converter())
    with ThreadPoolExecutor(max_workers=2) as executor:
        await _worker(client, queue, executor).run()


if __name__ == "__main__":
    asyncio.run(_serve(*sys.argv[1:4]))
