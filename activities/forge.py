"""The local forge: an approved change leaves the building as a pushed branch.

`LocalForge` (the `propose_change` activity) commits the approved edits on `remedy/<incident>`
and pushes that branch to the repository's own remote, storing the pull-request text
(remedy.render.pull_request) beside the incident. After pr_opened it follows the branch
(`watch_branch`: merged into the service's branch, or deleted unmerged) and, should the fix not
hold, leaves the comment a pull request would get beside the incident (`note_on_change`).
`approval_of` is the check every forge makes before anything leaves; `watch_change` is the
polling loop every forge's watch runs.

Retries are safe by construction: the branch name comes from the incident, the commit is
deterministic (fixed identity, dates from the approval, message from the incident), the
remote is looked at before anything is created, and nothing is ever force-pushed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.progress import heartbeat
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.diff import edited_tree
from remedy.git.mirror import Mirror, ensure_commit, locked, mirror_for, update_mirror
from remedy.git.runner import (
    GitError,
    application_error,
    git_text,
    is_ancestor,
    resolve_commit,
    run_git,
)
from remedy.models import (
    ChangeState,
    Decision,
    Edit,
    FixCommentRequest,
    FixCommentResult,
    IncidentStatus,
    Proposal,
    ProposeRequest,
    WatchChangeRequest,
)
from remedy.patching import EditRefused
from remedy.render.pull_request import (
    INCIDENT_TRAILER,
    commit_message,
    fix_failed_comment,
    fix_failed_marker,
    pull_request_body,
    pull_request_title,
)

COMMITTER_NAME = "Remedy"
COMMITTER_EMAIL = "remedy@localhost"


def approval_of(incident: IncidentStatus) -> Decision:
    """The decision that approved the incident's change; NotApproved when there is none."""
    decision = incident.approval.decision if incident.approval else None
    if decision is None or decision.decision != "approve":
        raise ApplicationError(
            f"incident {incident.incident_id} is not approved; no change leaves without a "
            f"human approval (approve it with `remedy approve` or in Slack)",
            type="NotApproved",
            non_retryable=True,
        )
    return decision


def failed_fix_of(incident: IncidentStatus) -> Proposal:
    """The change a fix-failed comment goes on; NothingToComment when the incident has none."""
    fix = incident.fix
    if incident.proposal is None or fix is None or fix.failed_release is None:
        raise ApplicationError(
            f"incident {incident.incident_id} has no change whose fix failed in a release "
            f"(the comment is left only after a release with the fix saw the error again)",
            type="NothingToComment",
            non_retryable=True,
        )
    return incident.proposal


# ---------------------------------------------------------------------------- watching a change


class PollMissed(Exception):
    """One look at a change failed in a way the next look may not (a network error, a rate
    limit): the watch goes on, waiting at least `wait_s` before the next look."""

    def __init__(self, reason: str, wait_s: float = 0.0) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


async def watch_change(
    request: WatchChangeRequest, look: Callable[[], ChangeState | None]
) -> ChangeState:
    """Look at once and every `poll_s` until `look` says merged or closed; open once `watch_s`
    has passed (the last look is at the deadline).

    `look` blocks (git, PyGithub), so each runs in a thread and no worker thread is held
    between looks: many incidents may watch for days. It must not heartbeat, since the SDK
    takes an async activity's heartbeats on the event loop only; this loop beats between
    looks, and the liveness interceptor (activities/progress.py) beats during one.
    Cancellation arrives as CancelledError and ends the watch at once. A PollMissed is
    logged and waited out; any other exception ends the watch."""
    deadline = time.monotonic() + request.watch_s
    looks = 0
    while True:
        wait = float(request.poll_s)
        looks += 1
        try:
            state = await asyncio.to_thread(look)
        except PollMissed as missed:
            activity.logger.warning(
                "watching the change of %s: %s; looking again", request.incident_id, missed
            )
            wait = max(wait, missed.wait_s)
        else:
            if state is not None:
                return state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ChangeState(state="open")
        heartbeat(f"change open after {looks} look(s)")
        await asyncio.sleep(min(wait, remaining))


# ---------------------------------------------------------------------------- the local forge


