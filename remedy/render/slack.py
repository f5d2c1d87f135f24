"""An incident's Slack message as Block Kit: the raw error first, then the incident's facts,
with Approve and Reject buttons while a decision is pending; and its thread replies.

Pure: the `notify` activity sends what this returns, the click listener parses the buttons it
made. Untrusted text (the error, model output, diffs, reasons) is escaped here and nowhere else,
and every string is redacted before it leaves, since diffs and model text can carry secrets the
intake never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from remedy.models import (
    ApprovalRequest,
    DiagnosisResult,
    Evidence,
    PatchResult,
    Phase,
    Proposal,
    Severity,
    VerificationResult,
)
from remedy.redact import redact_text

APPROVE_ACTION_ID = "remedy_approve"
REJECT_ACTION_ID = "remedy_reject"
DECISION_BLOCK_ID = "remedy_decision"
REJECT_VIEW_ID = "remedy_reject_reason"
REASON_INPUT_ID = "reason"

# Slack rejects a section whose text exceeds 3000 characters; escaping can only grow text.
_SECTION_LIMIT = 2900
_RAW_ERROR_LIMIT = 2400
_DIFF_LIMIT = 2400
_ENDED_WITH_REASON = (
    Phase.TRIAGED,
    Phase.NOTIFIED,
    Phase.FAILED,
    Phase.RATE_LIMITED,
    Phase.EXPIRED,
)

Blocks = list[dict[str, Any]]


class SlackIncident(Protocol):
    """The incident facts the message shows (IncidentStatus has them, and more)."""

    incident_id: str
    service: str
    phase: Phase
    severity: Severity
    error_type: str
    error_message: str
    occurrences: int
    reason: str | None
    ui_url: str
    evidence: Evidence | None
    diagnosis: DiagnosisResult | None
    patch: PatchResult | None
    verification: VerificationResult | None
    approval: ApprovalRequest | None
    proposal: Proposal | None


# ---------------------------------------------------------------------------- text pieces


def escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _scrub(value: Any) -> Any:
    """Every string of a message redacted, however deep in the blocks it sits."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item) for item in value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    return value


def _clip(text: str, limit: int = _SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text)}]}


def _date(moment: datetime) -> str:
    """A date every reader sees in their own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _link(url: str, label: str) -> str:
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"


def _mentions(user_ids: list[str]) -> str:
    return ", ".join(f"<@{user}>" for user in user_ids) or "nobody (no approvers configured)"


def _phase_label(phase: Phase) -> str:
    return phase.value.replace("_", " ").capitalize()


# ---------------------------------------------------------------------------- buttons


def button_value(incident_id: str, request_id: str) -> str:
    """What a button carries: which incident and which approval request, never a secret."""
    return json.dumps({"incident_id": incident_id, "request_id": request_id})


def parse_button_value(value: str) -> tuple[str, str]:
    """(incident id, request id) from a button's value; ValueError when it is not one of ours."""
    try:
        data = json.loads(value)
        return str(data["incident_id"]), str(data["request_id"])
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"button value {value[:80]!r} is not a Remedy decision button") from None


def decision_note(decision: Literal["approve", "reject"], approver: str, reason: str | None) -> str:
    """Who decided what, and why: on the message and in the click's instant feedback."""
    verb = "Approved" if decision == "approve" else "Rejected"
    why = f": {escape(reason)}" if reason else ""
    return f"{verb} by <@{approver}>{why}"


def decided_blocks(blocks: Blocks, note: str) -> Blocks:
    """The message's blocks with the buttons replaced by who decided, for instant feedback."""
    kept = [block for block in blocks if block.get("block_id") != DECISION_BLOCK_ID]
    return [*kept, _section(note)]


def _decision_buttons(incident_id: str, request_id: str) -> dict[str, Any]:
    value = button_value(incident_id, request_id)
    return {
        "type": "actions",
        "block_id": DECISION_BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION_ID,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": value,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this fix?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": "Remedy will open a pull request with this change.",
                    },
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
            {
                "type": "button",
                "action_id": REJECT_ACTION_ID,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": value,
            },
        ],
    }


@dataclass(frozen=True)
class Rejection:
    """A submitted reason modal: which decision it answers, on which message, and why."""

    incident_id: str
    request_id: str
    channel: str
    message_ts: str
    reason: str


