"""Every value that crosses a workflow, activity, signal, update, query or HTTP boundary.

One pydantic model per message, so fields can be added later without breaking running
incidents (new fields always get defaults). Longer than other modules on purpose: it is the
schema of every boundary, read as one page, and has no logic beyond small views.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from remedy.names import SERVICE_NAME_PATTERN
from remedy.service_policy import ServicePolicy, Severity


class Phase(StrEnum):
    RECEIVED = "received"
    SYNCING = "syncing"
    INDEXING = "indexing"
    INVESTIGATING = "investigating"
    DIAGNOSING = "diagnosing"
    PATCHING = "patching"
    VERIFYING = "verifying"
    AWAITING_APPROVAL = "awaiting_approval"
    OPENING_PR = "opening_pr"
    PR_OPENED = "pr_opened"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TRIAGED = "triaged"
    NOTIFIED = "notified"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    # After pr_opened the incident follows its change to production (issue 13).
    FIX_MERGED = "fix_merged"
    FIX_DEPLOYED = "fix_deployed"
    FIX_HELD = "fix_held"
    FIX_FAILED = "fix_failed"
    FIX_ABANDONED = "fix_abandoned"


TERMINAL_PHASES = frozenset(
    {
        Phase.PR_OPENED,
        Phase.REJECTED,
        Phase.EXPIRED,
        Phase.TRIAGED,
        Phase.NOTIFIED,
        Phase.RATE_LIMITED,
        Phase.FAILED,
        Phase.FIX_MERGED,
        Phase.FIX_DEPLOYED,
        Phase.FIX_HELD,
        Phase.FIX_FAILED,
        Phase.FIX_ABANDONED,
    }
)
"""Phases at which the remediation reached its outcome; from pr_opened on, the incident may
still follow its change (FOLLOWING_PHASES) until it ends in one of FIX_OUTCOMES."""

FOLLOWING_PHASES = frozenset({Phase.PR_OPENED, Phase.FIX_MERGED, Phase.FIX_DEPLOYED})
FIX_OUTCOMES = frozenset({Phase.FIX_HELD, Phase.FIX_FAILED, Phase.FIX_ABANDONED})


# ---------------------------------------------------------------------------- the error event


class Frame(BaseModel):
    """One stack frame, innermost last (the order Python prints them in)."""

    file: str = Field(min_length=1, max_length=1024)
    line: int | None = Field(default=None, ge=0)
    function: str | None = Field(default=None, max_length=512)
    module: str | None = Field(default=None, max_length=512)
    code: str | None = Field(default=None, max_length=2000, description="The source line, if known")
    in_app: bool | None = Field(
        default=None, description="True for the service's own code; None lets Remedy decide"
    )


class ErrorInfo(BaseModel):
    type: str = Field(min_length=1, max_length=256)
    message: str = Field(default="", max_length=16_384)
    code: str | None = Field(
        default=None,
        max_length=32,
        description="DOMAIN+SEVERITY+NN error code, e.g. DB5001; policy maps it to a severity",
    )


class ErrorEvent(BaseModel):
    """What clients send to POST /v1/errors (see DESIGN.md)."""

    model_config = ConfigDict(extra="ignore")

    service: str = Field(pattern=SERVICE_NAME_PATTERN)
    environment: str | None = Field(default=None, max_length=64)
    release: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9._/+-]+$")
    error: ErrorInfo
    traceback: str | None = Field(default=None, max_length=200_000)
    frames: list[Frame] = Field(default_factory=list, max_length=500)
    timestamp: datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="after")
    def _needs_a_stack(self) -> ErrorEvent:
        if not self.frames and not (self.traceback and self.traceback.strip()):
            raise ValueError("one of 'traceback' or 'frames' is required")
        return self


class IntakeResponse(BaseModel):
    incident_id: str
    workflow_id: str
    deduplicated: bool
    occurrences: int
    ui_url: str


# ---------------------------------------------------------------------------- workflow input/state


class Recurrence(BaseModel):
    """The incident a recurrence run follows: it reached its outcome (and closed) less than a
    quiet window before the error was reported again."""

    incident_id: str
    phase: Phase
    occurrences: int = Field(ge=0)


class IncidentStart(BaseModel):
    service: str
    fingerprint: str
    severity: Severity
    notify_only: bool = False
    event: ErrorEvent
    occurrences: int = Field(default=1, ge=1)
    policy: ServicePolicy = Field(default_factory=ServicePolicy)
    forge: Literal["local", "github"] = "local"
    index_task_queue: str | None = Field(
        default=None,
        description="Where index activities run; None: the workflow's own task queue",
    )
    ui_base_url: str = Field(
        default="", description="Temporal UI base, e.g. http://127.0.0.1:8233/namespaces/default"
    )
    recurrence_of: Recurrence | None = Field(
        default=None,
        description="Set on a run that only counts reports of an incident already closed",
    )
    reopened_after: FixRecurrence | None = Field(
        default=None, description="Set on the incident a failed fix reopened"
    )
    follow_up: IncidentStatus | None = Field(
        default=None,
        description="Set on a run continued-as-new while following its change: the incident as "
        "it stood (its history had grown long)",
    )


class OccurrenceSignal(BaseModel):
    count: int = Field(ge=1)
    last_seen: datetime | None = None
    releases: dict[str, int] = Field(
        default_factory=dict,
        description="How many of the `count` reports named each release; reports without one "
        "are not in it. An incident following its fix tells a recurrence on a release with the "
        "fix from a stale one by these",
    )


# Release names as services send them: a commit sha, a tag, `name@1.2.3+sha`.
RELEASE_MAX_LENGTH = 200


class ChangeSignal(BaseModel):
    """What happened to the incident's change at the forge (GitHub webhook, CLI, poll)."""

    state: Literal["merged", "closed"]
    merge_commit: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$",
        description="The commit that landed on the service's branch (GitHub's merge_commit_sha; "
        "differs from the change's own commit after a squash or rebase merge)",
    )
    source: str = Field(default="webhook", max_length=40, description="Who told: webhook, poll")


