"""An incident's Slack message as Block Kit: a header that says what and where (severity,
error, service, phase in words), the incident's facts, the tail of the raw error, and Approve
and Reject buttons while a decision is pending; and its thread replies.

Pure: the `notify` activity sends what this returns, the click listener parses the buttons it
made. Untrusted text (the error, model output, diffs, paths, commit subjects, reasons) goes
through remedy.render.sanitize, which redacts and escapes it; every text object is `verbatim`,
so Slack links and mentions nothing by itself, and the only links and mentions are Remedy's
own (the Temporal UI, the pull request, the approvers). An approver is mentioned only when
the id looks like a Slack user id; any other id (an email, a CLI name) is shown as text.

It runs a little past 450 lines: the message, its buttons and its thread replies share one
set of text pieces (escaping, clipping, mentions, phase words); the Reject modal, a view
rather than a message, is remedy.render.slack_modal.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal, Protocol

from remedy.assurance import FIX_FAILURE_TEXT, headline
from remedy.models import (
    ApprovalRequest,
    Assurance,
    DiagnosisResult,
    Evidence,
    FixAttempt,
    PatchResult,
    Phase,
    Proposal,
    VerificationResult,
)
from remedy.redact import redact_code, redact_diff, redact_text, redact_value
from remedy.render.phases import Forge, phase_label
from remedy.render.sanitize import slack_code, slack_escape, slack_quote, slack_text
from remedy.service_policy import Severity

APPROVE_ACTION_ID = "remedy_approve"
REJECT_ACTION_ID = "remedy_reject"
DECISION_BLOCK_ID = "remedy_decision"

# Slack rejects a section whose text exceeds 3000 characters and a header over 150;
# escaping can only grow text.
_SECTION_LIMIT = 2900
_HEADER_LIMIT = 150
# The error's tail under the header: the innermost frames and the error line, not a page.
_RAW_ERROR_LINES = 12
_RAW_ERROR_LIMIT = 1500
_DIFF_LIMIT = 2400
_ENDED_WITH_REASON = (
    Phase.TRIAGED,
    Phase.NOTIFIED,
    Phase.FAILED,
    Phase.RATE_LIMITED,
    Phase.EXPIRED,
)

# After pr_opened: how far the change got, each with the workflow's reason.
_FIX_ICONS = {
    Phase.FIX_MERGED: ":twisted_rightwards_arrows:",
    Phase.FIX_DEPLOYED: ":rocket:",
    Phase.FIX_HELD: ":white_check_mark:",
    Phase.FIX_FAILED: ":rotating_light:",
    Phase.FIX_ABANDONED: ":wastebasket:",
}

# Slack user ids (U...) and Enterprise Grid ids (W...); anything else is not mentionable.
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")

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
    assurance: Assurance | None
    fix_attempts: list[FixAttempt]
    approval: ApprovalRequest | None
    proposal: Proposal | None


# ---------------------------------------------------------------------------- text pieces


escape = slack_escape  # Slack's mrkdwn treats &, < and > as control characters.


def _scrub(value: Any) -> Any:
    """Every string of a message redacted once more as code, however deep in the blocks it
    sits: each untrusted piece was redacted as it went in, this catches what looks like a key
    wherever it ended up (the diff keeps reading as code)."""
    return redact_value(value, redact_code)


_LEVEL_ICONS = {"verified": ":large_green_circle:", "tested": ":large_yellow_circle:"}


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _clip(text: str, limit: int = _SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack links no URL and parses no mention on its own; Remedy's links stay.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(_clip(text))}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(_clip(text))]}


def _date(moment: datetime) -> str:
    """A date every reader sees in their own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _link(url: str, label: str) -> str:
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"


def mention(user: str, *, autolinked: bool = False) -> str:
    """`<@user>` when `user` is a Slack user id, else the id as escaped text that pings nobody
    (`autolinked`: for a plain message text, see remedy.render.sanitize.slack_text)."""
    if _SLACK_USER_ID.match(user):
        return f"<@{user}>"
    return slack_text(user, autolinked=autolinked)


