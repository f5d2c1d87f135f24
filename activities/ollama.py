"""Ollama, the local backend: the `ollama` async client, streamed chat, JSON-schema answers.

Investigation turns offer the repository tools and the answer tool; the answer turn offers
the same tools (the prompt Ollama renders, and the KV cache of it, stay the same) and sends
the answer's JSON schema as `format`, which Ollama enforces while the model generates; a
turn without tools (the JSON action protocol, remedy.llm.agent) sends its schema the same
way. Every request carries `num_ctx`. The client makes one HTTP request per call and never
retries; Temporal owns retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import ollama

from remedy.config import LLMConfig
from remedy.llm.conversation import (
    OLLAMA,
    BackendError,
    BackendName,
    BackendRateLimited,
    BackendUnavailable,
    ChatMessage,
    ToolCall,
    ToolSpec,
    ToolsUnsupported,
    Turn,
)

PROBE_TIMEOUT_S = 5.0


def wire_messages(system: str, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in messages:
        if message.role == "user":
            wire.append({"role": "user", "content": message.text})
        elif message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.text}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {"function": {"name": call.name, "arguments": call.arguments}}
                    for call in message.tool_calls
                ]
            wire.append(entry)
        else:
            for result in message.tool_results:
                wire.append({"role": "tool", "content": result.content, "tool_name": result.name})
            if message.text:
                wire.append({"role": "user", "content": message.text})
    return wire


def wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


class OllamaBackend:
    name: BackendName = OLLAMA

    def __init__(self, llm: LLMConfig) -> None:
        self.model = llm.ollama_model
        self.host = llm.ollama_host.rstrip("/")
        self._client = ollama.AsyncClient(host=self.host, timeout=llm.request_timeout_s)
        self._num_ctx = llm.ollama_num_ctx
        self._timeout_reason = (
            f"Ollama at {self.host} did not answer within [llm] request_timeout_s = "
            f"{llm.request_timeout_s:g} s (a model on a CPU may need longer, or a smaller "
            "ollama_num_ctx)"
        )
        self.context_chars: int | None = llm.ollama_context_chars()
        # Also learned: a model without tool support answers 400 when offered tools, and a
        # small one may answer in text instead of calling them (remedy.llm.agent sets it).
        self.native_tools = llm.ollama_native_tools

    async def unavailable_reason(self) -> str | None:
        try:
            listing = await asyncio.wait_for(self._client.list(), PROBE_TIMEOUT_S)
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError, TimeoutError):
            return f"Ollama at {self.host} unreachable"
        names = {model.model for model in listing.models if model.model}
        if self.model not in names and f"{self.model}:latest" not in names:
            return (
                f"Ollama at {self.host} has no model {self.model} (run `ollama pull {self.model}`)"
            )
        return None

    async def chat(
        self,
        *,
        system: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        answer: ToolSpec,
        force_answer: bool,
        max_tokens: int,
        temperature: float,
    ) -> Turn:
        offered = [wire_tool(t) for t in (*tools, answer)] if tools else None
        try:
            return await self._stream(
                wire_messages(system, messages),
                tools=offered,
                schema=answer.parameters if force_answer or not tools else None,
                options={
                    "temperature": temperature,
                    "num_predict": max_tokens,
                    "num_ctx": self._num_ctx,
                },
            )
        except ollama.ResponseError as exc:
            if offered and "does not support tools" in exc.error:
                self.native_tools = False
                raise ToolsUnsupported(OLLAMA, f"{self.model} takes no tools") from None
            raise self._classify(exc) from None
        except httpx.TimeoutException:
            raise BackendUnavailable(OLLAMA, self._timeout_reason) from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise BackendUnavailable(
                OLLAMA, f"Ollama at {self.host} unreachable ({type(exc).__name__})"
            ) from None

    async def _stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        schema: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> Turn:
        parts = await self._client.chat(
            model=self.model,
            messages=messages,
            tools=tools,
            format=schema,
            options=options,
            stream=True,
        )
        text: list[str] = []
        calls: list[ToolCall] = []
        turn = Turn()
        async for part in parts:
            if part.message.content:
                text.append(part.message.content)
            for call in part.message.tool_calls or []:
                # Ollama gives calls no ids; a position is enough to pair results with calls.
                calls.append(
                    ToolCall(
                        id=f"call_{len(calls)}",
                        name=call.function.name,
                        arguments=dict(call.function.arguments),
                    )
                )
            if part.done:
                turn.input_tokens = part.prompt_eval_count or 0
                turn.output_tokens = part.eval_count or 0
                turn.stop_reason = part.done_reason
        turn.text = "".join(text)
        turn.tool_calls = calls
        return turn

    def _classify(self, exc: ollama.ResponseError) -> BackendError:
        status, message = exc.status_code, exc.error.strip()[:300]
        if status in {401, 403}:
            return BackendUnavailable(
                OLLAMA, f"Ollama at {self.host} refused access (HTTP {status})", kind="auth"
            )
        if status in {429, 503}:
            return BackendRateLimited(OLLAMA, f"Ollama at {self.host} is busy (HTTP {status})")
        if status == 404:
            return BackendUnavailable(
                OLLAMA,
                f"Ollama at {self.host} has no model {self.model} (run `ollama pull {self.model}`)",
            )
        if 400 <= status < 500:
            return BackendUnavailable(
                OLLAMA, f"Ollama refused the request (HTTP {status}): {message}", kind="rejected"
            )
        if status < 0:  # an error line in the middle of a streamed answer
            return BackendUnavailable(OLLAMA, f"Ollama failed while answering: {message}")
        return BackendUnavailable(OLLAMA, f"Ollama failed (HTTP {status}): {message}")
