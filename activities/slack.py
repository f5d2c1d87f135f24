"""Slack: one living message per incident, in the service's channel.

The first `notify` posts the message that remedy.render.slack renders; every later call edits
it in place (chat.update) and adds the new phase's details to its thread, once per phase.

Crash safety: the message's channel and ts are remembered in the artifact store, and every
message and thread reply carries the incident id in its Slack message metadata. Before posting,
the channel's history (or the thread) is searched for that metadata, so a worker that dies
between chat.postMessage and remembering the ts finds its message again instead of posting twice.

The Slack app needs the bot scopes chat:write, channels:history and groups:history (to find its
own messages again), channels:read and groups:read (to resolve a channel name to its id), and it
must be a member of the channel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, secret
from remedy.models import IncidentStatus, NotifyRequest, NotifyResult
from remedy.render.phases import Forge
from remedy.render.slack import Blocks, detail_text, render_message
from remedy.retry_after import retry_after_s

MESSAGE_EVENT = "remedy_incident"
DETAIL_EVENT = "remedy_incident_detail"

_HISTORY_PAGES = 20
_PAGE_SIZE = 200
# Messages are posted after the incident's first occurrence; the margin absorbs clock skew
# between the service that stamped `first_seen` and Slack.
_HISTORY_MARGIN = timedelta(hours=1)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")

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


# ---------------------------------------------------------------------------- errors


def slack_failure(exc: SlackApiError) -> ApplicationError:
    """Classify a Slack API error: rate limits wait as asked, permanent errors stop retrying."""
    response = exc.response
    method = str(response.api_url).rstrip("/").rsplit("/", 1)[-1]
    error = str(response.get("error") or f"HTTP {response.status_code}")
    if response.status_code == 429 or error == "ratelimited":
        headers = {key.lower(): value for key, value in (response.headers or {}).items()}
        wait_s = retry_after_s(headers.get("retry-after"))
        delay = max(1, math.ceil(wait_s)) if wait_s is not None else 30
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
            text, blocks = render_message(
                incident,
                request.raw_error,
                self._diff(incident),
                forge=self._forge(incident.service),
            )
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

    def _forge(self, service: str) -> Forge:
        """Where an approved change goes, as the intake decided it (IncidentStart.forge)."""
        config = self._config.services.get(service)
        return "github" if config and config.github_repo else "local"

    async def _edit(
        self,
        client: AsyncWebClient,
        state: _MessageState,
        text: str,
        blocks: Blocks,
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
                text=detail_text(
                    request.incident, request.kind, forge=self._forge(request.incident.service)
                ),
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


def _thread_key(request: NotifyRequest) -> str:
    """Which thread reply a notify stands for: one per phase, one reminder per request."""
    incident = request.incident
    if request.kind == "reminder":
        request_id = incident.approval.request_id if incident.approval else "none"
        return f"reminder:{request_id}"
    return f"phase:{incident.phase.value}"


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
