"""The local forge: an approved change leaves the building as a pushed branch.

`LocalForge` (the `propose_change` activity) commits the approved edits on `remedy/<incident>`
and pushes that branch to the repository's own remote, storing the pull-request text
(remedy.render.pull_request) beside the incident. `approval_of` is the check every forge makes
before anything leaves.

Retries are safe by construction: the branch name comes from the incident, the commit is
deterministic (fixed identity, dates from the approval, message from the incident), the
remote is looked at before anything is created, and nothing is ever force-pushed.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.progress import heartbeat
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.diff import edited_tree
from remedy.git.mirror import Mirror, ensure_commit, locked, mirror_for
from remedy.git.runner import GitError, application_error, git_text, resolve_commit, run_git
from remedy.models import Decision, Edit, IncidentStatus, Proposal, ProposeRequest
from remedy.patching import EditRefused
from remedy.render.pull_request import (
    INCIDENT_TRAILER,
    commit_message,
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
