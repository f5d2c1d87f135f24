"""Slack: one living message per incident, in the service's channel.

The first `notify` posts the message (Block Kit: the raw error first, then the incident's
facts, with Approve and Reject buttons while a decision is pending); every later call edits it
in place (chat.update) and adds the new phase's details to its thread, once per phase.

Crash safety: the message's channel and ts are remembered in the artifact store, and every
message and thread reply carries the incident id in its Slack message metadata. Before posting,
the channel's history (or the thread) is searched for that metadata, so a worker that dies
between chat.postMessage and remembering the ts finds its message again instead of posting twice.

The Slack app needs the bot scopes chat:write, channels:history and groups:history (to find its
own messages again), channels:read and groups:read (to resolve a channel name to its id), and it
must be a member of the channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, secret
from remedy.models import IncidentStatus, NotifyRequest, NotifyResult, Phase
from remedy.redact import redact_text

APPROVE_ACTION_ID = "remedy_approve"
REJECT_ACTION_ID = "remedy_reject"
DECISION_BLOCK_ID = "remedy_decision"
MESSAGE_EVENT = "remedy_incident"
DETAIL_EVENT = "remedy_incident_detail"

# Slack rejects a section whose text exceeds 3000 characters; escaping can only grow text.
_SECTION_LIMIT = 2900
_RAW_ERROR_LIMIT = 2400
_DIFF_LIMIT = 2400
_HISTORY_PAGES = 20
_PAGE_SIZE = 200
# Messages are posted after the incident's first occurrence; the margin absorbs clock skew
# between the service that stamped `first_seen` and Slack.
_HISTORY_MARGIN = timedelta(hours=1)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_ENDED_WITH_REASON = (
    Phase.TRIAGED,
    Phase.NOTIFIED,
    Phase.FAILED,
    Phase.RATE_LIMITED,
    Phase.EXPIRED,
)

_PERMANENT_ERRORS = {
    "account_inactive": "the Slack app was deactivated; reinstall it",
    "channel_not_found": "check the service's slack_channel, and that the app can see it",
    "ekm_access_denied": "the workspace's key management denies access",
    "invalid_arguments": "Remedy sent a request Slack does not accept; report this",
    "invalid_auth": "check the bot token in the worker's environment",
    "invalid_blocks": "Remedy built a message Slack does not accept; report this",
    "invalid_metadata_format": "Remedy built message metadata Slack does not accept; report this",
    "is_archived": "the channel is archived; set another slack_channel",
    "missing_scope": "add the scope to the Slack app and reinstall it",
    "msg_too_long": "Remedy built a message Slack does not accept; report this",
    "no_permission": "grant the Slack app access to the channel",
    "not_allowed_token_type": "use a bot token (xoxb-...)",
    "not_authed": "set the bot token in the worker's environment",
    "not_in_channel": "invite the Slack app to the channel (/invite @app)",
    "restricted_action": "a workspace admin restricts posting in this channel",
    "team_access_not_granted": "grant the Slack app access to this workspace",
    "token_expired": "the bot token expired; issue a new one",
    "token_revoked": "the bot token was revoked; issue a new one",
}


# ---------------------------------------------------------------------------- Block Kit


def escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def _raw_error(incident: IncidentStatus, raw_error: str) -> str:
    headline = f"{incident.error_type}: {incident.error_message}".rstrip(": ")
    text = raw_error.strip() or headline
    if len(text) > _RAW_ERROR_LIMIT:
        # The end of a traceback holds the innermost frame and the error line.
        text = "…" + text[-_RAW_ERROR_LIMIT:]
    if headline not in text:
        text = f"{headline}\n{text}"
    return text


def _decided(incident: IncidentStatus) -> str:
    decision = incident.approval.decision if incident.approval else None
    if decision is None:
        return ""
    verb = "Approved" if decision.decision == "approve" else "Rejected"
    reason = f": {escape(decision.reason)}" if decision.reason else ""
    return f"{verb} by <@{decision.approver}>{reason}"


def status_line(incident: IncidentStatus) -> str:
    """One line that says where the incident stands and who decided."""
    approval = incident.approval
    decided = _decided(incident)
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
            return f"*{phase.value.replace('_', ' ').capitalize()}*: {reason}"
        case phase:
            return f":mag: {phase.value.replace('_', ' ').capitalize()}…"


def render_message(
    incident: IncidentStatus, raw_error: str = "", diff: str = ""
) -> tuple[str, list[dict[str, Any]]]:
    """The incident's message: (notification text, blocks). `diff` is the patch, if any."""
    blocks: list[dict[str, Any]] = [
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
        value = button_value(incident.incident_id, approval.request_id)
        blocks.append(
            {
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
        )
    text = (
        f"[{incident.severity.value}] {incident.error_type} in {incident.service}: "
        f"{incident.phase.value.replace('_', ' ')}"
    )
    return _clip(text, 300), blocks


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


def _evidence_lines(incident: IncidentStatus) -> list[str]:
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


def decided_blocks(blocks: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """The message's blocks with the buttons replaced by who decided, for instant feedback."""
    kept = [block for block in blocks if block.get("block_id") != DECISION_BLOCK_ID]
    return [*kept, _section(note)]


def _thread_key(request: NotifyRequest) -> str:
    incident = request.incident
    if request.kind == "reminder":
        request_id = incident.approval.request_id if incident.approval else "none"
        return f"reminder:{request_id}"
    return f"phase:{incident.phase.value}"


def detail_text(request: NotifyRequest) -> str:
    """The thread reply for one phase change (or the approval reminder)."""
    incident = request.incident
    approval = incident.approval
    if request.kind == "reminder":
        expires = _date(approval.expires_at) if approval else "soon"
        mentions = _mentions(approval.approvers) if approval else ""
        return f"{mentions}: reminder, this fix is waiting for your decision; it expires {expires}."
    label = f"*{incident.phase.value.replace('_', ' ').capitalize()}*"
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
    return _clip("\n".join([label, *details]))


# ---------------------------------------------------------------------------- errors


def slack_failure(exc: SlackApiError) -> ApplicationError:
    """Classify a Slack API error: rate limits wait as asked, permanent errors stop retrying."""
    response = exc.response
    method = str(response.api_url).rstrip("/").rsplit("/", 1)[-1]
    error = str(response.get("error") or f"HTTP {response.status_code}")
    if response.status_code == 429 or error == "ratelimited":
        headers = {key.lower(): value for key, value in (response.headers or {}).items()}
        try:
            delay = max(1, int(headers.get("retry-after", "30")))
        except ValueError:
            delay = 30
        return ApplicationError(
            f"Slack {method}: rate limited; retrying in {delay}s as Slack asks",
            type="SlackRateLimited",
            next_retry_delay=timedelta(seconds=delay),
        )
    if error in _PERMANENT_ERRORS:
        needed = response.get("needed")
        scope = f" (needs {needed})" if needed else ""
        return ApplicationError(
            f"Slack {method}: {error}{scope}: {_PERMANENT_ERRORS[error]}",
            type="SlackRefused",
            non_retryable=True,
        )
    return ApplicationError(f"Slack {method}: {error}", type="SlackUnavailable")


# ---------------------------------------------------------------------------- the activity


@dataclass
class _MessageState:
    """What is remembered per incident in `<incident>/slack.json`."""

    channel: str
    ts: str
    replies: list[str] = field(default_factory=list)


def scrub(value: Any) -> Any:
    """Redact every string of a message before it leaves: the event was redacted at intake,
    but diffs, model text and repository code reach the message too."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list | tuple):
        return type(value)(scrub(item) for item in value)
    if isinstance(value, dict):
        return {key: scrub(item) for key, item in value.items()}
    return value


class SlackActivities:
    def __init__(self, config: RemedyConfig, store: ArtifactStore) -> None:
        self._config = config
        self._store = store
        self._channel_ids: dict[str, str] = {}

    @activity.defn(name=names.ACTIVITY_NOTIFY)
    async def notify(self, request: NotifyRequest) -> NotifyResult:
        incident = request.incident
        token = secret(self._config.slack.bot_token_env)
        if not token:
            unset = self._config.slack.bot_token_env
            return NotifyResult(delivered=False, reason=f"Slack is off: ${unset} is unset")
        service = self._config.services.get(incident.service)
        channel_name = service.slack_channel if service else None
        if not channel_name:
            return NotifyResult(
                delivered=False,
                reason=f"remedy.toml: services.{incident.service}.slack_channel is not set",
            )
        client = AsyncWebClient(
            token=token, base_url=self._config.slack.api_url, timeout=15, retry_handlers=[]
        )
        try:
            state = self._load(incident.incident_id)
            text, blocks = scrub(render_message(incident, request.raw_error, self._diff(incident)))
            metadata = {
                "event_type": MESSAGE_EVENT,
                "event_payload": {"incident_id": incident.incident_id},
            }
            posted = False
            if state is not None and not await self._edit(client, state, text, blocks, metadata):
                state = None  # someone deleted the message: post a new one
            if state is None:
                channel = await self._channel_id(client, incident.service, channel_name)
                ts = await self._find_message(client, channel, incident)
                if ts is None:
                    response = await client.chat_postMessage(
                        channel=channel,
                        text=text,
                        blocks=blocks,
                        metadata=metadata,
                        unfurl_links=False,
                        unfurl_media=False,
                    )
                    channel, ts, posted = str(response["channel"]), str(response["ts"]), True
                    activity.logger.info("posted the Slack message of %s", incident.incident_id)
                else:
                    await client.chat_update(
                        channel=channel, ts=ts, text=text, blocks=blocks, metadata=metadata
                    )
                # The message itself shows this phase; a thread reply would repeat it.
                first_replies = [_thread_key(request)] if request.kind == "update" else []
                state = _MessageState(channel=channel, ts=ts, replies=first_replies)
                self._save(incident.incident_id, state)
            replied = await self._reply_once(client, incident.incident_id, state, request)
        except SlackApiError as exc:
            raise slack_failure(exc) from None
        return NotifyResult(
            delivered=True, channel=state.channel, ts=state.ts, posted=posted, replied=replied
        )

    async def _edit(
        self,
        client: AsyncWebClient,
        state: _MessageState,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> bool:
        """Edit the remembered message; False when someone deleted it (post a new one)."""
        try:
            await client.chat_update(
                channel=state.channel, ts=state.ts, text=text, blocks=blocks, metadata=metadata
            )
        except SlackApiError as exc:
            if exc.response.get("error") == "message_not_found":
                return False
            raise
        return True

    async def _channel_id(self, client: AsyncWebClient, service: str, configured: str) -> str:
        name = configured.removeprefix("#")
        if _CHANNEL_ID.match(name):
            return name
        if name in self._channel_ids:
            return self._channel_ids[name]
        cursor: str | None = None
        while True:
            response = await client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            for channel in response.get("channels") or []:
                if channel.get("name") == name:
                    self._channel_ids[name] = str(channel["id"])
                    return self._channel_ids[name]
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                raise ApplicationError(
                    f"remedy.toml: services.{service}.slack_channel: no channel {configured!r} "
                    "is visible to the Slack app (invite the app to it, or give the channel id, "
                    "e.g. C0123ABCD)",
                    type="SlackRefused",
                    non_retryable=True,
                )

    async def _find_message(
        self, client: AsyncWebClient, channel: str, incident: IncidentStatus
    ) -> str | None:
        """The ts of this incident's message if an earlier attempt posted it, found by metadata."""
        oldest = (incident.first_seen - _HISTORY_MARGIN).timestamp()
        cursor: str | None = None
        for _ in range(_HISTORY_PAGES):
            response = await client.conversations_history(
                channel=channel,
                oldest=f"{oldest:.6f}",
                include_all_metadata=True,
                limit=_PAGE_SIZE,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                if _metadata_matches(message, MESSAGE_EVENT, incident.incident_id):
                    return str(message["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more"):
                return None
        return None

    async def _reply_once(
        self, client: AsyncWebClient, incident_id: str, state: _MessageState, request: NotifyRequest
    ) -> bool:
        key = _thread_key(request)
        if key in state.replies:
            return False
        if not await self._reply_exists(client, incident_id, state, key):
            await client.chat_postMessage(
                channel=state.channel,
                thread_ts=state.ts,
                text=scrub(detail_text(request)),
                metadata={
                    "event_type": DETAIL_EVENT,
                    "event_payload": {"incident_id": incident_id, "key": key},
                },
                unfurl_links=False,
                unfurl_media=False,
            )
        state.replies.append(key)
        self._save(incident_id, state)
        return True

    async def _reply_exists(
        self, client: AsyncWebClient, incident_id: str, state: _MessageState, key: str
    ) -> bool:
        cursor: str | None = None
        for _ in range(_HISTORY_PAGES):
            response = await client.conversations_replies(
                channel=state.channel,
                ts=state.ts,
                include_all_metadata=True,
                limit=_PAGE_SIZE,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                if _metadata_matches(message, DETAIL_EVENT, incident_id, key):
                    return True
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return False
        return False

    def _diff(self, incident: IncidentStatus) -> str:
        patch = incident.patch
        if patch is None or patch.diff is None or not self._store.exists(patch.diff.key):
            return ""
        return self._store.get_text(patch.diff)

    def _key(self, incident_id: str) -> str:
        return f"{incident_id}/slack.json"

    def _load(self, incident_id: str) -> _MessageState | None:
        if not self._store.exists(self._key(incident_id)):
            return None
        data = self._store.get_json(self._key(incident_id))
        return _MessageState(
            channel=data["channel"], ts=data["ts"], replies=list(data.get("replies", []))
        )

    def _save(self, incident_id: str, state: _MessageState) -> None:
        self._store.put_json(
            self._key(incident_id),
            {"channel": state.channel, "ts": state.ts, "replies": state.replies},
        )


def _metadata_matches(
    message: dict[str, Any], event_type: str, incident_id: str, key: str | None = None
) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return (
        metadata.get("event_type") == event_type
        and payload.get("incident_id") == incident_id
        and (key is None or payload.get("key") == key)
    )