class DeploySignal(BaseModel):
    """A release of the service now runs: POST /v1/deploys, `remedy deployed`, or the first
    report of the service that named it."""

    release: str = Field(min_length=1, max_length=RELEASE_MAX_LENGTH)
    source: Literal["deploy", "report"] = "deploy"


class DeployRequest(BaseModel):
    """What a deploy pipeline sends to POST /v1/deploys once a release of the service runs."""

    service: str = Field(pattern=SERVICE_NAME_PATTERN)
    release: str = Field(
        min_length=1,
        max_length=RELEASE_MAX_LENGTH,
        # What git can name without it reading as an option: a sha, a tag, name@1.2.3+sha.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/+@:-]*$",
        description="The release that now runs: the commit sha or the tag it was built from",
    )


class DeployResponse(BaseModel):
    service: str
    release: str
    incidents: list[str] = Field(description="The incidents following a change that were told")


class FixRecurrence(BaseModel):
    """The incident whose merged and deployed fix did not stop the error: a new incident
    opens linked to it."""

    incident_id: str
    fix_commit: str
    release: str
    pr_url: str | None = None

    def note(self) -> str:
        return f"recurred after fix {self.fix_commit[:12]} in {self.release}"


class FixFollowUp(BaseModel):
    """How far the incident's change got after pr_opened."""

    commit: str = Field(description="What must be in a release: the merge commit once known")
    follow_until: datetime = Field(description="When the incident stops waiting for the next step")
    merged_at: datetime | None = None
    merged_by: str = Field(default="", description="Who told: webhook, poll, release")
    deployed_release: str | None = None
    deployed_at: datetime | None = None
    hold_until: datetime | None = None
    failed_release: str | None = None
    stale_reports: int = Field(
        default=0, description="Reports of the fingerprint from releases without the fix"
    )
    recurrences: int = Field(
        default=0, description="Reports of the fingerprint from releases with the fix"
    )
    releases_seen: dict[str, bool] = Field(
        default_factory=dict, description="Releases checked for the commit: whether they hold it"
    )
    releases_to_check: dict[str, int] = Field(
        default_factory=dict,
        description="Releases heard of and not checked yet, with the reports of the error on each",
    )


class ArtifactRef(BaseModel):
    """A pointer into the artifact store; the content never travels through history."""

    key: str
    sha256: str
    size: int


class Worktree(BaseModel):
    service: str
    path: str
    commit: str
    branch: str
    commit_source: Literal["release", "branch_head"]


class SuspectCommit(BaseModel):
    sha: str
    author: str
    date: str
    subject: str
    paths: list[str] = Field(default_factory=list)
    reason: str = ""


class FrameEvidence(BaseModel):
    """An in-app frame located in the repository at the incident's commit."""

    path: str
    line: int | None = None
    function: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    found: bool = True


