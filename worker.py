"""The Remedy worker: IncidentWorkflow and every activity, in one process.

`remedy worker` runs it; SIGTERM/SIGINT stop polling, let running activities finish for
`[worker] graceful_shutdown_s`, then exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from starter.temporal_client import connect
from workflows.incident import IncidentWorkflow

log = logging.getLogger("remedy.worker")


def build_activities(config: RemedyConfig, store: ArtifactStore) -> list[Callable[..., Any]]:
    """One instance per activity class, built once per worker (clients and models load once)."""
    from activities.forge import LocalForge
    from activities.git import GitActivities
    from activities.github import GitHubActivities
    from activities.index import IndexActivities
    from activities.llm import DiagnosisActivities
    from activities.sandbox import SandboxActivities
    from activities.slack import SlackActivities

    git = GitActivities(config, store)
    forge = LocalForge(config, store)
    github = GitHubActivities(config, store)
    slack = SlackActivities(config, store)
    diagnosis = DiagnosisActivities(config, store)
    sandbox = SandboxActivities(config, store)
    index = IndexActivities(config, store)
    return [
        index.index_repo,
        index.find_related,
        index.record_incident,
        diagnosis.diagnose,
        diagnosis.write_regression_test,
        sandbox.verify_patch,
        git.sync_repo,
        git.investigate,
        git.prepare_patch,
        forge.propose_change,
        github.open_pull_request,
        github.open_issue,
        slack.notify,
    ]


def build_worker(
    client: Client,
    config: RemedyConfig,
    *,
    activities: Sequence[Callable[..., Any]] | None = None,
    executor: ThreadPoolExecutor | None = None,
) -> Worker:
    store = ArtifactStore(config.artifacts_dir)
    return Worker(
        client,
        task_queue=config.temporal.task_queue,
        workflows=[IncidentWorkflow],
        activities=list(activities) if activities is not None else build_activities(config, store),
        activity_executor=executor
        or ThreadPoolExecutor(max_workers=config.worker.max_concurrent_activities),
        max_concurrent_activities=config.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=config.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=config.worker.graceful_shutdown_s),
    )


async def run_worker(config: RemedyConfig, stop: asyncio.Event) -> None:
    client = await connect(config)
    worker = build_worker(client, config)
    log.info(
        "worker polling task queue %r on %s", config.temporal.task_queue, config.temporal.address
    )
    async with worker:
        await stop.wait()
        log.info("worker stopping: finishing running activities")
    log.info("worker stopped")


def main(config: RemedyConfig) -> None:
    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(config, stop)

    asyncio.run(_run())
