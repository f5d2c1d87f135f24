"""Claude, the cloud backend: the `anthropic` async client, streamed Messages API, tool use.

Every turn must call a tool (`tool_choice: any`): a repository tool or the answer tool whose
input schema is the answer's shape; the answer turn forces the answer tool among the same
tools, so the cached prefix (tools, system prompt) is the same on every turn. The key is read
from the environment variable named in `[llm]` at each call, never stored in config or
results. The client's own retries are off; Temporal owns retries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import anthropic

from remedy.config import LLMConfig, secret
from remedy.llm.conversation import (
    CLAUDE,
    BackendError,
    BackendName,
    BackendRateLimited,
    BackendUnavailable,
    ChatMessage,
    ToolCall,
    ToolSpec,
    Turn,
)


def wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            wire.append({"role": "user", "content": message.text})
        elif message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.text:
                blocks.append({"type": "text", "text": message.text})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            )
            wire.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "."}]})
        else:
            results: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": result.call_id,
                    "content": result.content,
                    "is_error": result.is_error,
                }
                for result in message.tool_results
            ]
            if message.text:
                results.append({"type": "text", "text": message.text})
            wire.append({"role": "user", "content": results})
    return wire


def wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


class ClaudeBackend:
    name: BackendName = CLAUDE
    native_tools = True  # every turn must call a tool, so no turn answers in text
    context_chars: int | None = None  # 200k tokens hold any prompt and tool results we send

    def __init__(self, llm: LLMConfig) -> None:
        self.model = llm.anthropic_model
        self._llm = llm
        self._client: anthropic.AsyncAnthropic | None = None
        self._key_digest = ""

    @property
    def _key_env(self) -> str:
        return self._llm.anthropic_api_key_env

    async def unavailable_reason(self) -> str | None:
        return None if secret(self._key_env) else f"{self._key_env} unset"

    def _client_now(self) -> anthropic.AsyncAnthropic:
        """One client per key: a rotated key in the environment takes effect on the next call."""
        key = secret(self._key_env)
        if key is None:
            raise BackendUnavailable(CLAUDE, f"{self._key_env} unset", kind="auth")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if self._client is None or digest != self._key_digest:
            self._client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=self._llm.anthropic_base_url,
                max_retries=0,
                timeout=self._llm.request_timeout_s,
            )
            self._key_digest = digest
        return self._client

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
        # `temperature` is not sent: current Claude models take no sampling parameters.
        client = self._client_now()
        offered = [*(wire_tool(t) for t in tools), wire_tool(answer)]
        choice: dict[str, Any] = (
            {"type": "tool", "name": answer.name} if force_answer or not tools else {"type": "any"}
        )
        try:
            async with client.messages.stream(
                model=self.model,
                max_tokens=max_tokens,
                system=system,
                messages=wire_messages(messages),  # type: ignore[arg-type]
                tools=offered,  # type: ignore[arg-type]
                tool_choice=choice,  # type: ignore[arg-type]
            ) as stream:
                message = await stream.get_final_message()
        except anthropic.APIStatusError as exc:
            raise self._classify(exc, client) from None
        except anthropic.APITimeoutError:
            raise BackendUnavailable(
                CLAUDE,
                f"Claude at {self._llm.anthropic_base_url} did not answer within "
                f"[llm] request_timeout_s = {self._llm.request_timeout_s:g} s",
            ) from None
        except anthropic.APIConnectionError as exc:
            raise BackendUnavailable(
                CLAUDE, f"Claude at {self._llm.anthropic_base_url} unreachable ({exc.message})"
            ) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            ToolCall(id=block.id, name=block.name, arguments=dict(block.input))
            for block in message.content
            if block.type == "tool_use" and isinstance(block.input, dict)
        ]
        usage = message.usage
        return Turn(
            text=text,
            tool_calls=calls,
            input_tokens=usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0),
            output_tokens=usage.output_tokens,
            stop_reason=message.stop_reason,
        )

    def _classify(
        self, exc: anthropic.APIStatusError, client: anthropic.AsyncAnthropic
    ) -> BackendError:
        status, kind = exc.status_code, exc.type or "error"
        detail = (exc.api_message or str(exc))[:300]
        if status in {401, 403} or kind in {"authentication_error", "permission_error"}:
            return BackendUnavailable(
                CLAUDE,
                f"Claude rejected the key in {self._key_env} (HTTP {status} {kind}): "
                "set a valid key",
                kind="auth",
            )
        if status in {429, 529} or kind in {"rate_limit_error", "overloaded_error"}:
            state = "overloaded" if status == 529 or kind == "overloaded_error" else "rate-limiting"
            # The SDK reads Retry-After itself (seconds, retry-after-ms or a date); its retries
            # are off, so the wait it asks for goes to Temporal instead.
            wait = client._parse_retry_after_header(exc.response.headers)
            return BackendRateLimited(
                CLAUDE,
                f"Claude is {state} (HTTP {status} {kind})",
                retry_after_s=max(wait, 0.0) if wait is not None else None,
            )
        if 400 <= status < 500:
            return BackendUnavailable(
                CLAUDE,
                f"Claude refused the request (HTTP {status} {kind}): {detail}",
                kind="rejected",
            )
        return BackendUnavailable(CLAUDE, f"Claude failed (HTTP {status} {kind}): {detail}")