def reason_modal(
    incident_id: str, request_id: str, channel: str, message_ts: str
) -> dict[str, Any]:
    """The modal a Reject click opens; it remembers the click's message to update it after."""
    origin = {"incident_id": incident_id, "request_id": request_id, "channel": channel}
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW_ID,
        "private_metadata": json.dumps({**origin, "ts": message_ts}),
        "title": {"type": "plain_text", "text": "Reject the fix"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_INPUT_ID,
                "label": {"type": "plain_text", "text": "Why? (kept with the incident)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT_ID,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


def parse_reason_modal(view: dict[str, Any]) -> Rejection:
    """The Rejection a submitted `reason_modal` view carries."""
    origin = json.loads(view["private_metadata"])
    return Rejection(
        incident_id=origin["incident_id"],
        request_id=origin["request_id"],
        channel=origin["channel"],
        message_ts=origin["ts"],
        reason=view["state"]["values"][REASON_INPUT_ID][REASON_INPUT_ID]["value"],
    )


# ---------------------------------------------------------------------------- the message


def status_line(incident: SlackIncident) -> str:
    """One line that says where the incident stands and who decided."""
    approval = incident.approval
    decision = approval.decision if approval else None
    decided = (
        decision_note(decision.decision, decision.approver, decision.reason) if decision else ""
    )
    reason = escape(incident.reason or "")
    match incident.phase:
        case Phase.AWAITING_APPROVAL if approval is not None:
            return (
                f":hourglass: Waiting for approval from {_mentions(approval.approvers)} "
                f"until {_date(approval.expires_at)}"
            )
        case Phase.OPENING_PR:
            return f":white_check_mark: {decided}; opening a pull request"
        case Phase.PR_OPENED:
            proposal = incident.proposal
            if proposal and proposal.pr_url:
                where = _link(proposal.pr_url, "pull request opened")
            elif proposal:
                where = f"branch `{escape(proposal.branch)}` pushed"
            else:
                where = "change proposed"
            return f":white_check_mark: {decided}; {where}"
        case Phase.REJECTED:
            return f":no_entry: {decided or reason}"
        case Phase.EXPIRED if approval is not None:
            return (
                f":zzz: Expired: no decision by {_date(approval.expires_at)}; nothing was changed"
            )
        case phase if phase in _ENDED_WITH_REASON:
            return f"*{_phase_label(phase)}*: {reason}"
        case phase:
            return f":mag: {_phase_label(phase)}…"


def render_message(
    incident: SlackIncident, raw_error: str = "", diff: str = ""
) -> tuple[str, Blocks]:
    """The incident's message, redacted: (notification text, blocks); `diff` is the patch."""
    blocks: Blocks = [
        _section(f"```{escape(_raw_error(incident, raw_error))}```"),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Service*\n{escape(incident.service)}"},
                {"type": "mrkdwn", "text": f"*Severity*\n{incident.severity.value}"},
                {"type": "mrkdwn", "text": f"*Occurrences*\n{incident.occurrences}"},
                {"type": "mrkdwn", "text": f"*Incident*\n`{incident.incident_id}`"},
            ],
        },
    ]
    result = incident.diagnosis
    diagnosis = result.diagnosis if result else None
    if diagnosis is not None:
        blocks.append(
            _section(
                f"*Root cause* ({diagnosis.confidence:.0%} confidence)\n"
                f"{escape(diagnosis.root_cause)}"
            )
        )
    elif result is not None and result.abstained_reason:
        blocks.append(_section(f"*No diagnosis*: {escape(result.abstained_reason)}"))

    evidence_lines = _evidence_lines(incident)
    if evidence_lines:
        blocks.append(_section("*Evidence*\n" + "\n".join(evidence_lines)))
    patch = incident.patch
    if patch is not None and patch.applied:
        files = ", ".join(f"`{escape(path)}`" for path in patch.files[:8])
        more = f" and {len(patch.files) - 8} more" if len(patch.files) > 8 else ""
        blocks.append(
            _section(
                f"*Change*: {len(patch.files)} file(s) {files}{more}, "
                f"+{patch.lines_added} -{patch.lines_removed}"
            )
        )
        if diff.strip():
            # Approvers decide here, before any pull request exists: show them the change.
            blocks.append(_section(f"```{escape(_diff_excerpt(diff))}```"))
    verification = incident.verification
    if verification is not None:
        icon = {"passed": ":large_green_circle:", "failed": ":red_circle:"}.get(
            verification.status, ":white_circle:"
        )
        tests = f" ({verification.tests_run} tests)" if verification.tests_run is not None else ""
        blocks.append(
            _section(
                f"*Verification*: {icon} {verification.status}{tests}"
                + (f"\n{escape(verification.summary)}" if verification.summary else "")
            )
        )
    if result is not None and result.backend:
        blocks.append(
            _context(f"Cost: ${result.cost_usd:.4f} · {result.tokens} tokens · {result.backend}")
        )
    links = []
    if incident.ui_url:
        links.append(_link(incident.ui_url, "Workflow in Temporal UI"))
    if incident.proposal and incident.proposal.pr_url:
        links.append(_link(incident.proposal.pr_url, "Pull request"))
    elif incident.proposal:
        links.append(f"Branch `{escape(incident.proposal.branch)}`")
    if links:
        blocks.append(_context(" · ".join(links)))
    blocks.append(_section(status_line(incident)))

    approval = incident.approval
    if incident.phase == Phase.AWAITING_APPROVAL and approval and approval.decision is None:
        blocks.append(_decision_buttons(incident.incident_id, approval.request_id))
    text = (
        f"[{incident.severity.value}] {incident.error_type} in {incident.service}: "
        f"{incident.phase.value.replace('_', ' ')}"
    )
    return redact_text(_clip(text, 300)), _scrub(blocks)


