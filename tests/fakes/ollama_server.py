"""A loopback Ollama: `/api/tags` and `/api/chat` (streamed JSON lines or one object).

The real `ollama` client talks to it through `host`. Each chat request takes the next scripted
reply from a queue (or asks `responder` when the queue is empty), so a test spells out the
conversation:

    with OllamaServer() as ollama:
        ollama.script(tool_call("read_file", path="app/cart.py"), answer(diagnosis))
        config.llm.ollama_host = ollama.url

Like Ollama, a chat for a model that is not pulled answers 404, streamed chunks each carry
`message` and the last one (`done: true`) carries the token counts, and a failure in the
middle of a stream is a JSON line with `error`. Faults from LoopbackServer apply to the keys
"chat" and "tags" (`fail("chat", "respond", status=503, body="server busy")`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback_thread import ScriptedServer

DEFAULT_MODEL = "qwen2.5-coder:7b"
CREATED_AT = "2026-01-05T09:00:00.000000Z"


@dataclass
class OllamaReply:
    """One scripted answer to POST /api/chat."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 200
    output_tokens: int = 50
    status: int = 200
    error: str | None = None
    stream_error: str | None = None  # sent as a JSON line after the first chunk


def answer(value: Any, *, prompt_tokens: int = 200, output_tokens: int = 50) -> OllamaReply:
    """The model answers with `value` as JSON text (what `format` makes it produce)."""
    return text(json.dumps(value), prompt_tokens=prompt_tokens, output_tokens=output_tokens)


def text(content: str, *, prompt_tokens: int = 200, output_tokens: int = 50) -> OllamaReply:
    return OllamaReply(content=content, prompt_tokens=prompt_tokens, output_tokens=output_tokens)


def tool_call(name: str, **arguments: Any) -> OllamaReply:
    return OllamaReply(tool_calls=[{"function": {"name": name, "arguments": arguments}}])


def error(status: int, message: str) -> OllamaReply:
    return OllamaReply(status=status, error=message)


class OllamaServer(ScriptedServer[OllamaReply]):
    def __init__(
        self,
        *,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        responder: Callable[[dict[str, Any]], OllamaReply] | None = None,
    ) -> None:
        super().__init__(responder)
        self.models = list(models)
        self.chats: list[dict[str, Any]] = []

    def forget_requests(self) -> None:
        self.chats.clear()

    def exhausted(self, body: dict[str, Any]) -> OllamaReply:
        return error(500, "loopback Ollama: no scripted reply left for this chat")

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/chat", self._chat)

    async def _root(self, _: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.0"})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        if (fault := self.take_fault("tags")) and fault.mode == "respond":
            return web.json_response({"error": fault.body}, status=fault.status)
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2026-01-05T09:00:00Z",
                "size": 4_683_087_332,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B"},
            }
            for name in self.models
        ]
        return web.json_response({"models": models})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.chats.append(body)
        fault = self.take_fault("chat")
        if fault and fault.mode == "respond":
            return web.json_response({"error": fault.body}, status=fault.status)
        await self.after_write(request, fault)
        model = body.get("model")
        if model not in self.models and f"{model}:latest" not in self.models:
            return web.json_response(
                {"error": f'model "{model}" not found, try pulling it first'}, status=404
            )
        if not isinstance(body.get("messages"), list):
            return web.json_response({"error": "messages is required"}, status=400)
        reply = self.next_reply(body)
        if reply.error is not None and reply.status != 200:
            return web.json_response({"error": reply.error}, status=reply.status)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        final = {
            "model": model,
            "created_at": CREATED_AT,
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": 1_000,
            "eval_count": reply.output_tokens,
            "eval_duration": 1_000,
        }
        if not body.get("stream", True):
            return web.json_response({**final, "message": message})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for chunk in self._chunks(model, reply):
            await response.write(json.dumps(chunk).encode() + b"\n")
            if reply.stream_error is not None:
                await response.write(json.dumps({"error": reply.stream_error}).encode() + b"\n")
                await response.write_eof()
                return response
        last = {**final, "message": {"role": "assistant", "content": ""}}
        await response.write(json.dumps(last).encode() + b"\n")
        await response.write_eof()
        return response

    @staticmethod
    def _chunks(model: str, reply: OllamaReply) -> list[dict[str, Any]]:
        size = max(len(reply.content) // 3, 1)
        pieces = [reply.content[i : i + size] for i in range(0, len(reply.content), size)]
        chunks = [
            {
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            for piece in pieces
        ]
        if reply.tool_calls:
            chunks.append(
                {
                    "model": model,
                    "created_at": CREATED_AT,
                    "message": {"role": "assistant", "content": "", "tool_calls": reply.tool_calls},
                    "done": False,
                }
            )
        return chunks or [
            {
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": ""},
                "done": False,
            }
        ]
