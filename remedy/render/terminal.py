"""An incident as plain text for the terminal (`remedy incidents show`, `remedy demo`)."""

from __future__ import annotations

from remedy.models import IncidentStatus


def render_status(status: IncidentStatus) -> str:
    lines = [
        f"incident   {status.incident_id}",
        f"service    {status.service}   severity {status.severity}   phase {status.phase}",
        f"error      {status.error_type}: {status.error_message}",
        f"seen       {status.occurrences}x, first {status.first_seen:%Y-%m-%d %H:%M:%S}, "
        f"last {status.last_seen:%Y-%m-%d %H:%M:%S}",
    ]
    if status.worktree:
        lines.append(f"commit     {status.worktree.commit} ({status.worktree.commit_source})")
    if status.reason:
        lines.append(f"outcome    {status.reason}")
    evidence = status.evidence
    if evidence:
        lines.append(f"evidence   {evidence.summary}")
        for frame in evidence.frames:
            where = f"{frame.path}:{frame.line}" if frame.line else frame.path
            lines.append(f"  frame    {where} in {frame.function or '?'}")
        for commit in evidence.suspect_commits:
            lines.append(
                f"  suspect  {commit.sha[:10]} {commit.subject!r} by {commit.author} "
                f"({commit.date}) - {commit.reason}"
            )
        for related in evidence.related_code:
            lines.append(
                f"  related  {related.path}:{related.start_line}-{related.end_line} "
                f"{related.symbol or ''} ({related.score:.2f})"
            )
        for past in evidence.similar_incidents:
            lines.append(f"  similar  {past.incident_id} [{past.outcome}] {past.summary}")
    if status.diagnosis:
        found = status.diagnosis.diagnosis
        if found:
            lines.append(f"diagnosis  {found.root_cause} (confidence {found.confidence:.2f})")
        elif status.diagnosis.abstained_reason:
            lines.append(f"diagnosis  none: {status.diagnosis.abstained_reason}")
    if status.patch and status.patch.applied:
        lines.append(
            f"patch      {', '.join(status.patch.files)} "
            f"(+{status.patch.lines_added} -{status.patch.lines_removed})"
        )
        if sensitive := status.patch.execution_sensitive:
            lines.append(
                f"  warning  edits execution-sensitive {', '.join(sensitive)} "
                f"(allowed by services.{status.service}.allow_execution_sensitive_paths)"
            )
    if status.verification:
        lines.append(f"verified   {status.verification.status}: {status.verification.summary}")
    if status.approval:
        approval = status.approval
        if approval.decision:
            lines.append(
                f"decision   {approval.decision.decision} by {approval.decision.approver}"
                + (f": {approval.decision.reason}" if approval.decision.reason else "")
            )
        else:
            approvers = ", ".join(approval.approvers) or "(none configured)"
            lines.append(
                f"approval   awaiting one of {approvers} "
                f"until {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            )
    if status.proposal:
        target = status.proposal.pr_url or f"{status.proposal.remote} {status.proposal.branch}"
        lines.append(f"proposal   {status.proposal.title} -> {target}")
    if status.ui_url:
        lines.append(f"ui         {status.ui_url}")
    return "\n".join(lines)
