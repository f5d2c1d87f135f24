"""Driving IncidentWorkflow in tests: fake activities under the real names, polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from remedy import names
from remedy.models import (
    FOLLOWING_PHASES,
    TERMINAL_PHASES,
    ChangeState,
    DiagnoseRequest,
    Diagnosis,
    DiagnosisResult,
    Edit,
    ErrorEvent,
    ErrorInfo,
    Evidence,
    FixCommentRequest,
    FixCommentResult,
    Frame,
    FrameEvidence,
    IncidentStart,
    IncidentStatus,
    IndexRequest,
    IndexResult,
    InvestigateRequest,
    IssueResult,
    NotifyRequest,
    NotifyResult,
    OpenIssueRequest,
    PatchRequest,
    PatchResult,
    Phase,
    Proposal,
    ProposeRequest,
    RecordIncidentRequest,
    RecordIncidentResult,
    RegressionTestRequest,
    RegressionTestResult,
    RelatedCode,
    RelatedRequest,
    RelatedResult,
    ReleaseCheck,
    ReleaseCheckRequest,
    SuiteBeforeRequest,
    SuiteBeforeResult,
    SuspectCommit,
    SyncRequest,
    VerificationResult,
    VerifyRequest,
    WatchChangeRequest,
    Worktree,
)
from remedy.render import temporal_ui
from remedy.service_policy import ServicePolicy, Severity
from workflows.incident import IncidentWorkflow

APPROVER = "U024BE7LH"
TEST_EXECUTION_TIMEOUT = timedelta(minutes=3)


def make_start(
    *,
    service: str = "shop",
    fingerprint: str | None = None,
    approvers: Sequence[str] = (APPROVER,),
    approval_timeout_s: int = 3600,
    quiet_window_s: int = 0,
    notify_only: bool = False,
    allowed_paths: Sequence[str] = ("app/**",),
    forbidden_paths: Sequence[str] = ("**/auth/**",),
    follow_fix_s: int = 0,
    hold_window_s: int = 7 * 86_400,
    forge: Literal["local", "github"] = "local",
) -> IncidentStart:
    return IncidentStart(
        service=service,
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
        severity=Severity.HIGH,
        notify_only=notify_only,
        event=ErrorEvent(
            service=service,
            release="0" * 40,
            error=ErrorInfo(type="KeyError", message="'sku'"),
            frames=[Frame(file="app/cart.py", line=2, function="total", in_app=True)],
        ),
        policy=ServicePolicy(
            approvers=list(approvers),
            allowed_paths=list(allowed_paths),
            forbidden_paths=list(forbidden_paths),
            approval_timeout_s=approval_timeout_s,
            quiet_window_s=quiet_window_s,
            follow_fix_s=follow_fix_s,
            hold_window_s=hold_window_s,
        ),
        forge=forge,
        ui_base_url="http://127.0.0.1:8233/namespaces/default",
    )


def fix_diagnosis(*edits: Edit) -> Diagnosis:
    return Diagnosis(
        summary="KeyError on a missing sku",
        root_cause="total() indexes 'sku' that old orders lack",
        confidence=0.9,
        edits=list(edits)
        or [Edit(path="app/cart.py", search="order['sku']", replace="order.get('sku', 0)")],
    )


@dataclass
class FakeActivities:
    """Real activity definitions under the real names, with scripted results and call logs."""

    diagnosis: Diagnosis | None = None
    abstain_reason: str = "no LLM backend configured"
    verification: str = "passed"
    unapplied_patches: int = 0  # the first this many patches do not apply
    sync_error: ApplicationError | None = None
    index_complete: bool = True
    suite_before: str = "ran"  # "fails", or "runs on" until it is cancelled
    suite_before_requests: list[SuiteBeforeRequest] = field(default_factory=list)
    suite_before_cancelled: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    index_requests: list[IndexRequest] = field(default_factory=list)
    diagnose_requests: list[DiagnoseRequest] = field(default_factory=list)
    proposals: list[ProposeRequest] = field(default_factory=list)
    notifications: list[tuple[str, Phase]] = field(default_factory=list)
    recorded: list[RecordIncidentRequest] = field(default_factory=list)
    # After pr_opened: releases that hold any fix, what the forge's watch answers in turn
    # (none left: it watches until cancelled), and what was said on the change.
    releases_with_fix: set[str] = field(default_factory=set)
    release_checks: list[ReleaseCheckRequest] = field(default_factory=list)
    change_states: list[ChangeState] = field(default_factory=list)
    watches: list[WatchChangeRequest] = field(default_factory=list)
    comments: list[FixCommentRequest] = field(default_factory=list)
    # Set once investigate runs: an index_repo told to wait for it sees whether they overlap.
    investigating: asyncio.Event = field(default_factory=asyncio.Event)
    index_waits_for_investigate: bool = False
    index_saw_investigate: bool = False

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def all(self) -> list[Callable[..., Any]]:
        @activity.defn(name=names.ACTIVITY_SYNC_REPO)
        async def sync_repo(request: SyncRequest) -> Worktree:
            self._count("sync_repo")
            if self.sync_error is not None:
                raise self.sync_error
            return Worktree(
                service=request.service,
                path=f"/tmp/worktrees/{request.incident_id}",
                commit=request.release or "f" * 40,
                branch="main",
                commit_source="release",
            )

        @activity.defn(name=names.ACTIVITY_INVESTIGATE)
        async def investigate(request: InvestigateRequest) -> Evidence:
            self._count("investigate")
            self.investigating.set()
            return Evidence(
                summary="KeyError in app/cart.py:2 total()",
                frames=[FrameEvidence(path="app/cart.py", line=2, function="total")],
                suspect_commits=[
                    SuspectCommit(
                        sha="a" * 40, author="Bob", date="2026-11-18", subject="Add discounts"
                    )
                ],
            )

        @activity.defn(name=names.ACTIVITY_DIAGNOSE)
        async def diagnose(request: DiagnoseRequest) -> DiagnosisResult:
            self._count("diagnose")
            self.diagnose_requests.append(request)
            if self.diagnosis is None:
                return DiagnosisResult(abstained_reason=self.abstain_reason)
            return DiagnosisResult(diagnosis=self.diagnosis, backend="fake")

        @activity.defn(name=names.ACTIVITY_PREPARE_PATCH)
        async def prepare_patch(request: PatchRequest) -> PatchResult:
            self._count("prepare_patch")
            if self.calls["prepare_patch"] <= self.unapplied_patches:
                return PatchResult(applied=False, reason="search text not found")
            return PatchResult(
                applied=True, files=[e.path for e in request.edits], lines_added=1, lines_removed=1
            )

        @activity.defn(name=names.ACTIVITY_VERIFY_PATCH)
        async def verify_patch(request: VerifyRequest) -> VerificationResult:
            self._count("verify_patch")
            return VerificationResult(status=self.verification, summary="3 passed")  # type: ignore[arg-type]

        @activity.defn(name=names.ACTIVITY_RUN_SUITE_BEFORE)
        async def run_suite_before(request: SuiteBeforeRequest) -> SuiteBeforeResult:
            self._count("run_suite_before")
            self.suite_before_requests.append(request)
            if self.suite_before == "fails":
                raise ApplicationError("scripted: the suite could not start", non_retryable=True)
            if self.suite_before == "runs on":
                try:
                    while True:
                        activity.heartbeat()
                        await asyncio.sleep(0.1)
                except asyncio.CancelledError:
                    self.suite_before_cancelled = True
                    raise
            return SuiteBeforeResult(status="ran", detail="exit 0 in 0.1 s")

        @activity.defn(name=names.ACTIVITY_PROPOSE_CHANGE)
        async def propose_change(request: ProposeRequest) -> Proposal:
            self._count("propose_change")
            self.proposals.append(request)
            return Proposal(
                branch=names.branch_for(request.incident.incident_id),
                commit="c" * 40,
                title="fix(shop): KeyError in app/cart.py",
            )

        @activity.defn(name=names.ACTIVITY_INDEX_REPO)
        async def index_repo(request: IndexRequest) -> IndexResult:
            self._count("index_repo")
            self.index_requests.append(request)
            if self.index_waits_for_investigate:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.investigating.wait(), 5)
                self.index_saw_investigate = self.investigating.is_set()
            return IndexResult(
                repo=request.worktree.service,
                commit=request.worktree.commit,
                complete=request.complete or self.index_complete,
            )

        @activity.defn(name=names.ACTIVITY_FIND_RELATED)
        async def find_related(request: RelatedRequest) -> RelatedResult:
            self._count("find_related")
            return RelatedResult(
                related_code=[
                    RelatedCode(
                        path="app/pricing.py", symbol="price", start_line=1, end_line=9, score=0.8
                    )
                ],
                index_commit=request.worktree.commit,
                index_complete=self.index_complete,
            )

        @activity.defn(name=names.ACTIVITY_RECORD_INCIDENT)
        async def record_incident(request: RecordIncidentRequest) -> RecordIncidentResult:
            self._count("record_incident")
            self.recorded.append(request)
            return RecordIncidentResult(incident_id=request.incident_id, point_id="p1")

        @activity.defn(name=names.ACTIVITY_WRITE_REGRESSION_TEST)
        async def write_regression_test(request: RegressionTestRequest) -> RegressionTestResult:
            self._count("write_regression_test")
            return RegressionTestResult(abstained_reason="scripted: no regression test")

        @activity.defn(name=names.ACTIVITY_NOTIFY)
        async def notify(request: NotifyRequest) -> NotifyResult:
            self._count("notify")
            self.notifications.append((request.kind, request.incident.phase))
            return NotifyResult(delivered=False, reason="Slack is not configured")

        @activity.defn(name=names.ACTIVITY_OPEN_ISSUE)
        async def open_issue(request: OpenIssueRequest) -> IssueResult:
            self._count("open_issue")
            return IssueResult(opened=False, reason="no issue for this severity")

        @activity.defn(name=names.ACTIVITY_RELEASE_CONTAINS)
        async def release_contains(request: ReleaseCheckRequest) -> ReleaseCheck:
            self._count("release_contains")
            self.release_checks.append(request)
            return ReleaseCheck(
                contains=request.release in self.releases_with_fix, release_commit="d" * 40
            )

        async def watch(request: WatchChangeRequest) -> ChangeState:
            self.watches.append(request)
            if self.change_states:
                return self.change_states.pop(0)
            while True:  # until the workflow cancels it
                activity.heartbeat()
                await asyncio.sleep(0.1)

        @activity.defn(name=names.ACTIVITY_WATCH_BRANCH)
        async def watch_branch(request: WatchChangeRequest) -> ChangeState:
            self._count("watch_branch")
            return await watch(request)

        @activity.defn(name=names.ACTIVITY_WATCH_PULL_REQUEST)
        async def watch_pull_request(request: WatchChangeRequest) -> ChangeState:
            self._count("watch_pull_request")
            return await watch(request)

        @activity.defn(name=names.ACTIVITY_NOTE_ON_CHANGE)
        async def note_on_change(request: FixCommentRequest) -> FixCommentResult:
            self._count("note_on_change")
            self.comments.append(request)
            return FixCommentResult(created=True)

        @activity.defn(name=names.ACTIVITY_COMMENT_ON_PULL_REQUEST)
        async def comment_on_pull_request(request: FixCommentRequest) -> FixCommentResult:
            self._count("comment_on_pull_request")
            self.comments.append(request)
            return FixCommentResult(created=True, url="http://github.test/pull/1#comment")

        return [
            release_contains,
            watch_branch,
            watch_pull_request,
            note_on_change,
            comment_on_pull_request,
            sync_repo,
            investigate,
            diagnose,
            prepare_patch,
            index_repo,
            find_related,
            record_incident,
            write_regression_test,
            verify_patch,
            run_suite_before,
            propose_change,
            notify,
            open_issue,
        ]


async def start_incident(
    client: Client,
    task_queue: str,
    start: IncidentStart,
    execution_timeout: timedelta = TEST_EXECUTION_TIMEOUT,
) -> WorkflowHandle[IncidentWorkflow, IncidentStatus]:
    return await client.start_workflow(
        IncidentWorkflow.run,
        start,
        id=names.workflow_id_for(start.service, start.fingerprint),
        task_queue=task_queue,
        # A test incident that waits on something that never comes ends instead of lingering.
        execution_timeout=execution_timeout,
        # What the intake sets for the Temporal UI (starter.reporter), so tests see it too.
        static_summary=temporal_ui.incident_summary(start),
        static_details=temporal_ui.incident_details(start),
    )


async def finished(
    handle: WorkflowHandle[IncidentWorkflow, IncidentStatus], timeout_s: float = 30.0
) -> IncidentStatus:
    """The incident's final status; an incident still running after `timeout_s` fails the
    test with the phase it is stuck in (a broken rule shows up as a message, not a hang).
    A `failed` incident's run fails (the UI lists it under Failed): its status comes from the
    status query, which a closed run still answers."""
    try:
        return await asyncio.wait_for(handle.result(), timeout_s)
    except WorkflowFailureError as failure:
        status = await handle.query(IncidentWorkflow.status)
        assert status.phase == Phase.FAILED, f"the run failed in phase {status.phase}: {failure}"
        return status
    except TimeoutError:
        status = await handle.query(IncidentWorkflow.status)
        raise AssertionError(
            f"incident {status.incident_id} still in phase {status.phase} after {timeout_s:.0f}s"
            f" (reason: {status.reason})"
        ) from None


async def wait_for_phase(
    handle: WorkflowHandle[IncidentWorkflow, IncidentStatus],
    *phases: Phase,
    timeout_s: float = 30.0,
) -> IncidentStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await handle.query(IncidentWorkflow.status)
        if status.phase in phases:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"phase is {status.phase}, expected one of {phases}")
        await asyncio.sleep(0.1)


async def eventually(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def until_phase(
    read: Callable[[], Awaitable[IncidentStatus | None]],
    *phases: Phase,
    handle: WorkflowHandle[Any, Any] | None = None,
    stall_s: float = 60.0,
) -> IncidentStatus:
    """Poll an incident's status until it reaches one of `phases`.

    The wait scales with the work, not with luck: it fails when the incident ends anywhere
    else, or when nothing has moved for `stall_s`. Moving is a new phase, or, with `handle`,
    a longer history or a fresh activity heartbeat as the server sees them, so a worker too
    busy to answer status queries (a cold embedding model on a loaded machine) still counts
    as working while its activities beat.
    """
    moved_at = time.monotonic()
    seen: tuple[Any, ...] | None = None
    phase: Phase | None = None
    while True:
        status = await read()
        progress: tuple[Any, ...] = ()
        if status is not None:
            if status.phase in phases:
                return status
            if status.phase in TERMINAL_PHASES - FOLLOWING_PHASES:
                raise AssertionError(f"incident ended {status.phase}: {status.reason}")
            phase = status.phase
            progress = (status.phase, len(status.history))
        if handle is not None:
            progress += await _server_progress(handle)
        if progress and progress != seen:
            seen, moved_at = progress, time.monotonic()
        if time.monotonic() - moved_at > stall_s:
            where = f"phase {phase}" if phase else "no status"
            server = await _server_view(handle) if handle is not None else ""
            raise AssertionError(
                f"incident stuck in {where} for {stall_s:.0f}s, wanted {phases}{server}"
            )
        await asyncio.sleep(0.2)


async def _server_view(handle: WorkflowHandle[Any, Any]) -> str:
    described = (await handle.describe()).raw_description
    info = described.workflow_execution_info
    pending = [
        f"{a.activity_type.name} attempt {a.attempt} state {a.state} "
        f"last failure {a.last_failure.message!r}"
        for a in described.pending_activities
    ]
    return f"; server: status {info.status}, history {info.history_length}, pending {pending}"


async def _server_progress(handle: WorkflowHandle[Any, Any]) -> tuple[Any, ...]:
    described = (await handle.describe()).raw_description
    beats = [
        activity.last_heartbeat_time.ToNanoseconds()
        for activity in described.pending_activities
        if activity.HasField("last_heartbeat_time")
    ]
    return (described.workflow_execution_info.history_length, max(beats, default=0))


def now() -> datetime:
    return datetime.now(UTC)