def _mentions(user_ids: list[str], *, autolinked: bool = False) -> str:
    mentions = ", ".join(mention(user, autolinked=autolinked) for user in user_ids)
    return mentions or "nobody (no approvers configured)"


def _forge_of(incident: SlackIncident, forge: Forge) -> Forge:
    """Where the change went: once proposed, the proposal says (a pull request URL or a
    pushed branch); before that, the forge the incident started with."""
    if incident.proposal is None:
        return forge
    return "github" if incident.proposal.pr_url else "local"


def _phase(incident: SlackIncident, forge: Forge) -> str:
    return phase_label(incident.phase, _forge_of(incident, forge))


def _header(incident: SlackIncident, forge: Forge) -> dict[str, Any]:
    """`HIGH · KeyError in checkout · Awaiting approval`, within Slack's 150 characters."""
    before = f"{incident.severity.value.upper()} · "
    after = f" in {incident.service} · {_phase(incident, forge)}"
    return {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": _fit(before, incident.error_type, after, _HEADER_LIMIT),
            "emoji": False,
        },
    }


def _fit(before: str, untrusted: str, after: str, limit: int) -> str:
    """`before + untrusted + after`, each escaped, the untrusted part cut (before escaping,
    so no entity is split) to the longest prefix that lets the whole fit in `limit`."""

    def joined(keep: int) -> str:
        shown = untrusted if keep >= len(untrusted) else untrusted[:keep] + "…"
        return slack_text(before) + slack_text(shown) + slack_text(after)

    if len(joined(len(untrusted))) <= limit:
        return joined(len(untrusted))
    low, high = 0, len(untrusted)  # joined(low) fits (or nothing does), joined(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(joined(middle)) <= limit else (low, middle)
    return _clip(joined(low), limit)


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


def decision_note(
    decision: Literal["approve", "reject"],
    approver: str,
    reason: str | None,
    *,
    autolinked: bool = False,
) -> str:
    """Who decided what, and why: on the message and in the click's instant feedback
    (`autolinked`: for a plain message text, see remedy.render.sanitize.slack_text)."""
    verb = "Approved" if decision == "approve" else "Rejected"
    why = f": {slack_text(reason, autolinked=autolinked)}" if reason else ""
    return f"{verb} by {mention(approver, autolinked=autolinked)}{why}"


def decided_blocks(blocks: Blocks, note: str) -> Blocks:
    """The message's blocks with the buttons replaced by who decided, for instant feedback."""
    kept = [block for block in blocks if block.get("block_id") != DECISION_BLOCK_ID]
    return [*kept, _section(note)]


def _decision_buttons(incident_id: str, request_id: str, forge: Forge) -> dict[str, Any]:
    value = button_value(incident_id, request_id)
    outcome = (
        "open a pull request with this change"
        if forge == "github"
        else "push this change as a branch to the repository's remote"
    )
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
                        "text": f"Remedy will {outcome}.",
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


# ---------------------------------------------------------------------------- the message


def status_line(
    incident: SlackIncident, *, forge: Forge = "local", autolinked: bool = False
) -> str:
    """One line that says where the incident stands and who decided (`forge`: where an
    approved change goes; `autolinked`: for a plain message text, see
    remedy.render.sanitize.slack_text)."""
    approval = incident.approval
    decision = approval.decision if approval else None
    decided = (
        decision_note(decision.decision, decision.approver, decision.reason, autolinked=autolinked)
        if decision
        else ""
    )
    reason = slack_text(incident.reason or "", autolinked=autolinked)
    match incident.phase:
        case Phase.AWAITING_APPROVAL if approval is not None:
            return (
                ":hourglass: Waiting for approval from "
                f"{_mentions(approval.approvers, autolinked=autolinked)} "
                f"until {_date(approval.expires_at)}"
            )
        case Phase.OPENING_PR:
            return f":white_check_mark: {decided}; {_phase(incident, forge).lower()}"
        case Phase.PR_OPENED:
            proposal = incident.proposal
            if proposal and proposal.pr_url:
                where = _link(proposal.pr_url, "pull request opened")
            elif proposal:
                where = f"branch `{slack_code(proposal.branch)}` pushed"
            else:
                where = _phase(incident, forge).lower()
            return f":white_check_mark: {decided}; {where}"
        case Phase.REJECTED:
            return f":no_entry: {decided or reason}"
        case Phase.EXPIRED if approval is not None:
            return (
                f":zzz: Expired: no decision by {_date(approval.expires_at)}; nothing was changed"
            )
        case phase if phase in _ENDED_WITH_REASON:
            return f"*{_phase(incident, forge)}*: {reason}"
        case phase if phase in _FIX_ICONS:
            return f"{_FIX_ICONS[phase]} *{_phase(incident, forge)}*: {reason}"
        case _:
            return f":mag: {_phase(incident, forge)}…"