class RelatedCode(BaseModel):
    path: str
    symbol: str | None = None
    start_line: int
    end_line: int
    score: float


class CalledCode(BaseModel):
    """Project code a located frame calls (remedy.calls): evidence the stack does not show."""

    path: str
    symbol: str
    start_line: int
    end_line: int
    caller: str = Field(description="path:line of the frame that calls it")


class SimilarIncident(BaseModel):
    incident_id: str
    summary: str
    outcome: str
    score: float


class Evidence(BaseModel):
    summary: str
    frames: list[FrameEvidence] = Field(
        default_factory=list,
        description="Located in-app frames, innermost FIRST (most telling first), unlike the "
        "event's frames, which keep the traceback's innermost-last order",
    )
    suspect_commits: list[SuspectCommit] = Field(default_factory=list)
    called_code: list[CalledCode] = Field(default_factory=list)
    related_code: list[RelatedCode] = Field(default_factory=list)
    similar_incidents: list[SimilarIncident] = Field(default_factory=list)
    related_from: str = Field(
        default="", description="Which index the related code came from, and how complete it was"
    )
    artifact: ArtifactRef | None = None


class Edit(BaseModel):
    path: str = Field(min_length=1)
    search: str = Field(min_length=1)
    replace: str


class EvidenceLine(BaseModel):
    path: str
    line: int = Field(ge=1)


class Diagnosis(BaseModel):
    """The shape a model must return (DESIGN.md); validated before use."""

    summary: str
    root_cause: str
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[EvidenceLine] = Field(default_factory=list)
    edits: list[Edit] = Field(default_factory=list)


class DiagnosisResult(BaseModel):
    """What `diagnose` returns: a diagnosis, or an honest abstention with its reason."""

    diagnosis: Diagnosis | None = None
    abstained_reason: str | None = None
    backend: str | None = None
    artifact: ArtifactRef | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    rate_limited: bool = Field(
        default=False, description="A per-service or per-incident LLM cap stopped the diagnosis"
    )
    route: str = Field(default="", description="Why these backends, in this order")
    usage: list[LLMUsage] = Field(default_factory=list)
    attempts: list[DiagnosisAttempt] = Field(default_factory=list)
    tool_calls: list[ToolCallSummary] = Field(default_factory=list)


FixFailure = Literal["not_applied", "verification_failed"]


class FixAttempt(BaseModel):
    """A try at a fix that failed: shown to the model on the next try, to reviewers after."""

    attempt: int = Field(ge=1)
    failure: FixFailure
    detail: str = Field(description="The apply error or the failing tests' output tail, clipped")
    edits: list[Edit] = Field(default_factory=list)
    diagnosis: ArtifactRef | None = Field(default=None, description="That try's transcript")
    verification: ArtifactRef | None = Field(default=None, description="Its verification report")


CheckName = Literal["innermost_frame_edited", "reproduced", "suite_passes"]


class Check(BaseModel):
    name: CheckName
    passed: bool | None = Field(description="None: the check could not run")
    detail: str = ""


class Assurance(BaseModel):
    """How far the fix was checked; the confidence shown and routed on (remedy.assurance)."""

    level: Literal["verified", "tested", "unverified"]
    confidence: float = Field(
        ge=0.0, le=1.0, description="From the checks, never above the model's"
    )
    model_confidence: float = Field(ge=0.0, le=1.0)
    checks: list[Check] = Field(default_factory=list)
    attempt: int = Field(default=1, ge=1, description="The try that produced this fix")
    max_attempts: int = Field(default=1, ge=1)


class PatchResult(BaseModel):
    applied: bool
    reason: str | None = None
    files: list[str] = Field(default_factory=list)
    lines_added: int = 0
    lines_removed: int = 0
    diff: ArtifactRef | None = None
    execution_sensitive: list[str] = Field(
        default_factory=list,
        description="Edited files a built-in execution-sensitive rule covers, let through by "
        "services.<name>.allow_execution_sensitive_paths; the approval message names them",
    )


class VerificationResult(BaseModel):
    status: Literal["passed", "failed", "skipped", "error"]
    summary: str = ""
    tests_run: int | None = None
    new_failures: list[str] = Field(default_factory=list)
    reproduced: bool | None = None
    artifact: ArtifactRef | None = None
    network_isolated: bool | None = Field(
        default=None, description="False: the sandbox could not cut the tests off the network"
    )
    regression_test: str | None = Field(default=None, description="Path of the model's test")
    runs: list[CommandRun] = Field(default_factory=list)
    output_tail: str = Field(
        default="", description="When failed: the end of the patched suite run's output"
    )


