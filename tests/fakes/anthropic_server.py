"""A loopback Anthropic Messages API: `POST /v1/messages`, streamed (SSE) or not, with tool use.

The real `anthropic` client talks to it through `base_url` (the SDK has its own HTTP stack,
so only a real server sees its requests). Each request takes the next scripted reply from a
queue (or asks `responder` when the queue is empty):

    with AnthropicServer() as claude:
        claude.script(tool_use("grep", pattern="sku"), answer(diagnosis))
        config.llm.anthropic_base_url = claude.url

Like the API it checks the bearer key (401 `authentication_error`), rejects a conversation
whose `tool_use` blocks are not answered by `tool_result` blocks in the next message (400),
and can answer 429 `rate_limit_error` with `retry-after` or 529 `overloaded_error`, before
the stream or inside it (an SSE `error` event).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback_thread import ScriptedServer

API_KEY = "sk-ant-loopback-key"
DEFAULT_MODEL = "claude-sonnet-4-5"


@dataclass
class ClaudeReply:
    """One scripted answer: content blocks, or an error."""

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int = 1_000
    output_tokens: int = 200
    status: int = 200
    error_type: str | None = None
    message: str = ""
    retry_after: float | None = None
    in_stream: bool = False  # the error arrives as an SSE `error` event after message_start


def text(content: str, *, input_tokens: int = 1_000, output_tokens: int = 200) -> ClaudeReply:
    return ClaudeReply(
        content=[{"type": "text", "text": content}],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def tool_use(name: str, **arguments: Any) -> ClaudeReply:
    return ClaudeReply(
        content=[{"type": "tool_use", "name": name, "input": arguments}], stop_reason="tool_use"
    )


def answer(
    value: dict[str, Any],
    *,
    tool: str = "submit_diagnosis",
    input_tokens: int = 1_000,
    output_tokens: int = 200,
) -> ClaudeReply:
    """The model calls the answer tool with `value` as its input."""
    return ClaudeReply(
        content=[{"type": "tool_use", "name": tool, "input": value}],
        stop_reason="tool_use",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def error(
    status: int,
    error_type: str,
    message: str = "",
    *,
    retry_after: float | None = None,
    in_stream: bool = False,
) -> ClaudeReply:
    return ClaudeReply(
        status=status,
        error_type=error_type,
        message=message or error_type.replace("_", " "),
        retry_after=retry_after,
        in_stream=in_stream,
    )


def rate_limited(retry_after: float = 1.0) -> ClaudeReply:
    return error(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
        retry_after=retry_after,
    )


def overloaded(*, in_stream: bool = False) -> ClaudeReply:
    return error(529, "overloaded_error", "Overloaded", in_stream=in_stream)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class AnthropicServer(ScriptedServer[ClaudeReply]):
    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        responder: Callable[[dict[str, Any]], ClaudeReply] | None = None,
    ) -> None:
        super().__init__(responder)
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    def forget_requests(self) -> None:
        self.requests.clear()
        self.headers.clear()

    def exhausted(self, body: dict[str, Any]) -> ClaudeReply:
        return error(500, "api_error", "loopback Anthropic: no scripted reply left")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    @staticmethod
    def _error(status: int, error_type: str, message: str, **headers: str) -> web.Response:
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_loopback",
        }
        return web.json_response(
            body, status=status, headers={"request-id": "req_loopback", **headers}
        )

    def _authorised(self, request: web.Request) -> bool:
        bearer = request.headers.get("Authorization", "")
        return (
            bearer == f"Bearer {self.api_key}" or request.headers.get("x-api-key") == self.api_key
        )

    @staticmethod
    def _conversation_problem(body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str) or not isinstance(body.get("max_tokens"), int):
            return "model and max_tokens are required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if messages[0].get("role") != "user":
            return "messages.0.role: the first message must use the user role"
        pending: list[str] = []
        for index, message in enumerate(messages):
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if block.get("type") == "text" and not block.get("text"):
                    return f"messages.{index}: text content blocks must be non-empty"
            results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if pending and (message.get("role") != "user" or not set(pending) <= results):
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(pending)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
            if results - set(pending):
                return f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks"
            pending = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if pending and message.get("role") != "assistant":
                return f"messages.{index}: only assistant messages may hold tool_use blocks"
        choice = body.get("tool_choice") or {}
        names = {tool.get("name") for tool in body.get("tools") or []}
        if choice.get("type") == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: no tool named {choice.get('name')!r} in tools"
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._error(401, "authentication_error", "invalid x-api-key")
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        fault = self.take_fault("messages")
        if fault and fault.mode == "respond":
            return self._error(fault.status, str(fault.body or "api_error"), "injected fault")
        await self.after_write(request, fault)
        if problem := self._conversation_problem(body):
            return self._error(400, "invalid_request_error", problem)
        reply = self.next_reply(body)
        if reply.error_type is not None and not reply.in_stream:
            extra = {"retry-after": str(reply.retry_after)} if reply.retry_after is not None else {}
            return self._error(reply.status, reply.error_type, reply.message, **extra)
        content = [
            {**block, "id": block.get("id") or f"toolu_{next(self._ids):04d}"}
            if block["type"] == "tool_use"
            else block
            for block in reply.content
        ]
        message = {
            "id": f"msg_{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        }
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": "req_loopback"})
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "request-id": "req_loopback"}
        )
        await response.prepare(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
        }
        await response.write(_sse("message_start", {"type": "message_start", "message": start}))
        if reply.error_type is not None:
            error_body = {
                "type": "error",
                "error": {"type": reply.error_type, "message": reply.message},
            }
            await response.write(_sse("error", error_body))
            await response.write_eof()
            return response
        await response.write(_sse("ping", {"type": "ping"}))
        for index, block in enumerate(content):
            for event in self._block_events(index, block):
                await response.write(_sse(event["type"], event))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        }
        await response.write(_sse("message_delta", delta))
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response

    @staticmethod
    def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        start: dict[str, Any]
        if block["type"] == "text":
            words = block["text"]
            half = len(words) // 2
            start = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": part}
                for part in (words[:half], words[half:])
                if part
            ]
        else:
            encoded = json.dumps(block["input"])
            half = len(encoded) // 2
            start = {
                "type": "tool_use",
                "id": block["id"],
                "name": block["name"],
                "input": {},
            }
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in (encoded[:half], encoded[half:])
            ]
        return [
            {"type": "content_block_start", "index": index, "content_block": start},
            *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": index},
        ]
