"""What `remedy search` and `remedy index` ask of the code index, wherever it runs.

The CLI asks the running index worker, which keeps the embedding model loaded (a standalone
Temporal activity on the index task queue), and with no stack running does the same work in
its own process. Both sides call these functions, so both answer alike. The request and
answer models live here, not in remedy/models.py: only the CLI and the index worker
exchange them, never a workflow. The index itself (numpy, the model, the store) is imported
only by the side that does the work: a search through the worker starts none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from remedy.config import RemedyConfig

if TYPE_CHECKING:
    from remedy.index.core import CodeIndex, Progress
    from remedy.models import IndexResult


class IndexRefused(Exception):
    """A request the index cannot serve, in one line for the person who asked."""


class SearchRequest(BaseModel):
    service: str
    query: str
    limit: int = Field(default=8, ge=1, le=100)
    commit: str | None = Field(default=None, description="An indexed commit or its prefix")


class SearchAnswer(BaseModel):
    """At most `limit` hits; a chunk's text is at most ~1,300 characters (the chunker's
    bound), so an answer stays far below Temporal's 2 MB payload limit."""

    service: str
    commit: str
    query: str
    hits: list[dict[str, Any]] = Field(default_factory=list)


class IndexJob(BaseModel):
    """Index a service's branch head (or `commit`), or a local checkout (`repo`)."""

    service: str | None = None
    repo: str | None = Field(default=None, description="An absolute path to a git checkout")
    commit: str | None = None


def search(code: CodeIndex, config: RemedyConfig, request: SearchRequest) -> SearchAnswer:
    """Hybrid search of the service's index at its latest indexed commit (or `commit`)."""
    from remedy.index.core import repo_key

    if request.service not in config.services:
        raise IndexRefused(f"{config.source}: no service {request.service!r} in [services]")
    key = repo_key(config, request.service, "")
    indexed = code.indexed_commits(key)
    if not indexed:
        raise IndexRefused(
            f"{request.service} is not indexed yet (run `remedy index {request.service}` first)"
        )
    target = indexed[-1]
    if request.commit:
        matches = [c for c in indexed if c.startswith(request.commit)]
        if len(matches) != 1:
            raise IndexRefused(
                f"--commit {request.commit}: not one of the indexed commits of "
                f"{request.service} ({', '.join(c[:12] for c in indexed)}; `remedy index "
                f"{request.service} --commit SHA` adds one)"
            )
        target = matches[0]
    hits = code.search(key, target, [request.query], request.limit)[: request.limit]
    return SearchAnswer(
        service=request.service,
        commit=target,
        query=request.query,
        hits=[hit.as_json() for hit in hits],
    )


def checkout_for(config: RemedyConfig, job: IndexJob, progress: Progress) -> tuple[str, Path, str]:
    """(the index's key for the repository, the git directory to read, the commit): for a
    service its mirror, fetched now; for `repo` the checkout itself."""
    from remedy.git.runner import GitError, resolve_commit
    from remedy.index.core import repo_key

    if (job.service is None) == (job.repo is None):
        raise IndexRefused("pass exactly one of SERVICE or --repo PATH")
    if job.repo is not None:
        repo = Path(job.repo)
        if not repo.is_dir():
            raise IndexRefused(f"--repo {repo}: no such directory (pass a local git checkout)")
        sha = resolve_commit(repo, job.commit or "HEAD")
        if sha is None:
            raise IndexRefused(
                f"--repo {repo}: {job.commit or 'HEAD'!r} names no commit there (pass a git "
                f"checkout with at least one commit, or an existing --commit)"
            )
        return repo_key(config, None, str(repo)), repo.resolve(), sha

    from remedy.git.mirror import locked, mirror_for, update_mirror

    service = str(job.service)
    if service not in config.services:
        raise IndexRefused(f"{config.source}: no service {service!r} in [services]")
    branch = config.service(service).branch
    mirror = mirror_for(config, service)
    progress("fetching", 0, 0)
    try:
        with locked(mirror):
            update_mirror(mirror, float(config.limits.sync_timeout_s))
    except GitError as exc:
        raise IndexRefused(f"fetching {service} from {mirror.public_location}: {exc}") from None
    sha = resolve_commit(mirror.path, job.commit or f"refs/heads/{branch}")
    if sha is None:
        what = f"commit {job.commit!r}" if job.commit else f"branch {branch!r}"
        raise IndexRefused(
            f"{what} is not in {mirror.public_location} (pass an existing --commit, or fix "
            f"services.{service}.branch)"
        )
    return repo_key(config, service, str(mirror.path)), mirror.path, sha


def run_index(
    open_index: Callable[[], AbstractContextManager[CodeIndex]],
    config: RemedyConfig,
    job: IndexJob,
    progress: Progress,
    embedded_before: int = 0,
) -> IndexResult:
    """Fetch, then bring the index up to the job's commit. `open_index()` is a context
    manager yielding the CodeIndex: it is entered after the fetch, so the store is not held
    while the network is slow."""
    key, checkout, sha = checkout_for(config, job, progress)
    with open_index() as code:
        return code.index(key, checkout, sha, progress=progress, embedded_before=embedded_before)