class Proposal(BaseModel):
    branch: str
    commit: str
    title: str
    remote: str = ""
    pr_url: str | None = None
    body: ArtifactRef | None = None


class Decision(BaseModel):
    decision: Literal["approve", "reject"]
    approver: str
    reason: str | None = None
    at: datetime


class ApprovalRequest(BaseModel):
    request_id: str
    approvers: list[str]
    requested_at: datetime
    expires_at: datetime
    decision: Decision | None = None


class DecideRequest(BaseModel):
    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    reason: str | None = Field(default=None, max_length=2000)


class DecideResult(BaseModel):
    incident_id: str
    phase: Phase
    decision: Decision


class PhaseChange(BaseModel):
    phase: Phase
    at: datetime
    note: str = ""


class IncidentStatus(BaseModel):
    """The `status` query, GET /v1/incidents/{id} and `remedy incidents show --json`."""

    incident_id: str
    workflow_id: str
    service: str
    fingerprint: str
    phase: Phase
    severity: Severity
    error_type: str
    error_message: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    release: str | None = None
    worktree: Worktree | None = None
    evidence: Evidence | None = None
    diagnosis: DiagnosisResult | None = None
    patch: PatchResult | None = None
    verification: VerificationResult | None = None
    assurance: Assurance | None = None
    fix_attempts: list[FixAttempt] = Field(
        default_factory=list, description="Earlier tries at a fix that failed, oldest first"
    )
    approval: ApprovalRequest | None = None
    proposal: Proposal | None = None
    reason: str | None = Field(default=None, description="Why the incident ended where it did")
    llm_tokens: int = Field(default=0, description="Tokens spent on this incident, all calls")
    llm_cost_usd: float = Field(default=0.0, description="Estimated cost of those tokens")
    ui_url: str = ""
    recurrence_of: str | None = Field(
        default=None, description="The closed incident this run counts recurrences of"
    )
    reopened_after: FixRecurrence | None = None
    fix: FixFollowUp | None = Field(
        default=None, description="After pr_opened: the change's way to merge and production"
    )
    history: list[PhaseChange] = Field(default_factory=list)

    def digest(self, *, with_change: bool = False) -> IncidentStatus:
        """The status as a message or a forge reads it, for activity inputs: history keeps
        each input, so the phase log, related code and per-call model accounting stay in
        the `status` query and the artifacts. The change itself (the edits and the worktree
        they apply to) comes along only `with_change`."""
        evidence = self.evidence
        if evidence is not None:
            evidence = evidence.model_copy(update={"related_code": [], "similar_incidents": []})
        diagnosis = self.diagnosis
        if diagnosis is not None:
            found = diagnosis.diagnosis
            if found is not None and not with_change:
                found = found.model_copy(update={"edits": []})
            diagnosis = diagnosis.model_copy(
                update={"diagnosis": found, "usage": [], "attempts": [], "tool_calls": []}
            )
        fix = self.fix
        if fix is not None:
            fix = fix.model_copy(update={"releases_seen": {}, "releases_to_check": {}})
        return self.model_copy(
            update={
                "history": [],
                "worktree": self.worktree if with_change else None,
                "evidence": evidence,
                "diagnosis": diagnosis,
                "fix": fix,
            }
        )


# ---------------------------------------------------------------------------- activity requests


class SyncRequest(BaseModel):
    incident_id: str
    service: str
    release: str | None = None


class InvestigateRequest(BaseModel):
    incident_id: str
    worktree: Worktree
    error: ErrorInfo
    frames: list[Frame]


class DiagnoseRequest(BaseModel):
    incident_id: str
    severity: Severity
    worktree: Worktree
    error: ErrorInfo
    frames: list[Frame] = Field(default_factory=list)
    evidence: Evidence
    policy: ServicePolicy = Field(default_factory=ServicePolicy)
    attempt: int = Field(default=1, ge=1, description="Which try at a fix this is")
    failed_attempts: list[FixAttempt] = Field(
        default_factory=list, description="The earlier tries and why each failed"
    )
    tokens_used: int = Field(default=0, ge=0, description="Tokens the incident has spent so far")


