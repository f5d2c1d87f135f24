"""Slack listeners: the Approve and Reject buttons, and the modal that asks why.

HTTP mode: Bolt's AsyncApp behind `POST /slack/events` of the intake app. The intake checks
Slack's v0 signature and timestamp before Bolt sees the request: Bolt parses a body before it
verifies it (a deeply nested one fails with a 500), takes any timestamp header for a number
(a 500 too) and logs the body of every forged request. Unsigned, stale or forged: 401, with
nothing parsed and nothing logged. Socket Mode (`[slack] socket_mode = true`): the same
listeners over Slack's websocket, for teams without public ingress.

Every listener acks at once (Slack's 3-second window), then sends the workflow's `decide`
Update with the clicker's Slack user id. The workflow's validator alone decides who may
decide: its refusal reaches the clicker, word for word, as an ephemeral message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt import BoltResponse
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.config import RemedyConfig, secret
from remedy.models import DecideRequest
from remedy.render.slack import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    decided_blocks,
    decision_note,
    parse_button_value,
)
from remedy.render.slack_modal import REJECT_VIEW_ID, parse_reason_modal, reason_modal
from starter.request_body import BodyRefused, read_capped_body
from workflows.incident import IncidentWorkflow

log = logging.getLogger(__name__)

TemporalProvider = Callable[[], Client | None]

# Interactivity payloads carry the clicked message's blocks, which Slack keeps far smaller.
MAX_SLACK_BODY_BYTES = 1_048_576
# Slack's rule (and Bolt's): a signature older than five minutes may be a replay.
MAX_SIGNATURE_AGE_S = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_PAYLOAD_SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)
UNREADABLE_PAYLOAD = "body is not a Slack payload Remedy can read"

# Bolt logs whole request bodies at INFO (forged requests, listener errors); its loggers
# inherit this one's level, so they keep their warnings and errors only.
_BOLT_LOG = logging.getLogger(f"{__name__}.bolt")
_BOLT_LOG.setLevel(logging.WARNING)


class SlackListener:
    """The Bolt app with Remedy's listeners; `handle` serves HTTP, `start` joins Socket Mode."""

    def __init__(
        self,
        config: RemedyConfig,
        temporal: TemporalProvider,
        *,
        bot_token: str,
        signing_secret: str = "",
        app_token: str | None = None,
        decide_timeout_s: float = 20.0,
    ) -> None:
        self._temporal = temporal
        self._decide_timeout_s = decide_timeout_s
        self.app = AsyncApp(
            name="remedy", token=bot_token, signing_secret=signing_secret, logger=_BOLT_LOG
        )
        # Bolt reads $SLACK_BOT_TOKEN itself and warns when a client is passed beside it, so the
        # API URL (GovSlack, tests) is set on the client Bolt built.
        self.app.client.base_url = config.slack.api_url.rstrip("/") + "/"
        self.app.action(APPROVE_ACTION_ID)(self._on_approve)
        self.app.action(REJECT_ACTION_ID)(self._on_reject)
        self.app.view(REJECT_VIEW_ID)(self._on_reason)
        self.app.error(self._on_error)
        self._signing_secret = signing_secret.encode()
        self._socket = AsyncSocketModeHandler(self.app, app_token) if app_token else None

    @property
    def socket_mode(self) -> bool:
        return self._socket is not None

    async def handle(self, request: Request) -> Response:
        """Serve `POST /slack/events`: Bolt sees only what Slack signed."""
        try:
            body = await read_capped_body(request, MAX_SLACK_BODY_BYTES)
        except BodyRefused as refused:
            return _refusal(refused.status, refused.message)
        if not self._signed_by_slack(request, body):
            return _refusal(401, "invalid request: not signed by Slack, or signed too long ago")
        try:
            bolt_request = to_async_bolt_request(request, body)
            # Bolt reads the payload's shape as it builds the request, matches listeners and
            # calls its error handler (`_on_error`), and fails on shapes Slack does not send.
            return to_starlette_response(await self.app.async_dispatch(bolt_request))
        except (*_PAYLOAD_SHAPE_ERRORS, RecursionError):  # not UTF-8, not JSON, not Slack's shape
            log.warning("a Slack payload Remedy cannot read: answered 400", exc_info=True)
            return _refusal(400, UNREADABLE_PAYLOAD)

    def _signed_by_slack(self, request: Request, body: bytes) -> bool:
        """Slack's v0 scheme over the raw bytes: HMAC-SHA256 of `v0:<timestamp>:<body>`."""
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not self._signing_secret or not _TIMESTAMP.fullmatch(timestamp):
            return False
        if abs(time.time() - int(timestamp)) > MAX_SIGNATURE_AGE_S:
            return False
        signed = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(self._signing_secret, signed, hashlib.sha256).hexdigest()
        # Headers arrive as Latin-1 text: back to the bytes that were sent.
        return hmac.compare_digest(expected.encode(), signature.encode("latin-1"))

    async def _on_error(self, error: Exception) -> BoltResponse | None:
        """Bolt's error handler: a payload of a shape Slack does not send (a list, a missing
        `type`) is the sender's fault, a 400, not a 500."""
        if isinstance(error, _PAYLOAD_SHAPE_ERRORS):
            log.warning("a Slack payload Remedy cannot read: answered 400", exc_info=error)
            return BoltResponse(status=400, body={"error": UNREADABLE_PAYLOAD})
        log.error("a Slack listener failed", exc_info=error)
        return None

    async def start(self) -> None:
        if self._socket is not None:
            await self._socket.connect_async()
            log.info("Slack Socket Mode connected")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()

    # ------------------------------------------------------------------ listeners

    async def _on_approve(
        self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        click = _read_click(body)
        if click is None:
            return
        await self._decide(
            client,
            click.incident_id,
            DecideRequest(decision="approve", approver=click.user, request_id=click.request_id),
            channel=click.channel,
            message_ts=click.message_ts,
            blocks=body.get("message", {}).get("blocks"),
        )

    async def _on_reject(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        click = _read_click(body)
        if click is None:
            return
        await client.views_open(
            trigger_id=click.trigger_id,
            view=reason_modal(click.incident_id, click.request_id, click.channel, click.message_ts),
        )

    async def _on_reason(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        try:
            rejection = parse_reason_modal(view)
            approver = str(body["user"]["id"])
        except (LookupError, TypeError, ValueError):
            log.warning("ignored a Slack view submission that is not Remedy's reason modal")
            return
        await self._decide(
            client,
            rejection.incident_id,
            DecideRequest(
                decision="reject",
                approver=approver,
                request_id=rejection.request_id,
                reason=rejection.reason,
            ),
            channel=rejection.channel,
            message_ts=rejection.message_ts,
            blocks=await _message_blocks(client, rejection.channel, rejection.message_ts),
        )

    # ------------------------------------------------------------------ the decision

    async def _decide(
        self,
        client: AsyncWebClient,
        incident_id: str,
        request: DecideRequest,
        *,
        channel: str,
        message_ts: str,
        blocks: list[dict[str, Any]] | None,
    ) -> None:
        refusal = await self._send_decide(incident_id, request)
        if refusal is not None:
            await client.chat_postEphemeral(
                channel=channel, user=request.approver, text=f":warning: {refusal}"
            )
            return
        if blocks:
            note = decision_note(request.decision, request.approver, request.reason)
            try:
                await client.chat_update(
                    channel=channel, ts=message_ts, blocks=decided_blocks(blocks, note), text=note
                )
            except SlackApiError as exc:
                # The decision stands; the workflow's next notify edits the message anyway.
                log.warning("could not mark %s as decided in Slack: %s", incident_id, exc)

    async def _send_decide(self, incident_id: str, request: DecideRequest) -> str | None:
        """Send the Update; None when the workflow recorded it, else why it was refused."""
        try:
            workflow_id, _ = names.parse_incident_id(incident_id)
        except ValueError as exc:
            return f"{exc}; nothing was changed"
        temporal = self._temporal()
        if temporal is None:
            return "Remedy is starting and not connected to Temporal yet; click again in a moment"
        handle = temporal.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
        try:
            await handle.execute_update(
                IncidentWorkflow.decide,
                request,
                rpc_timeout=timedelta(seconds=self._decide_timeout_s),
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return (
                f"no Remedy worker answered within {self._decide_timeout_s:g}s, so your decision "
                "is not confirmed; a worker that comes back may still apply it, so check this "
                "message before clicking again"
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            return cause.message if isinstance(cause, ApplicationError) else str(cause)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return f"incident {incident_id} is no longer open; nothing was changed"
            log.warning("decide on %s failed: %s", workflow_id, exc)
            return (
                f"Remedy could not reach Temporal ({exc.message}); nothing was changed, try again"
            )
        log.info("%s %sd by %s", incident_id, request.decision, request.approver)
        return None


@dataclass(frozen=True)
class _Click:
    incident_id: str
    request_id: str
    user: str
    channel: str
    message_ts: str
    trigger_id: str


def _read_click(body: dict[str, Any]) -> _Click | None:
    """The click on a Remedy decision button that `body` carries, or None (logged, without the
    payload: what a click carries stays out of the log)."""
    try:
        incident_id, request_id = parse_button_value(body["actions"][0]["value"])
        container = body["container"]
        return _Click(
            incident_id,
            request_id,
            user=str(body["user"]["id"]),
            channel=str(container["channel_id"]),
            message_ts=str(container["message_ts"]),
            trigger_id=str(body.get("trigger_id", "")),
        )
    except (LookupError, TypeError, ValueError):
        log.warning("ignored a Slack click that is not on a Remedy decision button")
        return None


def _refusal(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _message_blocks(
    client: AsyncWebClient, channel: str, message_ts: str
) -> list[dict[str, Any]] | None:
    try:
        response = await client.conversations_history(
            channel=channel, latest=message_ts, inclusive=True, limit=1
        )
    except SlackApiError as exc:
        log.warning("could not read Slack message %s/%s: %s", channel, message_ts, exc)
        return None
    messages = response.get("messages") or []
    if messages and messages[0].get("ts") == message_ts:
        blocks: list[dict[str, Any]] = messages[0].get("blocks") or []
        return blocks
    return None


def slack_listener(config: RemedyConfig, temporal: TemporalProvider) -> SlackListener | None:
    """The listener the environment configures, or None when Slack is off.

    HTTP mode needs the bot token and the signing secret; Socket Mode the bot token and the
    app-level token (xapp-...). Tokens come from the environment variables named in [slack].
    """
    slack = config.slack
    bot_token = secret(slack.bot_token_env)
    if not bot_token:
        return None
    if slack.socket_mode:
        app_token = secret(slack.app_token_env)
        if not app_token:
            log.warning(
                "[slack] socket_mode is on but $%s is unset: Slack is off", slack.app_token_env
            )
            return None
        return SlackListener(config, temporal, bot_token=bot_token, app_token=app_token)
    signing_secret = secret(slack.signing_secret_env)
    if not signing_secret:
        log.warning("$%s is set but $%s is not: Slack is off", slack.bot_token_env,
                    slack.signing_secret_env)  # fmt: skip
        return None
    return SlackListener(config, temporal, bot_token=bot_token, signing_secret=signing_secret)


def mount_slack(
    app: FastAPI, config: RemedyConfig, temporal: TemporalProvider
) -> SlackListener | None:
    """Add `POST /slack/events` (HTTP mode) to the intake; return the listener, or None.

    `temporal` returns the process's Temporal client (None while it is still connecting), so
    this can run when the app is built, before its lifespan connects. In Socket Mode no route
    is added: call `await listener.start()` in the lifespan and `await listener.stop()` after.
    """
    listener = slack_listener(config, temporal)
    if listener is None or listener.socket_mode:
        return listener

    async def slack_events(request: Request) -> Response:
        return await listener.handle(request)

    app.add_api_route(
        "/slack/events",
        slack_events,
        methods=["POST"],
        summary="Slack interactivity: Approve/Reject buttons and the reason modal (signed)",
        include_in_schema=True,
    )
    return listener
