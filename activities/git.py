"""Git activities: sync_repo, investigate, prepare_patch and release_contains, over remedy.git.

The plumbing (the runner, the mirror cache, history, diffs) lives in `remedy.git`; this
adapter turns requests into calls, heartbeats while git runs, stores the artifacts and turns
git failures into Temporal failures (permanent ones stop the retries). Every location in a
result or an error is the redacted one.
"""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.progress import heartbeat
from remedy import names, patching
from remedy.artifacts import ArtifactStore
from remedy.config import ConfigError, RemedyConfig
from remedy.git import history
from remedy.git.diff import CommitFiles, diff_against
from remedy.git.mirror import (
    Mirror,
    ensure_commit,
    ensure_worktree,
    locked,
    mirror_for,
    update_unless_mirrored,
)
from remedy.git.runner import (
    GitError,
    application_error,
    is_ancestor,
    resolve_commit,
)
from remedy.models import (
    Evidence,
    InvestigateRequest,
    PatchRequest,
    PatchResult,
    ReleaseCheck,
    ReleaseCheckRequest,
    SyncRequest,
    Worktree,
)
from remedy.policy import lifted_execution_sensitive


def _incident_id(value: str) -> str:
    try:
        return names.safe_id(value, "incident id")
    except ValueError as exc:
        raise ApplicationError(str(exc), type="InvalidRequest", non_retryable=True) from None