class PatchRequest(BaseModel):
    incident_id: str
    worktree: Worktree
    edits: list[Edit]
    policy: ServicePolicy
    attempt: int = Field(default=1, ge=1)


class VerifyRequest(BaseModel):
    incident_id: str
    worktree: Worktree
    patch: PatchResult
    edits: list[Edit] = Field(
        default_factory=list,
        description="The edits the patch was made of: what is applied (remedy.git.diff."
        "edited_tree), since the stored diff is redacted for people",
    )
    error: ErrorInfo | None = None
    regression_test: RegressionTest | None = None
    attempt: int = Field(default=1, ge=1)


class SuiteBeforeRequest(BaseModel):
    """Run the service's suite at the incident's commit ahead of verification."""

    incident_id: str
    worktree: Worktree


class SuiteBeforeResult(BaseModel):
    status: Literal["ran", "reused", "skipped"]
    detail: str = Field(default="", description="Why it was skipped, or the run's outcome")


class ProposeRequest(BaseModel):
    incident: IncidentStatus


class WatchChangeRequest(BaseModel):
    """Look at the incident's change every `poll_s` until it is merged or closed, for at most
    `watch_s` (the fallback for a forge that sends no webhook, or one that was missed)."""

    incident_id: str
    service: str
    proposal: Proposal
    branch: str = Field(description="The service's branch the change must reach")
    watch_s: int = Field(ge=1)
    poll_s: int = Field(ge=1)


class ChangeState(BaseModel):
    state: Literal["open", "merged", "closed"]
    merge_commit: str | None = None


class ReleaseCheckRequest(BaseModel):
    """Whether the service's `release` contains `commit` (git merge-base --is-ancestor)."""

    service: str
    release: str = Field(min_length=1, max_length=RELEASE_MAX_LENGTH)
    commit: str


class ReleaseCheck(BaseModel):
    contains: bool | None = Field(description="None: the release is no commit of the repository")
    release_commit: str | None = None
    detail: str = ""


class FixCommentRequest(BaseModel):
    """Tell the change's reviewers that its fix did not hold (once per failed release)."""

    incident: IncidentStatus


class FixCommentResult(BaseModel):
    created: bool = Field(description="False: an earlier attempt already left this comment")
    url: str | None = Field(default=None, description="The comment (GitHub) or the note's file")


# ---------------------------------------------------------------------------- code index (issue 3)


class IndexRequest(BaseModel):
    """Bring the code index of `worktree`'s repository up to `worktree.commit`."""

    worktree: Worktree
    incident_id: str | None = None
    frames: list[Frame] = Field(
        default_factory=list,
        description="An incident's frames: a never-indexed repository indexes around them first",
    )
    complete: bool = Field(default=False, description="Index the whole tree, however cold")


class IndexResult(BaseModel):
    repo: str = Field(description="The repository's key in the index (its configured location)")
    commit: str
    files: int = Field(default=0, description="Files indexed at this commit")
    skipped_files: int = 0
    chunks: int = Field(default=0, description="Chunks present at this commit")
    embedded: int = Field(default=0, description="Chunks embedded by this run")
    reused: int = Field(default=0, description="Chunks whose vectors were already stored")
    deleted: int = Field(default=0, description="Chunks of the previous head gone at this commit")
    purged: int = Field(default=0, description="Points dropped with commits past retention")
    seconds: float = 0.0
    backend: str = ""
    complete: bool = Field(
        default=True, description="False: only an incident's focus files are indexed so far"
    )


class FullIndexRequest(BaseModel):
    """Complete an index an incident started with its focus files, off the incident's path."""

    index: IndexRequest
    task_queue: str | None = Field(default=None, description="Where index_repo runs")


class RelatedRequest(BaseModel):
    incident_id: str
    worktree: Worktree
    error: ErrorInfo
    frames: list[Frame] = Field(default_factory=list)
    limit: int = Field(default=8, ge=1, le=50)


class RelatedResult(BaseModel):
    related_code: list[RelatedCode] = Field(default_factory=list)
    similar_incidents: list[SimilarIncident] = Field(default_factory=list)
    frame_chunks: int = Field(default=0, description="Hits that are the frames' own code, left out")
    artifact: ArtifactRef | None = None
    index_commit: str | None = Field(default=None, description="The indexed commit searched")
    index_complete: bool = Field(
        default=True, description="False: that commit's index held only the focus files"
    )