def render_message(
    incident: SlackIncident, raw_error: str = "", diff: str = "", *, forge: Forge = "local"
) -> tuple[str, Blocks]:
    """The incident's message, redacted: (notification text, blocks); `diff` is the patch,
    `forge` where an approved change goes (IncidentStart.forge)."""
    blocks: Blocks = [
        _header(incident, forge),
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Service*\n{slack_text(incident.service)}"),
                _mrkdwn(f"*Severity*\n{incident.severity.value}"),
                _mrkdwn(f"*Occurrences*\n{incident.occurrences}"),
                _mrkdwn(f"*Incident*\n`{slack_code(incident.incident_id)}`"),
            ],
        },
        _section(f"```{slack_code(_raw_error(incident, raw_error))}```"),
    ]
    checked = incident.assurance
    if checked is not None and incident.patch is not None and incident.patch.applied:
        # Before anything else an approver reads: how far the fix was checked.
        level_icon = _LEVEL_ICONS.get(checked.level, ":warning:")
        blocks.insert(1, _section(f"{level_icon} {slack_text(headline(checked))}"))
    result = incident.diagnosis
    diagnosis = result.diagnosis if result else None
    if diagnosis is not None:
        confidence = (
            f"{checked.confidence:.0%} confidence from checks"
            if checked is not None
            else f"{diagnosis.confidence:.0%} confidence"
        )
        blocks.append(
            _section(
                f"*Root cause* ({confidence}), as the model wrote it:\n"
                f"{slack_quote(diagnosis.root_cause)}"
            )
        )
    elif result is not None and result.abstained_reason:
        blocks.append(_section(f"*No diagnosis*: {slack_text(result.abstained_reason)}"))

    evidence_lines = _evidence_lines(incident)
    if evidence_lines:
        blocks.append(_section("*Evidence*\n" + "\n".join(evidence_lines)))
    patch = incident.patch
    if patch is not None and patch.applied:
        files = ", ".join(f"`{slack_code(path)}`" for path in patch.files[:8])
        more = f" and {len(patch.files) - 8} more" if len(patch.files) > 8 else ""
        blocks.append(
            _section(
                f"*Change*: {len(patch.files)} file(s) {files}{more}, "
                f"+{patch.lines_added} -{patch.lines_removed}"
            )
        )
        if patch.execution_sensitive:
            sensitive = ", ".join(f"`{slack_code(path)}`" for path in patch.execution_sensitive)
            blocks.append(
                _section(
                    f":warning: *Edits execution-sensitive files* {sensitive}, allowed by "
                    f"`services.{slack_code(incident.service)}.allow_execution_sensitive_paths`"
                )
            )
        if diff.strip():
            # Approvers decide here, before any pull request exists: show them the change.
            excerpt = slack_code(_diff_excerpt(diff), redact=redact_diff)
            blocks.append(_section(f"```{excerpt}```"))
    if incident.fix_attempts:
        tries = [
            f"try {attempt.attempt}: the patch {FIX_FAILURE_TEXT[attempt.failure]}: "
            f"{slack_text(_clip(_first_line(attempt.detail), 200))}"
            for attempt in incident.fix_attempts
        ]
        blocks.append(_section("*Earlier tries*\n" + "\n".join(tries)))
    verification = incident.verification
    if verification is not None:
        icon = {"passed": ":large_green_circle:", "failed": ":red_circle:"}.get(
            verification.status, ":white_circle:"
        )
        tests = f" ({verification.tests_run} tests)" if verification.tests_run is not None else ""
        blocks.append(
            _section(
                f"*Verification*: {icon} {verification.status}{tests}"
                + (f"\n{slack_text(verification.summary)}" if verification.summary else "")
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
        links.append(f"Branch `{slack_code(incident.proposal.branch)}`")
    if links:
        blocks.append(_context(" · ".join(links)))
    blocks.append(_section(status_line(incident, forge=forge)))

    approval = incident.approval
    if incident.phase == Phase.AWAITING_APPROVAL and approval and approval.decision is None:
        blocks.append(_decision_buttons(incident.incident_id, approval.request_id, forge))
    # The notification text is not verbatim: Slack links and mentions what it finds there.
    text = (
        f"[{incident.severity.value}] {slack_text(incident.error_type, autolinked=True)} in "
        f"{slack_text(incident.service)}: {_phase(incident, forge).lower()}"
    )
    return _clip(text, 300), _scrub(blocks)


def _raw_error(incident: SlackIncident, raw_error: str) -> str:
    """The error's last lines: the end of a traceback holds the innermost frame and the
    error line; the whole text is in the Temporal UI and the incident's artifacts."""
    headline = f"{incident.error_type}: {incident.error_message}".rstrip(": ")
    lines = (raw_error.strip() or headline).splitlines()
    text = "\n".join(lines[-_RAW_ERROR_LINES:])
    if len(text) > _RAW_ERROR_LIMIT:
        text = text[-_RAW_ERROR_LIMIT:]
    if len(lines) > _RAW_ERROR_LINES or len(text) < len("\n".join(lines)):
        text = f"… {len(lines) - min(len(lines), _RAW_ERROR_LINES)} earlier lines\n{text}"
    if headline not in text:
        text = f"{headline}\n{text}"
    return text


def _diff_excerpt(diff: str) -> str:
    lines = diff.rstrip("\n").splitlines()
    shown: list[str] = []
    size = 0
    for line in lines:
        size += len(slack_escape(line)) + 1
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
            function = f" in `{slack_code(frame.function)}`" if frame.function else ""
            lines.append(f"• `{slack_code(where)}`{function}")
        for commit in evidence.suspect_commits[:3]:
            why = f" ({slack_text(commit.reason)})" if commit.reason else ""
            lines.append(
                f"• suspect commit `{slack_code(commit.sha[:10])}` {slack_text(commit.subject)} "
                f"— {slack_text(commit.author)}{why}"
            )
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    if diagnosis is not None and not lines:
        lines.extend(f"• `{slack_code(ref.path)}:{ref.line}`" for ref in diagnosis.evidence[:5])
    return lines


# ---------------------------------------------------------------------------- the thread


def detail_text(
    incident: SlackIncident,
    kind: Literal["update", "reminder"] = "update",
    *,
    forge: Forge = "local",
) -> str:
    """The thread reply, redacted, for one phase change (or the approval reminder)."""
    approval = incident.approval
    if kind == "reminder":
        expires = _date(approval.expires_at) if approval else "soon"
        mentions = _mentions(approval.approvers, autolinked=True) if approval else ""
        return redact_text(
            f"{mentions}: reminder, this fix is waiting for your decision; it expires {expires}."
        )
    details: list[str] = []
    result = incident.diagnosis
    match incident.phase:
        case Phase.DIAGNOSING if incident.evidence is not None:
            details.append(slack_text(incident.evidence.summary, autolinked=True))
        case Phase.PATCHING | Phase.VERIFYING if result and result.diagnosis:
            details.append(slack_text(result.diagnosis.summary, autolinked=True))
        case Phase.AWAITING_APPROVAL if approval is not None:
            if incident.verification is not None:
                details.append(f"Verification {incident.verification.status}.")
            details.append(
                f"Approval requested from {_mentions(approval.approvers, autolinked=True)}; "
                f"expires {_date(approval.expires_at)}."
            )
        case _:
            details.append(status_line(incident, forge=forge, autolinked=True))
    return redact_text(_clip("\n".join([f"*{_phase(incident, forge)}*", *details])))