class GitActivities:
    """sync_repo, investigate, prepare_patch and release_contains: every activity that reads
    a repository."""

    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self.config = config
        self.store = store

    # -- sync_repo ------------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_SYNC_REPO)
    def sync_repo(self, request: SyncRequest) -> Worktree:
        """Fetch the service's repository and check out the deployed commit for this incident."""
        incident_id = _incident_id(request.incident_id)
        try:
            service = self.config.service(request.service)
        except ConfigError as exc:
            raise ApplicationError(str(exc), type="ConfigError", non_retryable=True) from None
        mirror = mirror_for(self.config, request.service)
        release = request.release if service.deployed_commit == "event" else None
        worktree_path = self.config.home_dir / "worktrees" / incident_id
        timeout = float(self.config.limits.sync_timeout_s)
        try:
            with locked(mirror, on_wait=heartbeat):
                update_unless_mirrored(mirror, release, timeout, on_wait=heartbeat)
                commit = self._deployed_commit(mirror, release, service.branch)
                ensure_worktree(mirror.path, worktree_path, commit, on_wait=heartbeat)
        except GitError as exc:
            raise application_error(
                exc,
                f"syncing {request.service} from {mirror.public_location}",
                f"check services.{request.service}.repo and that the worker may read it",
            ) from None
        return Worktree(
            service=request.service,
            path=str(worktree_path),
            commit=commit,
            branch=service.branch,
            commit_source="release" if release else "branch_head",
        )

    def _deployed_commit(self, mirror: Mirror, release: str | None, branch: str) -> str:
        if release:
            commit = resolve_commit(mirror.path, release, on_wait=heartbeat)
            if commit is None:
                raise ApplicationError(
                    f"release {release!r} of service {mirror.service!r} names no commit in "
                    f"{mirror.public_location} after fetching (push that commit, report the sha "
                    f"the service really runs, or set services.{mirror.service}.deployed_commit "
                    f'= "branch")',
                    type="CommitNotFound",
                    non_retryable=True,
                )
            return commit
        commit = resolve_commit(mirror.path, f"refs/heads/{branch}", on_wait=heartbeat)
        if commit is None:
            raise ApplicationError(
                f"branch {branch!r} of service {mirror.service!r} does not exist in "
                f"{mirror.public_location} (set services.{mirror.service}.branch to an existing "
                f"branch)",
                type="BranchNotFound",
                non_retryable=True,
            )
        return commit

    def _repository(self, worktree: Worktree) -> Path:
        """The mirror holding the worktree's commit, so any worker can serve any step."""
        mirror = mirror_for(self.config, worktree.service)
        timeout = float(self.config.limits.sync_timeout_s)
        ensure_commit(mirror, worktree.commit, timeout, on_wait=heartbeat)
        return mirror.path

    # -- investigate ----------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_INVESTIGATE)
    def investigate(self, request: InvestigateRequest) -> Evidence:
        """Locate the in-app frames, read their code, blame the failing lines, rank suspects."""
        incident_id = _incident_id(request.incident_id)
        worktree = request.worktree
        try:
            repo = self._repository(worktree)
            include = self.config.service(worktree.service).in_app_include
            found = history.investigate(
                repo, worktree.commit, request.frames, include, on_wait=heartbeat
            )
        except GitError as exc:
            raise application_error(
                exc,
                f"investigating {worktree.service} at {worktree.commit}",
                "sync the repository again",
            ) from None
        ref = self.store.put_json(
            f"{incident_id}/evidence.json", history.evidence_record(request, found)
        )
        return history.evidence_of(request, found, ref)

    # -- prepare_patch --------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_PREPARE_PATCH)
    def prepare_patch(self, request: PatchRequest) -> PatchResult:
        """Apply the edits to a private index (never the worktree) and store git's diff."""
        incident_id = _incident_id(request.incident_id)
        commit = request.worktree.commit
        if not request.edits:
            return PatchResult(applied=False, reason="no edits to apply")
        try:
            repo = self._repository(request.worktree)
            base = CommitFiles(repo, commit, request.edits, on_wait=heartbeat)
            try:
                edited = patching.apply_edits(request.edits, base, f"commit {commit[:12]}")
            except patching.EditRefused as refusal:
                return PatchResult(applied=False, reason=str(refusal))
            diff, added, removed = diff_against(repo, commit, edited, on_wait=heartbeat)
        except GitError as exc:
            raise application_error(
                exc, f"preparing the patch of {incident_id}", "sync the repository again"
            ) from None
        folder = names.attempt_folder(incident_id, request.attempt)
        ref = self.store.put_bytes(f"{folder}/patch.diff", diff)
        return PatchResult(
            applied=True,
            files=sorted(edited),
            lines_added=added,
            lines_removed=removed,
            diff=ref,
            execution_sensitive=lifted_execution_sensitive(sorted(edited), request.policy),
        )

    # -- release_contains -----------------------------------------------------

    @activity.defn(name=names.ACTIVITY_RELEASE_CONTAINS)
    def release_contains(self, request: ReleaseCheckRequest) -> ReleaseCheck:
        """Whether the service's `release` (a sha or a tag) contains `commit`; contains=None
        when the release names no commit of the repository even after a fetch."""
        mirror = mirror_for(self.config, request.service)
        release, fix = request.release, request.commit
        timeout = float(self.config.limits.sync_timeout_s)
        try:
            with locked(mirror, on_wait=heartbeat):
                # A fix the mirror lacks cannot be in the release (a commit brings its
                # ancestors), so a release already mirrored needs no fetch either.
                update_unless_mirrored(mirror, release, timeout, on_wait=heartbeat)
                release_commit = resolve_commit(mirror.path, release, on_wait=heartbeat)
                if release_commit is None:
                    return ReleaseCheck(
                        contains=None,
                        detail=f"release {release!r} of service {request.service!r} names no "
                        f"commit in {mirror.public_location} after fetching",
                    )
                fix_commit = resolve_commit(mirror.path, fix, on_wait=heartbeat)
                contains = fix_commit is not None and is_ancestor(
                    mirror.path, fix_commit, release_commit, on_wait=heartbeat
                )
        except GitError as exc:
            raise application_error(
                exc,
                f"checking release {release!r} of {request.service} for {fix[:12]}",
                f"check services.{request.service}.repo and that the worker may read it",
            ) from None
        if fix_commit is None:
            detail = f"fix {fix[:12]} is not in {mirror.public_location}, so no release has it"
        else:
            holds = "contains" if contains else "does not contain"
            detail = f"release {release!r} ({release_commit[:12]}) {holds} fix {fix[:12]}"
        return ReleaseCheck(contains=contains, release_commit=release_commit, detail=detail)