def _raw_error(incident: SlackIncident, raw_error: str) -> str:
    headline = f"{incident.error_type}: {incident.error_message}".rstrip(": ")
    text = raw_error.strip() or headline
    if len(text) > _RAW_ERROR_LIMIT:
        # The end of a traceback holds the innermost frame and the error line.
        text = "…" + text[-_RAW_ERROR_LIMIT:]
    if headline not in text:
        text = f"{headline}\n{text}"
    return text


def _diff_excerpt(diff: str) -> str:
    lines = diff.rstrip("\n").splitlines()
    shown: list[str] = []
    size = 0
    for line in lines:
        size += len(escape(line)) + 1
        if size > _DIFF_LIMIT:
            break
        shown.append(line)
    if len(shown) < len(lines):
        shown.append(f"… {len(lines) - len(shown)} more lines")
    return "\n".join(shown)


def _evidence_lines(incident: SlackIncident) -> list[str]:
    lines: list[str] = []
    evidence = incident.evidence
    if evidence is not None:
        for frame in [f for f in evidence.frames if f.found][:5]:
            where = f"{frame.path}:{frame.line}" if frame.line else frame.path
            function = f" in `{escape(frame.function)}`" if frame.function else ""
            lines.append(f"• `{escape(where)}`{function}")
        for commit in evidence.suspect_commits[:3]:
            why = f" ({escape(commit.reason)})" if commit.reason else ""
            lines.append(
                f"• suspect commit `{commit.sha[:10]}` {escape(commit.subject)} "
                f"— {escape(commit.author)}{why}"
            )
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    if diagnosis is not None and not lines:
        lines.extend(f"• `{escape(ref.path)}:{ref.line}`" for ref in diagnosis.evidence[:5])
    return lines


# ---------------------------------------------------------------------------- the thread


def detail_text(incident: SlackIncident, kind: Literal["update", "reminder"] = "update") -> str:
    """The thread reply, redacted, for one phase change (or the approval reminder)."""
    approval = incident.approval
    if kind == "reminder":
        expires = _date(approval.expires_at) if approval else "soon"
        mentions = _mentions(approval.approvers) if approval else ""
        return redact_text(
            f"{mentions}: reminder, this fix is waiting for your decision; it expires {expires}."
        )
    details: list[str] = []
    result = incident.diagnosis
    match incident.phase:
        case Phase.DIAGNOSING if incident.evidence is not None:
            details.append(escape(incident.evidence.summary))
        case Phase.PATCHING | Phase.VERIFYING if result and result.diagnosis:
            details.append(escape(result.diagnosis.summary))
        case Phase.AWAITING_APPROVAL if approval is not None:
            if incident.verification is not None:
                details.append(f"Verification {incident.verification.status}.")
            details.append(
                f"Approval requested from {_mentions(approval.approvers)}; "
                f"expires {_date(approval.expires_at)}."
            )
        case _:
            details.append(status_line(incident))
    return redact_text(_clip("\n".join([f"*{_phase_label(incident.phase)}*", *details])))
