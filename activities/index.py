"""The code index activities: index_repo, find_related and record_incident.

Sync activities (the worker runs them on its thread pool). Each call opens the vector store,
does its work and closes it, so the embedded store is never held between incidents and a
`remedy index` from the CLI can take its turn; the embedding model stays loaded for the
life of the process (activities.index_embed.get_embedder).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.index_core import MAX_PATCH_CHARS, CodeHit, CodeIndex
from activities.index_embed import get_embedder
from activities.index_store import EdgeStore, ServerStore, StoreError, VectorStore
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, secret
from remedy.evidence import is_test_path
from remedy.git.history import RepoFiles
from remedy.git.runner import GitError, redact_location, run_git
from remedy.models import (
    Frame,
    IndexRequest,
    IndexResult,
    RecordIncidentRequest,
    RecordIncidentResult,
    RelatedCode,
    RelatedRequest,
    RelatedResult,
    SimilarIncident,
    Worktree,
)

MAX_FRAME_QUERIES = 5
FAILING_LINES_RADIUS = 2


def open_vector_store(config: RemedyConfig) -> VectorStore:
    """The configured store: a Qdrant server when `qdrant.url` is set, else embedded."""
    if config.qdrant.url:
        from qdrant_client import QdrantClient

        client = QdrantClient(
            url=config.qdrant.url,
            api_key=secret(config.qdrant.api_key_env),
            timeout=int(config.qdrant.timeout_s),
        )
        return ServerStore(client, config.qdrant.collection_prefix)
    return EdgeStore(config.home_dir / config.qdrant.path)


def repo_key(config: RemedyConfig, service: str | None, checkout: str) -> str:
    """How the index names a repository: the service's configured location (credentials
    redacted), so every worktree and mirror of it shares one index; else the checkout."""
    if service and service in config.services:
        return redact_location(config.repo_location(service))
    return str(Path(checkout).resolve())


@contextlib.contextmanager
def code_index(
    config: RemedyConfig, factory: Callable[[], VectorStore] | None = None
) -> Iterator[CodeIndex]:
    store = (factory or (lambda: open_vector_store(config)))()
    try:
        yield CodeIndex(
            store,
            get_embedder(config.embeddings),
            keep_commits=config.qdrant.keep_commits,
            max_file_bytes=config.qdrant.max_file_bytes,
        )
    finally:
        store.close()


def _failure(exc: GitError | StoreError, what: str) -> ApplicationError:
    """Permanent failures (a commit the repository lacks, a store that cannot fit the model's
    vectors) stop the retries; the rest (a busy store, a flaky server) are retried."""
    kind = "IndexGitError" if isinstance(exc, GitError) else "IndexStoreError"
    return ApplicationError(f"{what}: {exc}", type=kind, non_retryable=exc.permanent)


class IndexActivities:
    """index_repo, find_related and record_incident over one vector store and model."""

    def __init__(
        self,
        config: RemedyConfig,
        store: ArtifactStore,
        vector_store: Callable[[], VectorStore] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._vector_store = vector_store

    def _index(self) -> contextlib.AbstractContextManager[CodeIndex]:
        return code_index(self.config, self._vector_store)

    # -- the model's search_code tool ----------------------------------------

    async def search_code(self, worktree: Worktree, query: str, limit: int) -> list[RelatedCode]:
        """Answer the diagnosis tool from the index at the incident's commit; [] (the tool then
        greps) when that commit is not indexed or the store is busy or down."""
        return await asyncio.to_thread(self._search_code, worktree, query, limit)

    def _search_code(self, worktree: Worktree, query: str, limit: int) -> list[RelatedCode]:
        repo = repo_key(self.config, worktree.service, worktree.path)
        try:
            with code_index(self.config, self._tool_store) as index:
                if worktree.commit not in index.indexed_commits(repo):
                    return []
                hits = index.search(repo, worktree.commit, [query], limit)[:limit]
        except StoreError:
            return []
        return [_related_code(h) for h in hits]

    def _tool_store(self) -> VectorStore:
        # A model's tool call must not queue behind an index run holding the embedded store:
        # after two seconds it greps instead.
        if self.config.qdrant.url:
            return open_vector_store(self.config)
        return EdgeStore(self.config.home_dir / self.config.qdrant.path, lock_timeout_s=2.0)

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
            activity.heartbeat({"commit": worktree.commit, "stage": stage, "embedded": done,
                                "total": total})  # fmt: skip

        try:
            with self._index() as index:
                return index.index(
                    repo,
                    Path(worktree.path),
                    worktree.commit,
                    progress=beat,
                    embedded_before=embedded_before,
                )
        except (GitError, StoreError) as exc:
            raise _failure(exc, f"indexing {worktree.service} at {worktree.commit}") from None

    # -- find_related ---------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_FIND_RELATED)
    def find_related(self, request: RelatedRequest) -> RelatedResult:
        """Code related to the incident beyond its own frames, and similar past incidents."""
        worktree = request.worktree
        repo = repo_key(self.config, worktree.service, worktree.path)
        try:
            located = self._locate_frames(worktree, request.frames)
            queries = _queries(request, located, Path(worktree.path))
            error_text = f"{request.error.type}: {request.error.message}"
            functions = " ".join(f.function for f in request.frames if f.function)
            with self._index() as index:
                hits = index.search(
                    repo, worktree.commit, [q for _, q in queries], 3 * request.limit + 8
                )
                similar = index.similar_incidents(
                    worktree.service, f"{error_text}\n{functions}", 5, request.incident_id
                )
        except (GitError, StoreError) as exc:
            raise _failure(exc, f"searching the index of {worktree.service}") from None

        frame_hits = [h for h in hits if _is_frame(h, located)]
        # When the failure surfaces in a test, the queries come from test code and retrieve
        # more tests; the code under test is what explains it, so it goes first (stable order
        # by score within each group).
        beyond_frames = [h for h in hits if not _is_frame(h, located)]
        related = sorted(beyond_frames, key=lambda h: is_test_path(h.path))[: request.limit]
        similar_incidents = [
            SimilarIncident(
                incident_id=str(h.payload.get("incident_id", "")),
                summary=str(h.payload.get("summary", "")),
                outcome=str(h.payload.get("outcome", "")),
                score=round(h.score, 4),
            )
            for h in similar
        ]
        ref = self.store.put_json(
            f"{request.incident_id}/related.json",
            {
                "incident_id": request.incident_id,
                "repo": repo,
                "commit": worktree.commit,
                "queries": [{"source": source, "text": text} for source, text in queries],
                "related": [dict(h.as_json(), queries=h.queries) for h in related],
                "frames": [dict(h.as_json(), frame=True) for h in frame_hits],
                "similar_incidents": [
                    dict(s.model_dump(), **_incident_details(h.payload))
                    for s, h in zip(similar_incidents, similar, strict=True)
                ],
            },
        )
        return RelatedResult(
            related_code=[_related_code(h) for h in related],
            similar_incidents=similar_incidents,
            frame_chunks=len(frame_hits),
            artifact=ref,
        )

    def _locate_frames(self, worktree: Worktree, frames: Sequence[Frame]) -> list[_Located]:
        """Frames found in the repository at the worktree's commit, innermost first."""
        listing = run_git(
            ["-C", worktree.path, "ls-tree", "-r", "-z", "--name-only", worktree.commit]
        ).stdout.decode("utf-8", errors="surrogateescape")
        files = RepoFiles([p for p in listing.split("\0") if p])
        located = []
        for frame in reversed(frames):
            path = files.locate(frame.file)
            if path is not None and frame.in_app is not False:
                located.append(_Located(frame, path))
        return located

    # -- record_incident ------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_RECORD_INCIDENT)
    def record_incident(self, request: RecordIncidentRequest) -> RecordIncidentResult:
        """Remember a closed incident (its fix or why there is none) for later incidents."""
        patch = ""
        if request.patch is not None:
            try:
                patch = self.store.get_text(request.patch)[:MAX_PATCH_CHARS]
            except FileNotFoundError:
                patch = ""
        functions = " ".join(f.function for f in request.frames if f.function)
        text = (
            f"{request.error.type}: {request.error.message}\n{functions}\n"
            f"{request.summary}\n{request.root_cause}"
        )
        payload: dict[str, Any] = {
            "kind": "incident",
            "incident_id": request.incident_id,
            "service": request.service,
            "fingerprint": request.fingerprint,
            "error_type": request.error.type,
            "error_message": request.error.message[:2000],
            "functions": functions,
            "summary": request.summary,
            "root_cause": request.root_cause,
            "outcome": request.outcome,
            "reason": request.reason,
            "patch": patch,
        }
        try:
            with self._index() as index:
                pid = index.record_incident(request.incident_id, payload, text)
        except StoreError as exc:
            raise _failure(exc, f"recording incident {request.incident_id}") from None
        return RecordIncidentResult(incident_id=request.incident_id, point_id=pid)


