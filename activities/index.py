"""The code index activities: index_repo, find_related, record_incident and search_code.

An adapter over remedy.index: it reads the worktree and the artifacts, heartbeats with the
index run's progress and classifies failures. Sync activities (the worker runs them on its
thread pool). Each call borrows the vector store from the worker's `StoreKeeper`, which keeps
it open while incidents keep coming and closes it `[qdrant] keep_open_s` after the last one,
so a `remedy index` from the CLI can take its turn; the embedding model stays loaded for the
life of the process (remedy.index.embed.get_embedder).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.runner import GitError
from remedy.index.core import CodeIndex, code_index, repo_key
from remedy.index.files import list_repo_files
from remedy.index.focus import focus_paths
from remedy.index.related import (
    find_related,
    incident_memory,
    locate_frames,
    related_code,
    related_queries,
)
from remedy.index.store import (
    EDGE_LOCK_TIMEOUT_S,
    OnWait,
    StoreBusy,
    StoreError,
    StoreKeeper,
)
from remedy.models import (
    IndexRequest,
    IndexResult,
    RecordIncidentRequest,
    RecordIncidentResult,
    RelatedCode,
    RelatedRequest,
    RelatedResult,
    Worktree,
)

# A model's tool call must not queue behind an index run holding the embedded store: after
# this long it greps instead.
TOOL_LOCK_TIMEOUT_S = 2.0
# A live incident must not queue behind a long index run (`remedy index` of a big repository,
# another incident's first index): after this long it goes on without the index, and says
# who held it. Short runs (an incremental index, a search) take well under this.
INCIDENT_LOCK_TIMEOUT_S = 5.0


def _failure(exc: GitError | StoreError, what: str) -> ApplicationError:
    """Permanent failures (a commit the repository lacks, a store that cannot fit the model's
    vectors) stop the retries; a store another process holds ends the enrichment at once
    (retrying would only queue the incident behind it); the rest (a flaky server) retry."""
    if isinstance(exc, StoreBusy):
        return ApplicationError(
            f"{what}: the code index is in use by {exc.holder}; the incident goes on without it",
            type="IndexBusy",
            non_retryable=True,
        )
    kind = "IndexGitError" if isinstance(exc, GitError) else "IndexStoreError"
    return ApplicationError(f"{what}: {exc}", type=kind, non_retryable=exc.permanent)


def _focus(index: CodeIndex, repo: str, request: IndexRequest) -> list[str] | None:
    """The incident's focus files when its repository has no completely indexed commit yet
    (a full cold index would hold the incident for minutes); None: index the whole tree."""
    indexed = index.indexed_commits(repo)
    if set(indexed) - set(index.partial_commits(repo)) or not request.frames:
        return None
    worktree = request.worktree
    checkout = Path(worktree.path)
    located = locate_frames(checkout, worktree.commit, request.frames)
    files, _ = list_repo_files(checkout, worktree.commit, index.max_file_bytes)

    def read(path: str) -> str:
        try:
            return (checkout / path).read_text(errors="replace")
        except OSError:
            return ""

    return focus_paths(located, {f.path: f.size for f in files}, read) or None


def _report_wait(holder: str) -> None:
    # The heartbeat details are what the Temporal UI shows on the pending activity.
    activity.heartbeat({"stage": "waiting for the code index", "holder": holder})


class IndexActivities:
    """index_repo, find_related and record_incident over one vector store and model."""

    def __init__(
        self,
        config: RemedyConfig,
        store: ArtifactStore,
        keeper: StoreKeeper | None = None,
        incident_lock_timeout_s: float = INCIDENT_LOCK_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.store = store
        self._keeper = keeper or StoreKeeper(config)
        self._incident_lock_timeout_s = incident_lock_timeout_s

    def _index(
        self,
        holder: str,
        lock_timeout_s: float | None = None,
        on_wait: OnWait | None = _report_wait,
    ) -> contextlib.AbstractContextManager[CodeIndex]:
        return code_index(
            self.config,
            lambda: self._keeper.lend(
                lock_timeout_s=lock_timeout_s or self._incident_lock_timeout_s,
                holder=holder,
                on_wait=on_wait,
            ),
        )

    # -- the model's search_code tool ----------------------------------------

    async def search_code(self, worktree: Worktree, query: str, limit: int) -> list[RelatedCode]:
        """Answer the diagnosis tool from the index at the incident's commit; [] (the tool then
        greps) when that commit is not indexed or the store is busy or down."""
        return await asyncio.to_thread(self._search_code, worktree, query, limit)

    def _search_code(self, worktree: Worktree, query: str, limit: int) -> list[RelatedCode]:
        repo = repo_key(self.config, worktree.service, worktree.path)
        try:
            holder = "the diagnosis's search_code"
            with self._index(holder, TOOL_LOCK_TIMEOUT_S, on_wait=None) as index:
                if worktree.commit not in index.indexed_commits(repo):
                    return []
                hits = index.search(repo, worktree.commit, [query], limit)[:limit]
        except StoreError:
            return []
        return [related_code(h) for h in hits]

    # -- index_repo -----------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_INDEX_REPO)
    def index_repo(self, request: IndexRequest) -> IndexResult:
        """Index the worktree's commit, embedding only chunks the store has never seen."""
        worktree = request.worktree
        repo = repo_key(self.config, worktree.service, worktree.path)
        embedded_before = 0
        details = activity.info().heartbeat_details
        if details and isinstance(details[0], dict) and details[0].get("commit") == worktree.commit:
            embedded_before = int(details[0].get("embedded", 0))

        def beat(stage: str, done: int, total: int) -> None:
            # Structured details, not a note: a retry resumes from "embedded".
            activity.heartbeat({"commit": worktree.commit, "stage": stage, "embedded": done,
                                "total": total})  # fmt: skip

        holder = f"the index worker, indexing {worktree.service} at {worktree.commit[:12]}"
        checkout = Path(worktree.path)
        # A full index off the incident's path may wait out other runs, and try again.
        wait = EDGE_LOCK_TIMEOUT_S if request.complete else None
        try:
            with self._index(holder, wait) as index:
                return index.index(
                    repo,
                    checkout,
                    worktree.commit,
                    progress=beat,
                    embedded_before=embedded_before,
                    only_paths=None if request.complete else _focus(index, repo, request),
                )
        except StoreBusy as exc:
            if not request.complete:
                raise _failure(exc, f"indexing {worktree.service} at {worktree.commit}") from None
            raise ApplicationError(
                f"the code index is in use by {exc.holder}", type="IndexBusy"
            ) from None
        except (GitError, StoreError) as exc:
            raise _failure(exc, f"indexing {worktree.service} at {worktree.commit}") from None

    # -- find_related ---------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_FIND_RELATED)
    def find_related(self, request: RelatedRequest) -> RelatedResult:
        """Code related to the incident beyond its own frames, and similar past incidents."""
        worktree = request.worktree
        repo = repo_key(self.config, worktree.service, worktree.path)
        checkout = Path(worktree.path)
        try:
            located = locate_frames(checkout, worktree.commit, request.frames)
            queries = related_queries(request, located, checkout)
            with self._index(f"the index worker, searching for {request.incident_id}") as index:
                found = find_related(index, repo, request, located, queries)
                complete = worktree.commit not in index.partial_commits(repo)
        except (GitError, StoreError) as exc:
            raise _failure(exc, f"searching the index of {worktree.service}") from None
        ref = self.store.put_json(
            f"{request.incident_id}/related.json",
            found.as_json(request.incident_id, repo, worktree.commit),
        )
        # Which index answered, and whether it held the whole tree or the focus files only.
        return found.result(ref).model_copy(
            update={"index_commit": worktree.commit, "index_complete": complete}
        )

    # -- record_incident ------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_RECORD_INCIDENT)
    def record_incident(self, request: RecordIncidentRequest) -> RecordIncidentResult:
        """Remember a closed incident (its fix or why there is none) for later incidents."""
        patch = ""
        if request.patch is not None:
            try:
                patch = self.store.get_text(request.patch)
            except FileNotFoundError:
                patch = ""
        payload, text = incident_memory(request, patch)
        try:
            # A closed incident has no one waiting on it: it may wait out a long index run.
            holder = f"the index worker, recording {request.incident_id}"
            with self._index(holder, EDGE_LOCK_TIMEOUT_S) as index:
                pid = index.record_incident(request.incident_id, payload, text)
        except StoreError as exc:
            raise _failure(exc, f"recording incident {request.incident_id}") from None
        return RecordIncidentResult(incident_id=request.incident_id, point_id=pid)