class LocalForge:
    """Pushes the approved change as branch `remedy/<incident>` to the repository's remote."""

    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self.config = config
        self.store = store

    @activity.defn(name=names.ACTIVITY_PROPOSE_CHANGE)
    def propose_change(self, request: ProposeRequest) -> Proposal:
        return self.publish(request.incident)

    def publish(self, incident: IncidentStatus) -> Proposal:
        """Commit the approved edits and push the branch; a retry finds and returns the same one."""
        worktree, patch = incident.worktree, incident.patch
        if worktree is None or patch is None or not patch.applied or patch.diff is None:
            raise ApplicationError(
                f"incident {incident.incident_id} has no prepared patch to propose "
                f"(propose_change runs only after prepare_patch applied one)",
                type="NothingToPropose",
                non_retryable=True,
            )
        decision = approval_of(incident)
        diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
        edits = diagnosis.edits if diagnosis else []
        branch = names.branch_for(incident.incident_id)
        title = pull_request_title(incident)
        diff = self.store.get_bytes(patch.diff)
        body = self.store.put_text(
            f"{incident.incident_id}/pull_request.md",
            pull_request_body(incident, diff.decode("utf-8", errors="replace")),
        )
        mirror = mirror_for(self.config, incident.service)
        timeout = float(self.config.limits.sync_timeout_s)
        try:
            ensure_commit(mirror, worktree.commit, timeout, on_wait=heartbeat)
            with locked(mirror, on_wait=heartbeat):
                commit = self._existing(mirror, branch, incident.incident_id, timeout)
                if commit is None:
                    commit = self._commit(
                        mirror, worktree.commit, edits, incident, title, decision.at
                    )
                    self._push(mirror, commit, branch, timeout)
        except GitError as exc:
            raise application_error(
                exc,
                f"pushing {branch} to {mirror.public_location}",
                f"check services.{incident.service}.repo and that the worker may push to it",
            ) from None
        return Proposal(
            branch=branch, commit=commit, title=title, remote=mirror.public_location, body=body
        )

    # -- after pr_opened ---------------------------------------------------------

    @activity.defn(name=names.ACTIVITY_WATCH_BRANCH)
    async def watch_branch(self, request: WatchChangeRequest) -> ChangeState:
        """Fetch every `poll_s` for `watch_s`: merged once the change is in the service's
        branch (`request.branch`, else the configured one; merge_commit None: the change's
        commit is what a release must contain, or the commit it landed as after a rebase or
        squash); closed once its branch is deleted unmerged; open at the end. A failed fetch
        waits for the next poll; a permanent git failure (credentials, a missing repository) or
        a missing service branch raises, non-retryable."""
        mirror = mirror_for(self.config, request.service)  # an unknown service stops here
        branch = request.branch or self.config.service(request.service).branch
        timeout = float(self.config.limits.sync_timeout_s)

        def look() -> ChangeState | None:
            try:
                with locked(mirror):
                    update_mirror(mirror, timeout)
                    return self._change_state(mirror, request, branch)
            except GitError as exc:
                if exc.permanent:
                    raise application_error(
                        exc,
                        f"watching {request.proposal.branch} in {mirror.public_location}",
                        f"check services.{request.service}.repo and that the worker may read it",
                    ) from None
                raise PollMissed(str(exc)) from None

        return await watch_change(request, look)

    @staticmethod
    def _change_state(
        mirror: Mirror, request: WatchChangeRequest, branch: str
    ) -> ChangeState | None:
        """The change's state in the freshly fetched mirror; None while it is open."""
        tip = resolve_commit(mirror.path, f"refs/heads/{branch}")
        if tip is None:
            raise ApplicationError(
                f"branch {branch!r} of service {request.service!r} does not exist in "
                f"{mirror.public_location}, so no change can be merged into it (set "
                f"services.{request.service}.branch to an existing branch)",
                type="BranchNotFound",
                non_retryable=True,
            )
        # Unknown when its branch was deleted before this mirror ever fetched it.
        commit = resolve_commit(mirror.path, request.proposal.commit)
        if commit is not None:
            if is_ancestor(mirror.path, commit, tip):
                return ChangeState(state="merged")
            # A rebase or squash lands the change as a new commit that keeps its trailer.
            landed = git_text(
                mirror.path, "log", "-1", "--format=%H", "--fixed-strings",
                f"--grep={INCIDENT_TRAILER}: {request.incident_id}", tip, "--not", commit, "--",
            )  # fmt: skip
            if landed:
                return ChangeState(state="merged", merge_commit=landed)
        if resolve_commit(mirror.path, f"refs/heads/{request.proposal.branch}") is None:
            return ChangeState(state="closed")
        return None

    @activity.defn(name=names.ACTIVITY_NOTE_ON_CHANGE)
    def note_on_change(self, request: FixCommentRequest) -> FixCommentResult:
        """Append the fix-failed comment to `<incident>/pull_request_comments.md` (the local
        forge has no pull request page); once per failed release, so a retry adds nothing."""
        incident = request.incident
        failed_fix_of(incident)
        try:
            incident_id = names.safe_id(incident.incident_id, "incident id")
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidRequest", non_retryable=True) from None
        key = f"{incident_id}/pull_request_comments.md"
        url = self.store.path_of(key).as_uri()
        earlier = self.store.get_text(key) if self.store.exists(key) else ""
        if fix_failed_marker(incident) in earlier:
            return FixCommentResult(created=False, url=url)
        separator = "\n---\n\n" if earlier else ""
        self.store.put_text(key, earlier + separator + fix_failed_comment(incident))
        return FixCommentResult(created=True, url=url)

    @staticmethod
    def _existing(mirror: Mirror, branch: str, incident_id: str, timeout: float) -> str | None:
        """The remote branch's tip if an earlier attempt pushed it; None if there is none."""
        listed = git_text(
            mirror.path, "ls-remote", "--end-of-options", mirror.public_location,
            f"refs/heads/{branch}", env=mirror.remote_env, timeout=timeout, on_wait=heartbeat,
        )  # fmt: skip
        # ls-remote matches patterns by their tail; only the exact ref counts.
        tips = [
            sha for sha, _, ref in (row.partition("\t") for row in listed.splitlines())
            if ref == f"refs/heads/{branch}"
        ]  # fmt: skip
        if not tips:
            return None
        tip = tips[0]
        if resolve_commit(mirror.path, tip, on_wait=heartbeat) != tip:
            git_text(
                mirror.path, "fetch", "--quiet", "--no-tags", "--end-of-options",
                mirror.public_location, f"refs/heads/{branch}", env=mirror.remote_env,
                timeout=timeout, on_wait=heartbeat,
            )  # fmt: skip
        trailers = git_text(
            mirror.path, "log", "-1", f"--format=%(trailers:key={INCIDENT_TRAILER},valueonly)",
            tip, on_wait=heartbeat,
        )  # fmt: skip
        if incident_id not in trailers.split():
            raise ApplicationError(
                f"branch {branch} already exists on {mirror.public_location} at {tip[:12]} "
                f"without the trailer '{INCIDENT_TRAILER}: {incident_id}', so a person owns it; "
                f"Remedy never overwrites it (delete or rename that branch, then retry)",
                type="BranchConflict",
                non_retryable=True,
            )
        return tip

    @staticmethod
    def _commit(
        mirror: Mirror,
        parent: str,
        edits: list[Edit],
        incident: IncidentStatus,
        title: str,
        at: datetime,
    ) -> str:
        """The edits as a commit on `parent`, built in a private index: same input, same sha.

        The edits are applied, not the stored diff: that one is redacted for people."""
        stamp = f"{int(at.timestamp())} +0000"
        identity = {
            "GIT_AUTHOR_NAME": COMMITTER_NAME,
            "GIT_AUTHOR_EMAIL": COMMITTER_EMAIL,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": COMMITTER_NAME,
            "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
            "GIT_COMMITTER_DATE": stamp,
        }
        try:
            tree = edited_tree(mirror.path, parent, edits, on_wait=heartbeat)
        except EditRefused as exc:
            raise ApplicationError(
                f"the patch of incident {incident.incident_id} no longer applies to "
                f"{parent[:12]}: {exc} (prepare the patch again)",
                type="PatchDoesNotApply",
                non_retryable=True,
            ) from None
        return run_git(
            ["-C", mirror.path, "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-F", "-"],
            env=identity,
            input=commit_message(incident, title).encode("utf-8"),
            on_wait=heartbeat,
        ).text

    @staticmethod
    def _push(mirror: Mirror, commit: str, branch: str, timeout: float) -> None:
        run_git(
            ["-C", mirror.path, "push", "--quiet", "--no-verify", "--end-of-options",
             mirror.public_location, f"{commit}:refs/heads/{branch}"],
            env=mirror.remote_env,
            timeout=timeout,
            on_wait=heartbeat,
        )  # fmt: skip