class RecordIncidentRequest(BaseModel):
    """A closed incident, remembered so later incidents can list it as a similar one."""

    incident_id: str
    service: str
    fingerprint: str
    error: ErrorInfo
    frames: list[Frame] = Field(default_factory=list)
    summary: str = ""
    root_cause: str = ""
    outcome: str = Field(description="approved, rejected, expired, triaged, ...")
    reason: str | None = None
    patch: ArtifactRef | None = Field(default=None, description="The proposed diff, if any")


class RecordIncidentResult(BaseModel):
    incident_id: str
    point_id: str


# ---------------------------------------------------------------------------- diagnosis (issue 4)


class LLMUsage(BaseModel):
    """One backend's calls within one activity; the per-call detail is in the transcript."""

    backend: str
    model: str
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = Field(default=True, description="False: the model is not in [llm].prices")


AttemptOutcome = Literal[
    "accepted",
    "low_confidence",
    "invalid",
    "malformed",
    "abstained",
    "unavailable",
    "rate_limited",
    "token_cap",
]


class DiagnosisAttempt(BaseModel):
    """What one backend made of the incident (several when the route escalates or falls back)."""

    backend: str
    model: str
    outcome: AttemptOutcome
    detail: str = ""


class ToolCallSummary(BaseModel):
    name: str
    arguments: str = Field(default="", description="Shortened; the full call is in the transcript")
    ok: bool = True
    result_chars: int = 0


class RegressionTest(BaseModel):
    """A test the model wrote to reproduce the error; its text lives in the artifact store."""

    path: str
    content: ArtifactRef


class RegressionTestRequest(BaseModel):
    incident_id: str
    severity: Severity
    worktree: Worktree
    error: ErrorInfo
    frames: list[Frame] = Field(default_factory=list)
    evidence: Evidence
    diagnosis: Diagnosis
    backend: str | None = Field(default=None, description="Prefer the backend that diagnosed")
    tokens_used: int = Field(default=0, ge=0, description="Tokens the incident has spent so far")
    policy: ServicePolicy = Field(default_factory=ServicePolicy)
    attempt: int = Field(default=1, ge=1)


class RegressionTestResult(BaseModel):
    test: RegressionTest | None = None
    abstained_reason: str | None = None
    backend: str | None = None
    artifact: ArtifactRef | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    rate_limited: bool = False
    usage: list[LLMUsage] = Field(default_factory=list)


class CommandRun(BaseModel):
    """One sandboxed run of the test command."""

    label: str
    exit_code: int | None = None
    timed_out: bool = False
    signal: str | None = Field(default=None, description="e.g. SIGXCPU when a limit killed it")
    duration_s: float = 0.0
    passed: int | None = None
    failed: int | None = None
    failures: list[str] = Field(default_factory=list)
    log: ArtifactRef | None = None
    cached_from: str | None = Field(
        default=None, description="Reused, not run: the commit whose verification ran it"
    )
    ran_with: str | None = Field(
        default=None,
        description="Not run on its own: counted from this run (the suite after the patch, "
        "with the regression test in its tree)",
    )


# ---------------------------------------------------------------------- slack and github (issue 5)


class NotifyRequest(BaseModel):
    """The incident as it stands, for its one Slack message (posted once, then edited)."""

    incident: IncidentStatus
    raw_error: str = Field(
        default="",
        description="The error as the service reported it (traceback text); its tail is shown. "
        "Empty: 'type: message' from the incident",
    )
    kind: Literal["update", "reminder"] = Field(
        default="update",
        description="'update': edit the message, reply in its thread once per phase; "
        "'reminder': mention the approvers in the thread once per approval request",
    )


class NotifyResult(BaseModel):
    delivered: bool
    channel: str | None = Field(default=None, description="Slack channel id")
    ts: str | None = Field(default=None, description="The message's ts: its id within the channel")
    posted: bool = Field(default=False, description="This call created the message")
    replied: bool = Field(default=False, description="This call added a reply to its thread")
    reason: str | None = Field(default=None, description="Why nothing was delivered")


class OpenIssueRequest(BaseModel):
    incident: IncidentStatus
    raw_error: str = ""


class IssueResult(BaseModel):
    opened: bool = Field(description="An issue exists for the fingerprint (found or created)")
    created: bool = False
    number: int | None = None
    url: str | None = None
    reason: str | None = Field(default=None, description="Why no issue was opened")


# IncidentStart carries an IncidentStatus (a follow-up continued as new), defined after it.
IncidentStart.model_rebuild()
