"""Forges: where an approved change leaves the building.

`Forge` is the interface; `LocalForge` (the `propose_change` activity) commits the approved
diff on `remedy/<incident>` and pushes that branch to the repository's own remote, storing
the pull-request text beside the incident. A GitHub forge can reuse `LocalForge.publish` for
the branch and open the pull request from the returned Proposal and its stored body.

Retries are safe by construction: the branch name comes from the incident, the commit is
deterministic (fixed identity, dates from the approval, message from the incident), the
remote is looked at before anything is created, and nothing is ever force-pushed.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git import (
    GitError,
    Mirror,
    application_error,
    ensure_commit,
    git_text,
    locked,
    mirror_for,
    resolve_commit,
    run_git,
)
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.models import Decision, IncidentStatus, Proposal, ProposeRequest

COMMITTER_NAME = "Remedy"
COMMITTER_EMAIL = "remedy@localhost"
INCIDENT_TRAILER = "Remedy-Incident"
MAX_TITLE_CHARS = 72
MAX_BODY_DIFF_LINES = 200


class Forge(Protocol):
    """Publishes an approved incident's change and says where it went."""

    def publish(self, incident: IncidentStatus) -> Proposal: ...


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


# ---------------------------------------------------------------------------- the text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _fence(text: str, language: str = "") -> str:
    """A fenced block that no backtick run inside `text` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _failing_file(incident: IncidentStatus) -> str | None:
    if incident.evidence:
        for frame in incident.evidence.frames:
            if frame.found:
                return frame.path
    if incident.patch and incident.patch.files:
        return incident.patch.files[0]
    return None


def pull_request_title(incident: IncidentStatus) -> str:
    """`fix(<service>): <diagnosis summary>`, or `<error type> in <file>` without one."""
    prefix = f"fix({incident.service}): "
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    if diagnosis and diagnosis.summary.strip():
        subject = _one_line(diagnosis.summary.strip().splitlines()[0]).rstrip(".")
    else:
        where = _failing_file(incident)
        subject = f"{incident.error_type} in {where}" if where else incident.error_type
    return _clip(prefix + subject, MAX_TITLE_CHARS)


def commit_message(incident: IncidentStatus, title: str) -> str:
    """Title, the diagnosis in a paragraph, and the trailer that marks the branch as ours."""
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    paragraphs = [title]
    if diagnosis:
        paragraphs.append(_clip(_one_line(diagnosis.root_cause or diagnosis.summary), 1000))
    else:
        paragraphs.append(
            _clip(_one_line(f"{incident.error_type}: {incident.error_message}"), 1000)
        )
    paragraphs.append(f"{INCIDENT_TRAILER}: {incident.incident_id}")
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def pull_request_body(incident: IncidentStatus, diff: str) -> str:
    """The Markdown a reviewer reads: error, cause, evidence, suspects, change, checks, approval."""
    out = [f"Remedy prepared this change for incident `{incident.incident_id}` "
           f"of service `{incident.service}`."]  # fmt: skip

    out += ["", "## Error", "", _fence(f"{incident.error_type}: {incident.error_message}")]
    out.append(
        f"\n{incident.occurrences} occurrence(s), first seen {incident.first_seen.isoformat()}"
        + (f", release `{incident.release}`." if incident.release else ".")
    )
    evidence = incident.evidence
    if evidence and evidence.frames:
        stack = [
            f"{f.path}:{f.line or '?'} in {f.function or '?'}"
            + ("" if f.found else " (not found in the repository)")
            for f in evidence.frames[:10]
        ]
        out += ["", "Stack, innermost first:", "", _fence("\n".join(stack))]

    result = incident.diagnosis
    diagnosis = result.diagnosis if result else None
    if result and diagnosis:
        out += ["", "## Root cause", "", diagnosis.root_cause.strip() or diagnosis.summary.strip()]
        confidence = f"Confidence: {diagnosis.confidence:.0%}"
        if result.backend:
            # What the model spent on this fix: reviewers see the running cost of Remedy.
            confidence += (
                f" ({result.backend}). Diagnosis: {result.tokens:,} tokens, "
                f"estimated cost ${result.cost_usd:.4f}"
            )
        out.append(f"\n{confidence}.")
        if incident.llm_tokens > result.tokens:
            # The regression test (and any later call) spends beyond the diagnosis itself.
            out.append(
                f"All model calls of this incident: {incident.llm_tokens:,} tokens, "
                f"estimated cost ${incident.llm_cost_usd:.4f}."
            )
        if diagnosis.evidence:
            out += ["", "Evidence:"]
            out += [f"- `{line.path}:{line.line}`" for line in diagnosis.evidence]
    if evidence and evidence.summary:
        out += ["", "## Investigation", "", _fence(evidence.summary)]
    if evidence and evidence.suspect_commits:
        out += ["", "Suspect commits:", "", "| Commit | Author | Date | Subject | Why |",
                "|---|---|---|---|---|"]  # fmt: skip
        out += [
            f"| `{s.sha[:12]}` | {_cell(s.author)} | {s.date[:10]} | {_cell(s.subject)} "
            f"| {_cell(s.reason)} |"
            for s in evidence.suspect_commits
        ]

    patch = incident.patch
    if patch:
        out += ["", "## Change", ""]
        out.append(
            f"{len(patch.files)} file(s), +{patch.lines_added} -{patch.lines_removed}: "
            + ", ".join(f"`{path}`" for path in patch.files)
        )
        lines = diff.splitlines()
        shown = "\n".join(lines[:MAX_BODY_DIFF_LINES])
        if len(lines) > MAX_BODY_DIFF_LINES:
            shown += f"\n… {len(lines) - MAX_BODY_DIFF_LINES} more lines in the branch"
        out += ["", "<details><summary>Diff</summary>", "", _fence(shown, "diff"), "", "</details>"]

    verification = incident.verification
    out += ["", "## Verification", ""]
    if verification:
        ran = f", {verification.tests_run} tests" if verification.tests_run is not None else ""
        out.append(f"**{verification.status}**{ran}. {verification.summary}".rstrip())
        if verification.new_failures:
            out += [f"- new failure: `{name}`" for name in verification.new_failures[:10]]
    else:
        out.append("Not run.")

    decision = incident.approval.decision if incident.approval else None
    if decision:
        out += [
            "",
            "## Approval",
            "",
            f"Approved by {decision.approver} at {decision.at.isoformat()}.",
        ]
    if incident.ui_url:
        out += ["", f"[The incident in the Temporal UI]({incident.ui_url})"]
    out += ["", "---", f"{INCIDENT_TRAILER}: {incident.incident_id}"]
    return "\n".join(out) + "\n"


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
        """Commit the approved diff and push the branch; a retry finds and returns the same one."""
        worktree, patch = incident.worktree, incident.patch
        if worktree is None or patch is None or not patch.applied or patch.diff is None:
            raise ApplicationError(
                f"incident {incident.incident_id} has no prepared patch to propose "
                f"(propose_change runs only after prepare_patch applied one)",
                type="NothingToPropose",
                non_retryable=True,
            )
        decision = approval_of(incident)
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
            ensure_commit(mirror, worktree.commit, timeout)
            with locked(mirror):
                commit = self._existing(mirror, branch, incident.incident_id, timeout)
                if commit is None:
                    commit = self._commit(
                        mirror, worktree.commit, diff, incident, title, decision.at
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
            f"refs/heads/{branch}", env=mirror.remote_env, timeout=timeout,
        )  # fmt: skip
        # ls-remote matches patterns by their tail; only the exact ref counts.
        tips = [
            sha for sha, _, ref in (row.partition("\t") for row in listed.splitlines())
            if ref == f"refs/heads/{branch}"
        ]  # fmt: skip
        if not tips:
            return None
        tip = tips[0]
        if resolve_commit(mirror.path, tip) != tip:
            git_text(
                mirror.path, "fetch", "--quiet", "--no-tags", "--end-of-options",
                mirror.public_location, f"refs/heads/{branch}", env=mirror.remote_env,
                timeout=timeout,
            )  # fmt: skip
        trailers = git_text(
            mirror.path, "log", "-1", f"--format=%(trailers:key={INCIDENT_TRAILER},valueonly)", tip
        )
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
        diff: bytes,
        incident: IncidentStatus,
        title: str,
        at: datetime,
    ) -> str:
        """The change as a commit on `parent`, built in a private index: same input, same sha."""
        stamp = f"{int(at.timestamp())} +0000"
        identity = {
            "GIT_AUTHOR_NAME": COMMITTER_NAME,
            "GIT_AUTHOR_EMAIL": COMMITTER_EMAIL,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": COMMITTER_NAME,
            "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
            "GIT_COMMITTER_DATE": stamp,
        }
        with tempfile.TemporaryDirectory(prefix="remedy-propose-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            run_git(["-C", mirror.path, "read-tree", parent], env=index)
            try:
                run_git(
                    ["-C", mirror.path, "apply", "--cached", "--whitespace=nowarn", "-"],
                    env=index,
                    input=diff,
                )
            except GitError as exc:
                raise ApplicationError(
                    f"the patch of incident {incident.incident_id} no longer applies to "
                    f"{parent[:12]}: {exc} (prepare the patch again)",
                    type="PatchDoesNotApply",
                    non_retryable=True,
                ) from None
            tree = git_text(mirror.path, "write-tree", env=index)
        return run_git(
            ["-C", mirror.path, "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-F", "-"],
            env=identity,
            input=commit_message(incident, title).encode("utf-8"),
        ).text

    @staticmethod
    def _push(mirror: Mirror, commit: str, branch: str, timeout: float) -> None:
        run_git(
            ["-C", mirror.path, "push", "--quiet", "--no-verify", "--end-of-options",
             mirror.public_location, f"{commit}:refs/heads/{branch}"],
            env=mirror.remote_env,
            timeout=timeout,
        )  # fmt: skip
