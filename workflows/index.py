"""IndexWorkflow: fill in a repository's index after an incident indexed only its focus files.

An incident on a never-indexed repository indexes the files around its frames and goes on
(remedy.index.focus); it then starts this workflow as an abandoned child, one per commit
(`index-<service>-<commit>`), so the full cold index runs on the index task queue for as
long as it takes, survives the incident's end and is never started twice at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.index import IndexActivities
    from remedy.models import FullIndexRequest, IndexResult

# A cold index of a big repository on a CPU takes tens of minutes; the activity heartbeats
# (activities.progress.LivenessInterceptor), so a dead worker is noticed in seconds.
_FULL_INDEX_TIMEOUT = timedelta(hours=6)
_ALIVE = timedelta(seconds=10)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2))


@workflow.defn(name="IndexWorkflow")
class IndexWorkflow:
    @workflow.run
    async def run(self, request: FullIndexRequest) -> IndexResult:
        full = request.index.model_copy(update={"complete": True})
        return await workflow.execute_activity_method(
            IndexActivities.index_repo,
            full,
            start_to_close_timeout=_FULL_INDEX_TIMEOUT,
            heartbeat_timeout=_ALIVE,
            retry_policy=_RETRY,
            task_queue=request.task_queue,
            summary=f"full index of {full.worktree.service} at {full.worktree.commit[:12]}",
        )
