"""A loopback Slack: the Web API methods Remedy calls, Socket Mode, and signed requests.

The real `slack_sdk` / `slack_bolt` clients talk to it through their `base_url`; it checks the
bearer token, keeps channels, messages (with metadata and threads), ephemeral messages and
opened views, and can inject the failures a real deployment meets: a dropped connection after
the write happened (a crash between the API call and remembering its result), a held response
(a worker killed mid-call), rate limits and API errors.

It runs on its own event loop in a thread (tests/fakes/loopback_thread.py).

The helpers at the bottom build what Slack sends to `POST /slack/events`: block_actions and
view_submission payloads, signed with the v0 HMAC scheme.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.loopback_thread import LoopbackServer

BOT_TOKEN = "xoxb-loopback-bot-token"
APP_TOKEN = "xapp-loopback-app-token"
SIGNING_SECRET = "loopback-signing-secret"
BOT_USER_ID = "UREMEDYBOT"
TEAM_ID = "T0LOOPBACK"


class SlackServer(LoopbackServer):
    """Faults are keyed by Web API method name, e.g. `fail("chat.postMessage", "drop")`;
    `respond` faults answer `{"ok": false, "error": body}` with `status` (429 adds Retry-After)."""

    def __init__(
        self,
        *,
        channels: dict[str, str] | None = None,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
    ) -> None:
        super().__init__()
        self.channels = channels or {"C0INCIDENTS": "checkout-incidents"}
        self.bot_token = bot_token
        self.app_token = app_token
        self.messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self._ts = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._ack_arrived: asyncio.Condition | None = None

    def routes(self, app: web.Application) -> None:
        self._ack_arrived = asyncio.Condition()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket/{session}", self._socket)
        app.on_shutdown.append(self._close_sockets)

    async def _close_sockets(self, _: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close()

    @property
    def api_url(self) -> str:
        """What `[slack] api_url` / AsyncWebClient(base_url=...) points at."""
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ inspection

    def top_level(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self.messages
                if m.get("thread_ts", m["ts"]) == m["ts"]
                and (channel is None or m["channel"] == channel)
            ]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self.messages
                if m.get("thread_ts") == ts and m["ts"] != ts
            ]

    def methods_called(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.calls]

    def send_envelope(
        self, payload: dict[str, Any], *, kind: str = "interactive", timeout: float = 10.0
    ) -> dict[str, Any]:
        """Push one Socket Mode envelope to the connected app; return its ack."""
        result: dict[str, Any] = self.run_on_loop(
            self._send_envelope(payload, kind, timeout), timeout + 1
        )
        return result

    # ------------------------------------------------------------------ the Web API

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        with self._lock:
            self.calls.append((method, args))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        header = request.headers.get("Authorization", "")
        if not header:
            return web.json_response({"ok": False, "error": "not_authed"})
        if header != f"Bearer {expected}":
            return web.json_response({"ok": False, "error": "invalid_auth"})

        fault = self.take_fault(method)
        if fault is not None and fault.mode == "respond":
            return web.json_response(
                {"ok": False, "error": fault.body}, status=fault.status, headers=fault.headers
            )
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        with self._lock:
            body = handler(args, request)
        await self.after_write(request, fault)
        return web.json_response(body)

    def _channel(self, value: str) -> str | None:
        name = value.removeprefix("#")
        if name in self.channels:
            return name
        return next((cid for cid, cname in self.channels.items() if cname == name), None)

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    @staticmethod
    def _json_arg(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def _auth_test(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://loopback.slack.test/",
            "team": "Loopback",
            "user": "remedy",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "B0REMEDY",
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": self._new_ts(),
            "user": BOT_USER_ID,
            "bot_id": "B0REMEDY",
            "text": args.get("text", ""),
            "blocks": self._json_arg(args.get("blocks")) or [],
        }
        if args.get("metadata"):
            message["metadata"] = self._json_arg(args["metadata"])
        if args.get("thread_ts"):
            parent = self._find(channel, str(args["thread_ts"]))
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = parent["ts"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["thread_ts"] = parent["ts"]
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)

    def _chat_update(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        message = self._find(channel, str(args.get("ts"))) if channel else None
        if channel is None or message is None:
            return {"ok": False, "error": "message_not_found" if channel else "channel_not_found"}
        if "text" in args:
            message["text"] = args["text"]
        if "blocks" in args:
            message["blocks"] = self._json_arg(args["blocks"]) or []
        if args.get("metadata"):
            message["metadata"] = self._json_arg(args["metadata"])
        message["edited"] = {"user": BOT_USER_ID, "ts": self._new_ts()}
        return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]}

    def _chat_postEphemeral(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        self.ephemerals.append(
            {"channel": channel, "user": args["user"], "text": args.get("text", "")}
        )
        return {"ok": True, "message_ts": self._new_ts()}

    def _views_open(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = self._json_arg(args.get("view"))
        opened = {"id": f"V{uuid.uuid4().hex[:10].upper()}", "team_id": TEAM_ID, **view}
        self.views.append({"trigger_id": args["trigger_id"], "view": opened})
        return {"ok": True, "view": opened}

    def _conversations_list(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channels = [
            {"id": cid, "name": name, "is_channel": True, "is_member": True}
            for cid, name in self.channels.items()
        ]
        return self._page(channels, args, "channels")

    def _conversations_history(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(args.get("oldest") or 0)
        latest = float(args.get("latest") or "inf")
        inclusive = _truthy(args.get("inclusive"))

        def in_range(ts: float) -> bool:
            return oldest <= ts <= latest if inclusive else oldest < ts < latest

        found = [
            m
            for m in reversed(self.messages)
            if m["channel"] == channel
            and m.get("thread_ts", m["ts"]) == m["ts"]
            and in_range(float(m["ts"]))
        ]
        return self._page(self._visible(found, args), args, "messages")

    def _conversations_replies(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        channel = self._channel(str(args.get("channel", "")))
        parent = self._find(channel, str(args.get("ts"))) if channel else None
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        thread = [parent] + [
            m for m in self.messages if m.get("thread_ts") == parent["ts"] and m is not parent
        ]
        return self._page(self._visible(thread, args), args, "messages")

    def _apps_connections_open(self, args: dict[str, Any], _: web.Request) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket/{uuid.uuid4().hex}"}

    @staticmethod
    def _visible(messages: list[dict[str, Any]], args: dict[str, Any]) -> list[dict[str, Any]]:
        shown = copy.deepcopy(messages)
        if not _truthy(args.get("include_all_metadata")):
            for message in shown:
                message.pop("metadata", None)
        return shown

    @staticmethod
    def _page(items: list[dict[str, Any]], args: dict[str, Any], key: str) -> dict[str, Any]:
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 100)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "ok": True,
            key: page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    # ------------------------------------------------------------------ Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0REMEDY"}}
        )
        assert self._ack_arrived is not None
        async for frame in ws:
            if frame.type.name != "TEXT":
                continue
            ack = json.loads(frame.data)
            async with self._ack_arrived:
                with self._lock:
                    self.acks[ack["envelope_id"]] = ack
                self._ack_arrived.notify_all()
        self._sockets.remove(ws)
        return ws

    async def _send_envelope(
        self, payload: dict[str, Any], kind: str, timeout: float
    ) -> dict[str, Any]:
        assert self._ack_arrived is not None
        deadline = time.monotonic() + timeout
        while not self._sockets:
            if time.monotonic() > deadline:
                raise AssertionError("no Socket Mode client connected")
            await asyncio.sleep(0.02)
        envelope_id = str(uuid.uuid4())
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        async with self._ack_arrived:
            await asyncio.wait_for(
                self._ack_arrived.wait_for(lambda: envelope_id in self.acks), timeout
            )
        return self.acks[envelope_id]


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


# ---------------------------------------------------------------------------- what Slack sends


def signed_headers(
    body: bytes, secret: str = SIGNING_SECRET, *, timestamp: int | None = None
) -> dict[str, str]:
    """Slack's v0 signature: HMAC-SHA256 over 'v0:<timestamp>:<body>' with the signing secret."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + stamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