@dataclass(frozen=True)
class _Located:
    frame: Frame
    path: str


def _queries(
    request: RelatedRequest, located: Sequence[_Located], root: Path
) -> list[tuple[str, str]]:
    """(source, text) of every query: the error, each failing line, the frame functions."""
    error = request.error
    queries = [("error", f"{error.type}: {error.message}".strip())]
    for item in located[:MAX_FRAME_QUERIES]:
        frame = item.frame
        lines = _failing_lines(root / item.path, frame.line) or (frame.code or "")
        if lines.strip():
            queries.append((f"frame {item.path}:{frame.line}", f"{frame.function or ''}\n{lines}"))
    functions = [
        f.function for f in reversed(request.frames) if f.function and f.function != "<module>"
    ]
    if functions:
        queries.append(("functions", " ".join(dict.fromkeys(functions))))
    return queries


def _failing_lines(path: Path, line: int | None) -> str:
    if not line:
        return ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    start = max(0, line - 1 - FAILING_LINES_RADIUS)
    return "\n".join(lines[start : line + FAILING_LINES_RADIUS])


def _is_frame(hit: CodeHit, located: Sequence[_Located]) -> bool:
    return any(
        hit.path == item.path
        and item.frame.line is not None
        and hit.start_line <= item.frame.line <= hit.end_line
        for item in located
    )


def _incident_details(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("fingerprint", "error_type", "error_message", "root_cause", "reason", "patch")
    return {key: payload.get(key) for key in keys}


def _related_code(hit: CodeHit) -> RelatedCode:
    return RelatedCode(
        path=hit.path,
        symbol=hit.symbol,
        start_line=hit.start_line,
        end_line=hit.end_line,
        score=round(hit.score, 4),
    )
