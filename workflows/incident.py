"""IncidentWorkflow: one production error, from evidence to an approved change.

received -> syncing -> investigating -> diagnosing -> patching -> verifying
-> awaiting_approval -> opening_pr -> pr_opened, or a terminal phase on the way
(triaged, notified, rejected, expired, rate_limited, failed). After pr_opened it follows the
change: fix_merged -> fix_deployed -> fix_held, or fix_failed (a new incident opens, linked),
or fix_abandoned.

The workflow only orchestrates and keeps state. Activities are called by method reference
(`execute_activity_method`), so mypy checks every request and result type; each definition
carries its fixed name (remedy.names), under which test doubles register too.

It is the whole pipeline on one page on purpose (STYLE.md), so it runs past the usual module
length; the typed call helpers at the bottom take a fifth of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, overload

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeUpdate,
)
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.forge import LocalForge
    from activities.git import GitActivities
    from activities.github import GitHubActivities
    from activities.index import IndexActivities
    from activities.llm import DiagnosisActivities
    from activities.sandbox import SandboxActivities
    from activities.slack import SlackActivities
    from remedy import assurance, fix_follow, names, policy
    from remedy.models import (
        FOLLOWING_PHASES,
        ApprovalRequest,
        ChangeSignal,
        ChangeState,
        DecideRequest,
        DecideResult,
        Decision,
        DeploySignal,
        DiagnoseRequest,
        Evidence,
        FixAttempt,
        FixCommentRequest,
        FixFollowUp,
        FixRecurrence,
        FullIndexRequest,
        IncidentStart,
        IncidentStatus,
        IndexRequest,
        IndexResult,
        InvestigateRequest,
        NotifyRequest,
        OccurrenceSignal,
        OpenIssueRequest,
        PatchRequest,
        Phase,
        PhaseChange,
        ProposeRequest,
        RecordIncidentRequest,
        RegressionTestRequest,
        RelatedRequest,
        RelatedResult,
        ReleaseCheckRequest,
        SuiteBeforeRequest,
        SyncRequest,
        VerifyRequest,
        WatchChangeRequest,
        Worktree,
    )
    from remedy.render import temporal_ui
    from workflows.index import IndexWorkflow

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

# Every activity heartbeats while it runs (activities.progress.LivenessInterceptor, every 3 s),
# so a worker that dies is noticed in seconds and the activity retried on a live one: three
# missed beats, which bench/crash.py measures as the bulk of the recovery after a kill.
_ALIVE = timedelta(seconds=10)

# The scope check gained the execution-sensitive list and case-insensitive forbidden paths.
_PATCH_EXECUTION_SENSITIVE_SCOPE = "execution-sensitive-scope"

# Search attributes are sent when they change, not all six on every phase.
_PATCH_CHANGED_SEARCH_ATTRIBUTES = "upsert-changed-search-attributes"

# A never-indexed repository is indexed around the incident's frames first; the rest fills in
# through IndexWorkflow, started after the related-code search.
_PATCH_EVIDENCE_FIRST_INDEX = "evidence-first-index"

# An incident's run closes at its outcome, so the UI lists it as finished (a failed one as
# Failed); reports within the quiet window after that go to a recurrence run
# (IncidentStart.recurrence_of, started by the intake) instead of keeping this run open.
_PATCH_CLOSE_AT_OUTCOME = "close-at-outcome"

# A patch that does not apply or fails verification goes back to the model with the failure,
# up to ServicePolicy.max_fix_attempts tries; the fix carries its checked assurance.
_PATCH_REPAIR_LOOP = "repair-loop"

# The suite's "before" run starts at syncing, alongside the investigation, so verify_patch
# finds it finished instead of running it first (the first incident on a commit).
_PATCH_SUITE_BEFORE_EARLY = "suite-before-early"

# After pr_opened the run stays open and follows the change to merge, deploy and a quiet hold
# window (issue 13); runs from before it close at pr_opened.
_PATCH_FOLLOW_FIX = "follow-fix"

# The blame and the log of the failing lines need no code index: investigate runs while the
# index is brought to the commit, and only the related-code search waits for it.
_PATCH_INVESTIGATE_WHILE_INDEXING = "investigate-while-indexing"

# The forge is watched by an activity that asks every change_poll_s; it returns after this
# long so the workflow's history grows by a few events per watch, not per poll.
_WATCH_SPAN = timedelta(hours=6)
_WATCHER_ALIVE = timedelta(minutes=1)

_DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
)
# Side channels (Slack, issue trackers) and enrichments (code index, past incidents): a short
# retry, then the incident goes on without them.
_SIDE_CHANNEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, start: IncidentStart) -> None:
        info = workflow.info()
        now = workflow.now()
        self._start = start
        self._suite_before: asyncio.Task[None] | None = None
        self._change: ChangeSignal | None = None
        incident_id = names.incident_id_for(start.service, start.fingerprint, info.run_id)
        ui_url = (
            names.ui_run_url(start.ui_base_url, info.workflow_id, info.run_id)
            if start.ui_base_url
            else ""
        )
        self._status = IncidentStatus(
            incident_id=incident_id,
            workflow_id=info.workflow_id,
            service=start.service,
            fingerprint=start.fingerprint,
            phase=Phase.RECEIVED,
            severity=start.severity,
            error_type=start.event.error.type,
            error_message=start.event.error.message,
            occurrences=start.occurrences,
            first_seen=now,
            last_seen=now,
            release=start.event.release,
            ui_url=ui_url,
            history=[PhaseChange(phase=Phase.RECEIVED, at=now)],
        )
        if start.follow_up is not None:
            # The same incident, continued as new while it follows its change.
            self._status = start.follow_up
        if start.reopened_after is not None:
            self._status.reopened_after = start.reopened_after
        if start.recurrence_of is not None:
            earlier = start.recurrence_of
            self._status.recurrence_of = earlier.incident_id
            self._status.phase = earlier.phase
            self._status.reason = f"recurring after {earlier.incident_id} ended {earlier.phase}"
            self._status.history = [PhaseChange(phase=earlier.phase, at=now)]
        self._show_details()

    # ------------------------------------------------------------------ messages

    @workflow.query(name="status")
    def status(self) -> IncidentStatus:
        return self._status

    @workflow.signal(name="occurrence")
    def occurrence(self, signal: OccurrenceSignal) -> None:
        self._status.occurrences += signal.count
        self._status.last_seen = workflow.now()
        workflow.upsert_search_attributes(
            [names.SA_OCCURRENCES.value_set(self._status.occurrences)]
        )
        for release, count in signal.releases.items():
            self._hear_of_release(release, count)
        self._show_details()

    @workflow.signal(name="change")
    def change(self, signal: ChangeSignal) -> None:
        """The forge says the change was merged or closed (the GitHub webhook)."""
        self._change = signal

    @workflow.signal(name="deployed")
    def deployed(self, signal: DeploySignal) -> None:
        """A release of the service runs now; whether it holds the fix is checked in run."""
        self._hear_of_release(signal.release, 0)

    def _hear_of_release(self, release: str, reports: int) -> None:
        fix = self._status.fix
        if fix is not None and self._status.phase in FOLLOWING_PHASES:
            fix_follow.hear_of_release(fix, release, reports)

    @workflow.update(name="decide")
    def decide(self, request: DecideRequest) -> DecideResult:
        assert self._status.approval is not None  # guaranteed by the validator
        decision = Decision(
            decision=request.decision,
            approver=request.approver,
            reason=request.reason,
            at=workflow.now(),
        )
        self._status.approval.decision = decision
        return DecideResult(
            incident_id=self._status.incident_id, phase=self._status.phase, decision=decision
        )

    @decide.validator
    def _validate_decide(self, request: DecideRequest) -> None:
        refusal = policy.approval_refusal(self._status.phase, self._status.approval, request)
        if refusal:
            raise ApplicationError(refusal, type="DecisionRefused", non_retryable=True)

    # ------------------------------------------------------------------ the pipeline

    @workflow.run
    async def run(self, start: IncidentStart) -> IncidentStatus:
        self._upsert_search_attributes()
        if start.follow_up is not None:
            await self._follow_change()
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._status
        if start.recurrence_of is not None:
            # The incident already reached its outcome: this run only counts the reports
            # that keep coming, until a quiet window passes.
            await self._absorb_until_quiet()
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._status
        if start.notify_only:
            self._finish(Phase.NOTIFIED, f"severity {start.severity} is below the remediation bar")
        else:
            try:
                await self._remediate()
            except ActivityError as err:
                cause = err.cause if err.cause is not None else err
                self._finish(Phase.FAILED, f"{err.activity_type or 'activity'} failed: {cause}")
            finally:
                await self._settle_suite_before()
        await self._notify()
        await self._remember()
        if self._status.phase == Phase.PR_OPENED and workflow.patched(_PATCH_FOLLOW_FIX):
            workflow.upsert_search_attributes([names.SA_PR_OPENED_AT.value_set(workflow.now())])
            if start.policy.follow_fix_s > 0:
                await self._follow_change()
        if workflow.patched(_PATCH_CLOSE_AT_OUTCOME):
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._status.phase == Phase.FAILED:
                # Listed under Failed in the Temporal UI; the status query still answers.
                raise ApplicationError(
                    self._status.reason or "failed", type="IncidentFailed", non_retryable=True
                )
            return self._status
        await self._absorb_until_quiet()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _remediate(self) -> None:
        start = self._start
        status = self._status

        self._set_phase(Phase.SYNCING)
        worktree = await self._call(
            GitActivities.sync_repo,
            SyncRequest(
                incident_id=status.incident_id, service=start.service, release=start.event.release
            ),
            timeout=timedelta(minutes=15),
        )
        status.worktree = worktree
        if workflow.patched(_PATCH_SUITE_BEFORE_EARLY):
            self._suite_before = asyncio.create_task(self._run_suite_before(worktree))

        self._set_phase(Phase.INDEXING)
        subject = InvestigateRequest(
            incident_id=status.incident_id,
            worktree=worktree,
            error=start.event.error,
            frames=start.event.frames,
        )
        investigation = (
            asyncio.create_task(self._investigate(subject))
            if workflow.patched(_PATCH_INVESTIGATE_WHILE_INDEXING)
            else None
        )
        index_request = IndexRequest(
            worktree=worktree, incident_id=status.incident_id, frames=start.event.frames
        )
        indexed = await self._optional(
            IndexActivities.index_repo,
            index_request,
            timeout=timedelta(hours=1),
            task_queue=start.index_task_queue,
        )

        self._set_phase(Phase.INVESTIGATING)
        evidence = await (investigation or self._investigate(subject))
        if indexed is not None:
            related = await self._optional(
                IndexActivities.find_related,
                RelatedRequest(**subject.model_dump()),
                timeout=timedelta(minutes=5),
                task_queue=start.index_task_queue,
            )
            if related is not None:
                evidence = evidence.model_copy(
                    update={
                        "related_code": related.related_code,
                        "similar_incidents": related.similar_incidents,
                        "related_from": _related_from(related, indexed),
                    }
                )
            if not indexed.complete and workflow.patched(_PATCH_EVIDENCE_FIRST_INDEX):
                await self._complete_index(index_request)
        if start.reopened_after is not None:
            # The reviewer and the model both read first that a fix was tried and failed.
            note = start.reopened_after.note()
            evidence = evidence.model_copy(update={"summary": f"{note}. {evidence.summary}"})
        status.evidence = evidence
        await self._open_issue()

        # Replays of runs from before the repair loop take one try, as they did.
        tries = start.policy.max_fix_attempts if workflow.patched(_PATCH_REPAIR_LOOP) else 1
        for attempt in range(1, tries + 1):
            outcome = await self._try_fix(worktree, evidence, attempt, tries)
            if outcome == "ready":
                break
            if outcome == "ended":
                return
            status.fix_attempts.append(outcome)
            if attempt == tries:
                self._finish(Phase.TRIAGED, _failure_reason(outcome, tries))
                return

        decision = await self._await_decision()
        if decision is None:
            self._finish(Phase.EXPIRED, "no decision before the approval expired")
            return
        if decision.decision == "reject":
            self._finish(Phase.REJECTED, f"rejected by {decision.approver}: {decision.reason}")
            return

        self._set_phase(Phase.OPENING_PR)
        await self._notify()
        status.proposal = await self._call(
            GitHubActivities.open_pull_request
            if start.forge == "github"
            else LocalForge.propose_change,
            ProposeRequest(incident=status.digest(with_change=True)),
            timeout=timedelta(minutes=10),
        )
        self._finish(Phase.PR_OPENED, f"approved by {decision.approver}")

    async def _try_fix(
        self, worktree: Worktree, evidence: Evidence, attempt: int, tries: int
    ) -> FixAttempt | Literal["ready", "ended"]:
        """One try at a fix: diagnose, patch, verify. "ready" for approval; "ended" here (no
        diagnosis, out of scope, ...); or a FixAttempt: the patch did not apply or failed
        verification, which the next try is shown."""
        start = self._start
        status = self._status
        self._set_phase(Phase.DIAGNOSING, f"attempt {attempt} of {tries}" if attempt > 1 else "")
        status.diagnosis = await self._call(
            DiagnosisActivities.diagnose,
            DiagnoseRequest(
                incident_id=status.incident_id,
                severity=start.severity,
                worktree=worktree,
                error=start.event.error,
                frames=start.event.frames,
                evidence=evidence,
                policy=start.policy,
                attempt=attempt,
                failed_attempts=status.fix_attempts,
                tokens_used=status.llm_tokens,
            ),
            timeout=timedelta(minutes=20),
        )
        self._spend(status.diagnosis.tokens, status.diagnosis.cost_usd)
        diagnosis = status.diagnosis.diagnosis
        if status.diagnosis.rate_limited:
            self._finish(Phase.RATE_LIMITED, status.diagnosis.abstained_reason or "rate limited")
            return "ended"
        if diagnosis is None:
            self._finish(Phase.TRIAGED, status.diagnosis.abstained_reason or "no diagnosis")
            return "ended"
        if not diagnosis.edits:
            self._finish(Phase.TRIAGED, "the diagnosis proposes no safe change")
            return "ended"

        self._set_phase(Phase.PATCHING)
        violations = policy.scope_violations(
            diagnosis.edits,
            start.policy,
            start.service,
            built_in_rules=workflow.patched(_PATCH_EXECUTION_SENSITIVE_SCOPE),
        )
        if violations:
            self._finish(Phase.TRIAGED, "; ".join(violations))
            return "ended"
        status.patch = await self._call(
            GitActivities.prepare_patch,
            PatchRequest(
                incident_id=status.incident_id,
                worktree=worktree,
                edits=diagnosis.edits,
                policy=start.policy,
                attempt=attempt,
            ),
            timeout=timedelta(minutes=5),
        )
        if not status.patch.applied:
            if tries == 1:
                self._finish(Phase.TRIAGED, f"patch does not apply: {status.patch.reason}")
                return "ended"
            return FixAttempt(
                attempt=attempt,
                failure="not_applied",
                detail=status.patch.reason or "the patch does not apply",
                edits=diagnosis.edits,
                diagnosis=status.diagnosis.artifact,
            )
        too_big = policy.diff_size_violation(
            status.patch.lines_added, status.patch.lines_removed, start.policy.max_diff_lines
        )
        if too_big:
            self._finish(Phase.TRIAGED, too_big)
            return "ended"

        self._set_phase(Phase.VERIFYING)
        regression = await self._call(
            DiagnosisActivities.write_regression_test,
            RegressionTestRequest(
                incident_id=status.incident_id,
                severity=start.severity,
                worktree=worktree,
                error=start.event.error,
                frames=start.event.frames,
                evidence=evidence,
                diagnosis=diagnosis,
                backend=status.diagnosis.backend,
                tokens_used=status.llm_tokens,
                policy=start.policy,
                attempt=attempt,
            ),
            timeout=timedelta(minutes=20),
        )
        self._spend(regression.tokens, regression.cost_usd)
        status.verification = await self._call(
            SandboxActivities.verify_patch,
            VerifyRequest(
                incident_id=status.incident_id,
                worktree=worktree,
                patch=status.patch,
                edits=diagnosis.edits,
                error=start.event.error,
                regression_test=regression.test,
                attempt=attempt,
            ),
            # Up to four suite runs (before/after, suite/regression test) plus a clone.
            timeout=timedelta(hours=3),
        )
        if status.verification.status == "failed":
            if tries == 1:
                self._finish(
                    Phase.TRIAGED,
                    f"the patch fails verification: {status.verification.summary}",
                )
                return "ended"
            return FixAttempt(
                attempt=attempt,
                failure="verification_failed",
                detail=f"{status.verification.summary}\n{status.verification.output_tail}",
                edits=diagnosis.edits,
                diagnosis=status.diagnosis.artifact,
                verification=status.verification.artifact,
            )
        status.assurance = assurance.assess(
            diagnosis, evidence.frames, status.verification, attempt=attempt, max_attempts=tries
        )
        return "ready"

    async def _await_decision(self) -> Decision | None:
        timeout = timedelta(seconds=self._start.policy.approval_timeout_s)
        now = workflow.now()
        approval = ApprovalRequest(
            request_id=str(workflow.uuid4()),
            approvers=list(self._start.policy.approvers),
            requested_at=now,
            expires_at=now + timeout,
        )
        self._status.approval = approval
        self._set_phase(Phase.AWAITING_APPROVAL)
        await self._notify()
        # Halfway to expiry the approvers get one reminder in the incident's thread.
        for stage in ("reminder", "expiry"):
            try:
                await workflow.wait_condition(
                    lambda: approval.decision is not None,
                    timeout=timeout / 2,
                    timeout_summary=temporal_ui.wait_summary(f"approval {stage}", timeout / 2),
                )
                return approval.decision
            except TimeoutError:
                if stage == "reminder":
                    await self._notify(kind="reminder")
        return None

    async def _absorb_until_quiet(self) -> None:
        """Keep counting duplicates so a storm stays one incident.

        The run closes only after `quiet_window_s` without an occurrence, or when history
        grows large enough that Temporal suggests a new run; the next report then opens a new
        incident. (Runs started before close-at-outcome wait here after their outcome too.)
        """
        quiet = timedelta(seconds=self._start.policy.quiet_window_s)
        while quiet > timedelta(0):
            seen = self._status.occurrences

            def new_occurrence_or_full(seen: int = seen) -> bool:
                return (
                    self._status.occurrences != seen
                    or workflow.info().is_continue_as_new_suggested()
                )

            try:
                await workflow.wait_condition(
                    new_occurrence_or_full,
                    timeout=quiet,
                    timeout_summary=temporal_ui.wait_summary("closing when quiet", quiet),
                )
            except TimeoutError:
                return
            if workflow.info().is_continue_as_new_suggested():
                return

    async def _complete_index(self, request: IndexRequest) -> None:
        """The rest of a cold repository's index, as an abandoned child: it outlives the
        incident, and a second incident on the same commit finds it already running."""
        worktree = request.worktree
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                IndexWorkflow.run,
                FullIndexRequest(index=request, task_queue=self._start.index_task_queue),
                id=f"index-{worktree.service}-{worktree.commit[:12]}",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"full index of {worktree.service} at {worktree.commit[:12]}",
            )

    # ------------------------------------------------------------------ after pr_opened

    async def _follow_change(self) -> None:
        """Follow the opened change to its merge, a release that contains it and a quiet hold
        window; or to fix_failed (a new incident continues this workflow), fix_abandoned, or
        the end of follow_fix_s. Only signals and timers wake it; the forge is asked by a
        long watch activity, a few history events per _WATCH_SPAN."""
        status = self._status
        if status.fix is None:
            assert status.proposal is not None  # pr_opened has one
            status.fix = FixFollowUp(commit=status.proposal.commit, follow_until=self._follow_for())
        fix = status.fix
        watch: asyncio.Task[ChangeState] | None = None
        watching = True
        try:
            while status.phase in FOLLOWING_PHASES:
                phase = status.phase
                await self._check_releases(fix)
                if self._change is not None:
                    self._apply_change(self._change)
                    self._change = None
                if watch is not None and watch.done():
                    watching = self._apply_watch(watch)
                    watch = None
                if status.phase != Phase.PR_OPENED and watch is not None:
                    await _cancel(watch)  # merged: nothing more to ask the forge
                    watch = None
                if status.phase != phase:
                    await self._notify()
                if fix.failed_release is not None:
                    await self._fix_failed(fix)  # continues as new: a new incident
                if status.phase not in FOLLOWING_PHASES:  # abandoned
                    await self._remember()
                    return
                if status.phase == Phase.PR_OPENED and watch is None and watching:
                    watch = asyncio.create_task(self._watch_change())
                if workflow.info().is_continue_as_new_suggested():
                    if watch is not None:
                        await _cancel(watch)
                        watch = None
                    if self._change is None:  # one heard meanwhile is applied first
                        await self._continue_following()
                    continue
                deadline = fix.hold_until if status.phase == Phase.FIX_DEPLOYED else None
                deadline = deadline or fix.follow_until
                if workflow.now() >= deadline:
                    await self._stop_following(fix)
                    return
                await self._wait_for_news(fix, watch, deadline)
        finally:
            if watch is not None:
                await _cancel(watch)

    def _follow_for(self) -> datetime:
        return workflow.now() + timedelta(seconds=self._start.policy.follow_fix_s)

    async def _wait_for_news(
        self, fix: FixFollowUp, watch: asyncio.Task[ChangeState] | None, deadline: datetime
    ) -> None:
        def news() -> bool:
            return (
                self._change is not None
                or bool(fix.releases_to_check)
                or fix.failed_release is not None
                or (watch is not None and watch.done())
                or workflow.info().is_continue_as_new_suggested()
            )

        waiting = deadline - workflow.now()
        what = "hold window" if self._status.phase == Phase.FIX_DEPLOYED else "following the fix"
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                news, timeout=waiting, timeout_summary=temporal_ui.wait_summary(what, waiting)
            )

    async def _watch_change(self) -> ChangeState:
        """Ask the forge until the change is merged or closed, for one _WATCH_SPAN."""
        status = self._status
        assert status.proposal is not None
        watcher = (
            GitHubActivities.watch_pull_request
            if self._start.forge == "github"
            else LocalForge.watch_branch
        )
        return await workflow.execute_activity_method(
            watcher,
            WatchChangeRequest(
                incident_id=status.incident_id,
                service=status.service,
                proposal=status.proposal,
                branch=status.worktree.branch if status.worktree else "",
                watch_s=int(_WATCH_SPAN.total_seconds()),
                poll_s=self._start.policy.change_poll_s,
            ),
            start_to_close_timeout=_WATCH_SPAN + timedelta(minutes=10),
            # Beats are throttled to most of this: days of watching cost few calls.
            heartbeat_timeout=_WATCHER_ALIVE,
            retry_policy=_SIDE_CHANNEL_RETRY,
            summary=temporal_ui.step_summary(watcher.__name__, status),
        )

    def _apply_watch(self, watch: asyncio.Task[ChangeState]) -> bool:
        """The watch's answer as a change; False when the forge cannot be watched (the webhook
        and the releases still move the incident)."""
        try:
            state = watch.result()
        except ActivityError as err:
            workflow.logger.warning(
                "watching the change of %s failed: %s", self._status.incident_id, err.cause
            )
            return False
        if state.state != "open":
            self._apply_change(
                ChangeSignal(state=state.state, merge_commit=state.merge_commit, source="poll")
            )
        return True

    def _apply_change(self, change: ChangeSignal) -> None:
        """Merged or closed, once: a late webhook after the poll (or a release) changes nothing."""
        fix = self._status.fix
        if fix is None or self._status.phase != Phase.PR_OPENED:
            return
        if change.state == "closed":
            self._finish(
                Phase.FIX_ABANDONED, f"the change was closed without a merge ({change.source})"
            )
            return
        fix.merged_at = workflow.now()
        fix.merged_by = change.source
        if change.merge_commit is not None and change.merge_commit != fix.commit:
            # A squash or rebase merge: releases hold this commit, not the branch's.
            fix.commit = change.merge_commit
            fix.releases_seen.clear()
        fix.follow_until = self._follow_for()
        self._finish(Phase.FIX_MERGED, f"merged as {fix.commit[:12]} ({change.source})")

    async def _check_releases(self, fix: FixFollowUp) -> None:
        """Whether each release heard of holds the fix: the first that does deploys it; a
        report of the error from one fails it; reports from the others are stale."""
        while fix.releases_to_check and fix.failed_release is None:
            release = next(iter(fix.releases_to_check))
            checked = await self._optional(
                GitActivities.release_contains,
                ReleaseCheckRequest(
                    service=self._status.service, release=release, commit=fix.commit
                ),
                timeout=timedelta(minutes=10),
            )
            contains = None if checked is None else checked.contains is True
            holds = fix_follow.settle_check(fix, release, contains)
            if holds and self._status.phase in (Phase.PR_OPENED, Phase.FIX_MERGED):
                self._deploy(fix, release)

    def _deploy(self, fix: FixFollowUp, release: str) -> None:
        now = workflow.now()
        if fix.merged_at is None:
            fix.merged_at, fix.merged_by = now, "release"
        fix.deployed_release, fix.deployed_at = release, now
        fix.hold_until = now + timedelta(seconds=self._start.policy.hold_window_s)
        self._finish(Phase.FIX_DEPLOYED, f"{release} runs fix {fix.commit[:12]}")

    async def _stop_following(self, fix: FixFollowUp) -> None:
        status = self._status
        if status.phase == Phase.FIX_DEPLOYED:
            window = fix_follow.duration_text(self._start.policy.hold_window_s)
            stale = f"; {fix.stale_reports} from releases without it" if fix.stale_reports else ""
            self._finish(
                Phase.FIX_HELD,
                f"no report of the error from a release with fix {fix.commit[:12]} for "
                f"{window}{stale}",
            )
        else:
            waited = "a merge" if status.phase == Phase.PR_OPENED else "a release with the fix"
            followed = fix_follow.duration_text(self._start.policy.follow_fix_s)
            status.reason = f"stopped following the change after {followed} without {waited}"
            self._show_details()
        await self._notify()
        await self._remember()

    async def _fix_failed(self, fix: FixFollowUp) -> None:
        """The error came back from a release with the fix: say so on the change and in Slack,
        then continue as a new incident that knows what was tried."""
        status = self._status
        release = fix.failed_release
        assert release is not None
        self._finish(
            Phase.FIX_FAILED,
            f"the error came back in {release}, which contains fix {fix.commit[:12]} "
            f"({fix.recurrences} reports); a new incident opens",
        )
        await self._optional(
            GitHubActivities.comment_on_pull_request
            if self._start.forge == "github"
            else LocalForge.note_on_change,
            FixCommentRequest(incident=status.digest()),
            timeout=timedelta(minutes=2),
        )
        await self._notify()
        await self._remember()
        await workflow.wait_condition(workflow.all_handlers_finished)
        start = self._start
        reopened = start.model_copy(
            update={
                "event": start.event.model_copy(update={"release": release}),
                "occurrences": max(fix.recurrences, 1),
                "reopened_after": FixRecurrence(
                    incident_id=status.incident_id,
                    fix_commit=fix.commit,
                    release=release,
                    pr_url=status.proposal.pr_url if status.proposal else None,
                ),
                "recurrence_of": None,
                "follow_up": None,
            }
        )
        workflow.continue_as_new(
            reopened,
            memo={names.MEMO_INCIDENT_ID: ""},
            search_attributes=temporal_ui.initial_search_attributes(reopened),
        )

    async def _continue_following(self) -> None:
        """The same incident in a fresh run: weeks of following keep the history short."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            self._start.model_copy(update={"follow_up": self._status}),
            memo={names.MEMO_INCIDENT_ID: self._status.incident_id},
            search_attributes=workflow.info().typed_search_attributes,
        )

    # ------------------------------------------------------------------ side channels

    async def _notify(self, kind: str = "update") -> None:
        """Post or edit the incident's Slack message. A chat outage never fails the incident."""
        request = NotifyRequest(
            incident=self._status.digest(), raw_error=self._raw_error(), kind=kind
        )
        await self._optional(SlackActivities.notify, request, timeout=timedelta(minutes=1))

    async def _open_issue(self) -> None:
        """One tracking issue per fingerprint for severities configured to get one."""
        request = OpenIssueRequest(incident=self._status.digest(), raw_error=self._raw_error())
        await self._optional(GitHubActivities.open_issue, request, timeout=timedelta(minutes=2))

    async def _remember(self) -> None:
        """Closed incidents feed the past-incidents index that later evidence draws on."""
        status = self._status
        if status.phase in {Phase.NOTIFIED, Phase.FAILED} or status.evidence is None:
            return
        found = status.diagnosis.diagnosis if status.diagnosis else None
        await self._optional(
            IndexActivities.record_incident,
            RecordIncidentRequest(
                incident_id=status.incident_id,
                service=status.service,
                fingerprint=status.fingerprint,
                error=self._start.event.error,
                frames=self._start.event.frames,
                summary=found.summary if found else status.evidence.summary,
                root_cause=found.root_cause if found else "",
                outcome=status.phase.value,
                reason=status.reason,
                patch=status.patch.diff if status.patch else None,
            ),
            timeout=timedelta(minutes=5),
            task_queue=self._start.index_task_queue,
        )

    def _raw_error(self) -> str:
        # The tail is what people read first in Slack; the event was redacted at intake.
        error = self._start.event.error
        return (self._start.event.traceback or f"{error.type}: {error.message}")[-4000:]

    # ------------------------------------------------------------------ helpers

    @overload
    async def _optional(
        self,
        activity: Callable[[Any, RequestT], Awaitable[ResultT]],
        request: RequestT,
        *,
        timeout: timedelta,
        task_queue: str | None = None,
    ) -> ResultT | None: ...

    @overload
    async def _optional(
        self,
        activity: Callable[[Any, RequestT], ResultT],
        request: RequestT,
        *,
        timeout: timedelta,
        task_queue: str | None = None,
    ) -> ResultT | None: ...

    async def _optional(
        self,
        activity: Callable[[Any, RequestT], Any],
        request: RequestT,
        *,
        timeout: timedelta,
        task_queue: str | None = None,
    ) -> Any:
        """An enrichment (code index, past incidents): its failure narrows the evidence, it
        never fails the incident."""
        try:
            return await self._call(
                activity,
                request,
                timeout=timeout,
                retry=_SIDE_CHANNEL_RETRY,
                task_queue=task_queue,
            )
        except ActivityError as err:
            workflow.logger.warning(
                "%s failed for %s: %s", err.activity_type, self._status.incident_id, err.cause
            )
            return None

    @overload
    async def _call(
        self,
        activity: Callable[[Any, RequestT], Awaitable[ResultT]],
        request: RequestT,
        *,
        timeout: timedelta,
        retry: RetryPolicy = _DEFAULT_RETRY,
        task_queue: str | None = None,
    ) -> ResultT: ...

    @overload
    async def _call(
        self,
        activity: Callable[[Any, RequestT], ResultT],
        request: RequestT,
        *,
        timeout: timedelta,
        retry: RetryPolicy = _DEFAULT_RETRY,
        task_queue: str | None = None,
    ) -> ResultT: ...

    async def _call(
        self,
        activity: Callable[[Any, RequestT], Any],
        request: RequestT,
        *,
        timeout: timedelta,
        retry: RetryPolicy = _DEFAULT_RETRY,
        task_queue: str | None = None,
    ) -> Any:
        return await workflow.execute_activity_method(
            activity,
            request,
            start_to_close_timeout=timeout,
            heartbeat_timeout=_ALIVE,
            retry_policy=retry,
            task_queue=task_queue,
            summary=temporal_ui.step_summary(activity.__name__, self._status),
        )

    async def _investigate(self, subject: InvestigateRequest) -> Evidence:
        return await self._call(GitActivities.investigate, subject, timeout=timedelta(minutes=5))

    async def _run_suite_before(self, worktree: Worktree) -> None:
        """The early suite run is only ever a head start: its failure is no failure of the
        incident, which verifies without it."""
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity_method(
                SandboxActivities.run_suite_before,
                SuiteBeforeRequest(incident_id=self._status.incident_id, worktree=worktree),
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=_ALIVE,
                retry_policy=_SIDE_CHANNEL_RETRY,
                summary=temporal_ui.step_summary("run_suite_before", self._status),
            )

    async def _settle_suite_before(self) -> None:
        """Cancel the early suite run if the incident ended before it did."""
        task = self._suite_before
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _spend(self, tokens: int, cost_usd: float) -> None:
        self._status.llm_tokens += tokens
        self._status.llm_cost_usd = round(self._status.llm_cost_usd + cost_usd, 6)

    def _set_phase(self, phase: Phase, note: str = "") -> None:
        self._status.phase = phase
        self._status.history.append(PhaseChange(phase=phase, at=workflow.now(), note=note))
        self._upsert_search_attributes()
        self._show_details()

    def _show_details(self) -> None:
        # What the Temporal UI's detail page shows as the incident's current state.
        workflow.set_current_details(temporal_ui.current_details(self._status, self._start))

    def _finish(self, phase: Phase, reason: str) -> None:
        self._status.reason = reason
        self._set_phase(phase, reason)

    def _upsert_search_attributes(self) -> None:
        """Send Temporal the search attributes that differ from what it already holds."""
        status = self._status
        current: list[SearchAttributeUpdate[Any]] = [
            names.SA_SERVICE.value_set(status.service),
            names.SA_PHASE.value_set(status.phase.value),
            names.SA_SEVERITY.value_set(status.severity.value),
            names.SA_ERROR_TYPE.value_set(status.error_type),
            names.SA_FINGERPRINT.value_set(status.fingerprint),
            names.SA_OCCURRENCES.value_set(status.occurrences),
        ]
        if not workflow.patched(_PATCH_CHANGED_SEARCH_ATTRIBUTES):
            # Histories from before the patch upserted all six on every phase change.
            workflow.upsert_search_attributes(current)
            return
        held = workflow.info().typed_search_attributes
        changed = [update for update in current if held.get(update.key) != update.value]
        if changed:
            workflow.upsert_search_attributes(changed)


async def _cancel(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ActivityError):
        await task


def _failure_reason(failed: FixAttempt, tries: int) -> str:
    what = (
        "the patch does not apply"
        if failed.failure == "not_applied"
        else "the patch fails verification"
    )
    return f"{what} after {tries} tries; last: {failed.detail}"


def _related_from(related: RelatedResult, indexed: IndexResult) -> str:
    commit = (related.index_commit or indexed.commit)[:12]
    if related.index_complete:
        return f"the code index at {commit}"
    return (
        f"the code index at {commit}, focus files only ({indexed.files} files; the rest is "
        "filling in)"
    )