def form_body(payload: dict[str, Any]) -> bytes:
    """How Slack posts interactivity payloads: one form field `payload` holding JSON."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def block_actions(
    message: dict[str, Any], action_id: str, user_id: str, *, trigger_id: str | None = None
) -> dict[str, Any]:
    """The block_actions payload of a click on the button `action_id` of a posted message."""
    action: dict[str, Any] | None = None
    for block in message.get("blocks", []):
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                action = {
                    "type": element["type"],
                    "action_id": action_id,
                    "block_id": block.get("block_id", ""),
                    "value": element.get("value", ""),
                    "text": element.get("text", {}),
                    "action_ts": f"{time.time():.6f}",
                }
    if action is None:
        raise AssertionError(f"message {message.get('ts')} has no button {action_id!r}")
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "loopback"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0REMEDY",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": message["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**12}.trigger",
        "channel": {"id": message["channel"], "name": "incidents"},
        "message": message,
        "response_url": "http://127.0.0.1:9/response-url-unused",
        "actions": [action],
    }


def view_submission(view: dict[str, Any], user_id: str, values: dict[str, str]) -> dict[str, Any]:
    """The view_submission payload of a modal whose inputs (block_id == action_id) hold `values`."""
    state = {
        block_id: {block_id: {"type": "plain_text_input", "value": value}}
        for block_id, value in values.items()
    }
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "loopback"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0REMEDY",
        "token": "legacy-verification-token",
        "trigger_id": f"{uuid.uuid4().int % 10**12}.trigger",
        "view": {**view, "state": {"values": state}},
    }
