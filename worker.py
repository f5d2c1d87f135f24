"""The Remedy worker: IncidentWorkflow and every activity, in one process.

`remedy worker` runs it; SIGTERM/SIGINT stop polling, let running activities finish for
`[worker] graceful_shutdown_s`, then exit. A process that serves the code index loads the
embedding model before its index worker polls, so neither an incident nor `remedy search`
waits for the model; the CLI's `remedy search` and `remedy index` are activities there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.metrics import MetricsInterceptor
from activities.progress import LivenessInterceptor
from remedy import metrics, names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.temporal import address_of, reach_retrying
from workflows.incident import IncidentWorkflow
from workflows.index import IndexWorkflow

log = logging.getLogger("remedy.worker")

# The longest a heartbeat waits to be sent: `remedy index` draws its bar from them.
HEARTBEAT_EVERY_S = 1.0


def build_activities(config: RemedyConfig, store: ArtifactStore) -> list[Callable[..., Any]]:
    """One instance per activity class, built once per worker (clients and models load once)."""
    from activities.forge import LocalForge
    from activities.git import GitActivities
    from activities.github import GitHubActivities
    from activities.index import IndexActivities
    from activities.index_service import IndexService
    from activities.llm import DiagnosisActivities
    from activities.sandbox import SandboxActivities
    from activities.slack import SlackActivities
    from remedy.index.store import StoreKeeper

    # One embedded store for the index activities and the people's searches, kept open
    # between incidents.
    keeper = StoreKeeper(config, idle_s=config.qdrant.keep_open_s)
    index = IndexActivities(config, store, keeper)
    git = GitActivities(config, store)
    forge = LocalForge(config, store)
    github = GitHubActivities(config, store)
    slack = SlackActivities(config, store)
    diagnosis = DiagnosisActivities(config, store, search_code=index.search_code)
    sandbox = SandboxActivities(config, store)
    people = IndexService(config, keeper)
    return [
        index.index_repo,
        index.find_related,
        index.record_incident,
        people.search_index,
        people.index_on_request,
        diagnosis.diagnose,
        diagnosis.write_regression_test,
        sandbox.run_suite_before,
        sandbox.verify_patch,
        git.sync_repo,
        git.investigate,
        git.prepare_patch,
        git.release_contains,
        forge.propose_change,
        forge.watch_branch,
        forge.note_on_change,
        github.open_pull_request,
        github.open_issue,
        github.watch_pull_request,
        github.comment_on_pull_request,
        slack.notify,
    ]


def build_worker(
    client: Client,
    config: RemedyConfig,
    *,
    activities: Sequence[Callable[..., Any]] | None = None,
    task_queue: str | None = None,
    with_workflows: bool = True,
) -> Worker:
    """One Temporal worker: IncidentWorkflow (unless told otherwise) and the given activities
    (default: all of them) on the given task queue (default: [temporal] task_queue)."""
    if activities is None:
        activities = build_activities(config, ArtifactStore(config.artifacts_dir))
    return Worker(
        client,
        task_queue=task_queue or config.temporal.task_queue,
        workflows=[IncidentWorkflow, IndexWorkflow] if with_workflows else [],
        activities=list(activities),
        activity_executor=ThreadPoolExecutor(max_workers=config.worker.max_concurrent_activities),
        max_concurrent_activities=config.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=config.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=config.worker.graceful_shutdown_s),
        max_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_EVERY_S),
        interceptors=[LivenessInterceptor(), MetricsInterceptor()],
    )


ROLES = ("all", "main", "index")
_INDEX_ACTIVITIES = frozenset(
    {
        names.ACTIVITY_INDEX_REPO,
        names.ACTIVITY_FIND_RELATED,
        names.ACTIVITY_RECORD_INCIDENT,
        names.ACTIVITY_SEARCH_INDEX,
        names.ACTIVITY_INDEX_ON_REQUEST,
    }
)


def _is_index_activity(function: Callable[..., Any]) -> bool:
    definition = getattr(function, "__temporal_activity_definition", None)
    return definition is not None and definition.name in _INDEX_ACTIVITIES


def serves_index(config: RemedyConfig, role: str) -> bool:
    """Whether a process of this role runs the index activities (and needs the model)."""
    return role in ("all", "index") or not config.temporal.index_task_queue


def load_model(config: RemedyConfig) -> None:
    """Load the embedding model (and run it once) in this process, logging how long it took."""
    from remedy.index.embed import warm_embedder

    started = time.perf_counter()
    embedder = warm_embedder(config.embeddings)
    log.info("embedding model %s loaded in %.1fs", embedder.identity, time.perf_counter() - started)


def build_workers(client: Client, config: RemedyConfig, role: str = "all") -> list[Worker]:
    """The workers of one process. With [temporal] index_task_queue set, the code index has a
    worker of its own, so a long embedding run never starves workflow tasks and queries;
    `role` then says which of the two this process runs ("all": both)."""
    activities = build_activities(config, ArtifactStore(config.artifacts_dir))
    index_queue = config.temporal.index_task_queue
    if not index_queue:
        return [build_worker(client, config, activities=activities)]
    workers = []
    if role in ("all", "main"):
        main_activities = [a for a in activities if not _is_index_activity(a)]
        workers.append(build_worker(client, config, activities=main_activities))
    if role in ("all", "index"):
        index_activities = [a for a in activities if _is_index_activity(a)]
        workers.append(
            build_worker(
                client,
                config,
                activities=index_activities,
                task_queue=index_queue,
                with_workflows=False,
            )
        )
    return workers


async def run_workers(config: RemedyConfig, stop: asyncio.Event, role: str = "all") -> None:
    """Poll until `stop` is set. Temporal may be down or not up yet: keep trying to connect
    (a log line per try) rather than exit, and leave at once if stopped meanwhile."""
    metrics.serve(config.metrics)  # [metrics] port: Remedy's counters of this process
    # The model loads while Temporal is reached; an index worker of its own polls once it has.
    loading: asyncio.Future[None] | None = None
    if serves_index(config, role):
        loading = asyncio.ensure_future(asyncio.to_thread(load_model, config))
        loading.add_done_callback(_log_load_failure)
    connecting = asyncio.ensure_future(reach_retrying(Client.connect, config))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        log.info("worker stopped before Temporal at %s answered", address_of(config))
        return
    stopping.cancel()
    client = connecting.result()
    async with contextlib.AsyncExitStack() as running:
        for worker in build_workers(client, config, role):
            if loading is not None and worker.task_queue == config.temporal.index_task_queue:
                await _until_loaded(loading, stop)
            await running.enter_async_context(worker)
            log.info(
                "worker polling task queue %r on %s", worker.task_queue, config.temporal.address
            )
        await stop.wait()
        log.info("worker stopping: finishing running activities")
    log.info("worker stopped")


async def _until_loaded(loading: asyncio.Future[None], stop: asyncio.Event) -> None:
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()


def _log_load_failure(loading: asyncio.Future[None]) -> None:
    # The index activities then load it on first use and fail there, with the reason.
    if not loading.cancelled() and loading.exception() is not None:
        log.error("embedding model failed to load: %s", loading.exception())


def main(config: RemedyConfig, role: str = "all") -> None:
    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_workers(config, stop, role)

    asyncio.run(_run())
