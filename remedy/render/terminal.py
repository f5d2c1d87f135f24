"""Incidents as plain text for the terminal (`remedy incidents show|list`, `remedy demo`).

Error text, repository content and model output are someone else's words: every such string
goes through `remedy.render.sanitize.visible` here, so no escape sequence, carriage return or
bidi override reaches the terminal and rewrites what a reviewer reads. The output is plain
text (no rich markup), so brackets in it stay brackets.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from remedy.assurance import FIX_FAILURE_TEXT, headline
from remedy.models import IncidentStatus, Phase
from remedy.render.sanitize import one_line, visible
from remedy.review import Excerpt, IncidentReview, SourceWindow


def _line(text: str | None) -> str:
    """Untrusted text on one line."""
    return one_line(visible(text or ""))


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def render_status(status: IncidentStatus, review: IncidentReview | None = None) -> str:
    """The incident; with `review`, the change itself follows (what an approver approves)."""
    lines = [
        f"incident   {status.incident_id}",
        f"service    {status.service}   severity {status.severity}   phase {status.phase}",
        f"error      {_line(status.error_type)}: {_line(status.error_message)}",
        f"seen       {status.occurrences}x, first {status.first_seen:%Y-%m-%d %H:%M:%S}, "
        f"last {status.last_seen:%Y-%m-%d %H:%M:%S}",
    ]
    if status.worktree:
        lines.append(f"commit     {status.worktree.commit} ({status.worktree.commit_source})")
    if status.reason:
        lines.append(f"outcome    {_line(status.reason)}")
    evidence = status.evidence
    if evidence:
        lines.append(f"evidence   {_line(evidence.summary)}")
        for frame in evidence.frames:
            where = f"{frame.path}:{frame.line}" if frame.line else frame.path
            lines.append(f"  frame    {_line(where)} in {_line(frame.function or '?')}")
        for commit in evidence.suspect_commits:
            lines.append(
                f"  suspect  {commit.sha[:10]} {_line(commit.subject)!r} by "
                f"{_line(commit.author)} ({_line(commit.date)}) - {_line(commit.reason)}"
            )
        for related in evidence.related_code:
            lines.append(
                f"  related  {_line(related.path)}:{related.start_line}-{related.end_line} "
                f"{_line(related.symbol)} ({related.score:.2f})"
            )
        for past in evidence.similar_incidents:
            lines.append(
                f"  similar  {past.incident_id} [{_line(past.outcome)}] {_line(past.summary)}"
            )
    if status.diagnosis:
        found = status.diagnosis.diagnosis
        if found:
            lines.append(
                f"diagnosis  {_line(found.root_cause)} (confidence {found.confidence:.2f})"
            )
        elif status.diagnosis.abstained_reason:
            lines.append(f"diagnosis  none: {_line(status.diagnosis.abstained_reason)}")
    if status.patch and status.patch.applied:
        lines.append(
            f"patch      {_line(', '.join(status.patch.files))} "
            f"(+{status.patch.lines_added} -{status.patch.lines_removed})"
        )
        if sensitive := status.patch.execution_sensitive:
            lines.append(
                f"  warning  edits execution-sensitive {_line(', '.join(sensitive))} "
                f"(allowed by services.{status.service}.allow_execution_sensitive_paths)"
            )
    for attempt in status.fix_attempts:
        lines.append(
            f"try {attempt.attempt}      the patch {FIX_FAILURE_TEXT[attempt.failure]}: "
            f"{_line(attempt.detail)}"
        )
    if status.verification:
        lines.append(
            f"verified   {status.verification.status}: {_line(status.verification.summary)}"
        )
    if status.assurance and status.patch and status.patch.applied:
        lines.append(f"checked    {_line(headline(status.assurance))}")
    if status.approval:
        approval = status.approval
        if approval.decision:
            lines.append(
                f"decision   {approval.decision.decision} by {_line(approval.decision.approver)}"
                + (f": {_line(approval.decision.reason)}" if approval.decision.reason else "")
            )
        else:
            approvers = ", ".join(approval.approvers) or "(none configured)"
            lines.append(
                f"approval   awaiting one of {_line(approvers)} "
                f"until {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            )
    if status.proposal:
        target = status.proposal.pr_url or f"{status.proposal.remote} {status.proposal.branch}"
        lines.append(f"proposal   {_line(status.proposal.title)} -> {_line(target)}")
    lines += _fix_lines(status)
    if status.ui_url:
        lines.append(f"ui         {status.ui_url}")
    if review is not None:
        lines += _review_lines(review)
    return "\n".join(lines)


def _fix_lines(status: IncidentStatus) -> list[str]:
    """How far the change got after pr_opened, and the incident a failed fix reopened."""
    lines: list[str] = []
    if status.reopened_after is not None:
        earlier = status.reopened_after
        lines.append(f"reopened   {_line(earlier.note())} (incident {earlier.incident_id})")
    fix = status.fix
    if fix is None:
        return lines
    if fix.merged_at is not None:
        lines.append(
            f"merged     {fix.commit[:12]} at {fix.merged_at:%Y-%m-%d %H:%M:%S} ({fix.merged_by})"
        )
    if fix.deployed_release is not None and fix.deployed_at is not None:
        lines.append(
            f"deployed   {_line(fix.deployed_release)} at {fix.deployed_at:%Y-%m-%d %H:%M:%S}"
        )
    if fix.hold_until is not None and status.phase == Phase.FIX_DEPLOYED:
        lines.append(f"holds      if quiet until {fix.hold_until:%Y-%m-%d %H:%M:%S} UTC")
    elif status.phase in (Phase.PR_OPENED, Phase.FIX_MERGED):
        lines.append(f"following  until {fix.follow_until:%Y-%m-%d %H:%M:%S} UTC")
    if fix.stale_reports:
        lines.append(f"stale      {fix.stale_reports} reports from releases without the fix")
    return lines


def _section(title: str, excerpt: Excerpt) -> list[str]:
    if excerpt.text is None:
        return ["", f"--- {title}: {_line(excerpt.missing) or 'not available'}"]
    return ["", f"--- {title}", visible(excerpt.text).rstrip("\n")]


def _source_lines(source: SourceWindow) -> list[str]:
    if not source.lines:
        return ["", f"--- code around the failing frame: {_line(source.missing)}"]
    where = f"{source.path}:{source.line}" if source.line else source.path
    lines = ["", f"--- code around {_line(where)} in {_line(source.function or '?')}"]
    digits = len(str(source.lines[-1].line))
    for entry in source.lines:
        mark = ">" if entry.line == source.line else " "
        lines.append(f"{mark} {entry.line:>{digits}} | {visible(entry.text).rstrip()}")
    return lines


def _review_lines(review: IncidentReview) -> list[str]:
    lines = _source_lines(review.source)
    lines += _section("diff (what approving pushes)", review.diff)
    test = review.regression_test
    lines += _section(f"regression test {_line(test.path)}".rstrip(), test)
    for run in review.verification_output:
        code = "" if run.exit_code is None else f", exit {run.exit_code}"
        lines += _section(f"verification output: {_line(run.label)}{code} (tail)", run)
    return lines


class ListedIncident(Protocol):
    """One row of `remedy incidents list` (starter.incidents.IncidentSummary)."""

    @property
    def incident_id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def error_type(self) -> str: ...
    @property
    def error_message(self) -> str: ...
    @property
    def culprit(self) -> str: ...
    @property
    def occurrences(self) -> int: ...
    @property
    def started(self) -> datetime | None: ...


def render_incident_list(incidents: Sequence[ListedIncident], width: int = 80) -> str:
    """Each incident's id whole at the start of its line (the value to copy), its phase
    beside it when that fits, then its error and details wrapped to `width`."""
    if not incidents:
        return "no incidents"
    width = max(width, 40)
    out: list[str] = []
    for item in incidents:
        head = f"{item.incident_id}  {item.phase}"
        details = [item.service, item.severity, f"{item.occurrences}x"]
        if len(head) > width:
            head = item.incident_id
            details.insert(0, item.phase)
        if item.started:
            details.append(f"since {item.started:%Y-%m-%d %H:%M}")
        if item.culprit:
            details.append(f"at {_line(item.culprit)}")
        error = _line(item.error_type)
        if item.error_message:
            error += f": {_line(item.error_message)}"
        out.append(head)
        out.append("  " + _shorten(error, width - 2))
        out += textwrap.wrap(
            "  ".join(part for part in details if part),
            width,
            initial_indent="  ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    return "\n".join(out)
