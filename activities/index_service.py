"""The index worker answering people: `remedy search` and `remedy index` as activities.

The CLI starts these as standalone activities on the index task queue, so a question is
answered by the process that already holds the embedding model instead of loading it per
command (remedy.index.service has the work itself, shared with the CLI's own fallback).
Progress goes out as heartbeat details, which the CLI reads with `describe()` to draw its
bar; the embedded store's lock then names this worker as its holder.
"""

from __future__ import annotations

import contextlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedy import names
from remedy.config import RemedyConfig
from remedy.git.runner import GitError
from remedy.index.core import CodeIndex, code_index
from remedy.index.service import IndexJob, IndexRefused, SearchAnswer, SearchRequest, run_index
from remedy.index.service import search as search_index
from remedy.index.store import EDGE_LOCK_TIMEOUT_S, StoreError, StoreKeeper
from remedy.models import IndexResult


def _report_wait(holder: str) -> None:
    activity.heartbeat({"stage": "waiting for the code index", "holder": holder})


def _refused(exc: Exception) -> ApplicationError:
    # Someone waits at a terminal: the message, once, instead of retries.
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class IndexService:
    """search_index and index_on_request over the worker's config and loaded model."""

    def __init__(self, config: RemedyConfig, keeper: StoreKeeper | None = None) -> None:
        self.config = config
        self._keeper = keeper or StoreKeeper(config)

    def _index(self, holder: str) -> contextlib.AbstractContextManager[CodeIndex]:
        return code_index(
            self.config,
            lambda: self._keeper.lend(
                lock_timeout_s=EDGE_LOCK_TIMEOUT_S, holder=holder, on_wait=_report_wait
            ),
        )

    @activity.defn(name=names.ACTIVITY_SEARCH_INDEX)
    def search_index(self, request: SearchRequest) -> SearchAnswer:
        """`remedy search`: at most `limit` hits from the service's index."""
        holder = f"the index worker, answering `remedy search {request.service}`"
        try:
            with self._index(holder) as code:
                return search_index(code, self.config, request)
        except (IndexRefused, StoreError) as exc:
            raise _refused(exc) from None

    @activity.defn(name=names.ACTIVITY_INDEX_ON_REQUEST)
    def index_on_request(self, job: IndexJob) -> IndexResult:
        """`remedy index`: fetch, then index, heartbeating each stage and batch."""
        details = activity.info().heartbeat_details
        embedded_before = 0
        if details and isinstance(details[0], dict):
            embedded_before = int(details[0].get("embedded", 0))

        def beat(stage: str, done: int, total: int) -> None:
            activity.heartbeat({"stage": stage, "embedded": done, "total": total})

        what = job.service or job.repo
        try:
            return run_index(
                lambda: self._index(f"the index worker, running `remedy index {what}`"),
                self.config,
                job,
                beat,
                embedded_before,
            )
        except (IndexRefused, GitError, StoreError) as exc:
            raise _refused(exc) from None
