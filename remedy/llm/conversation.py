"""The backend-neutral conversation: messages, turns, tool specs and the backend protocol.

Ollama and Claude (activities/ollama.py, activities/claude.py) each render these in their own
wire form and raise the errors below, so the loop and its tests never see a client library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

BackendName = Literal["ollama", "claude"]
OLLAMA: BackendName = "ollama"
CLAUDE: BackendName = "claude"


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    call_id: str
    name: str
    content: str
    is_error: bool = False


class ChatMessage(BaseModel):
    """One message in a backend-neutral transcript; each backend renders it in its own wire form.

    `tool` messages answer the previous assistant turn's tool calls (and may add text after
    the results, e.g. the reason an answer was rejected).
    """

    role: Literal["user", "assistant", "tool"]
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_results: list[ToolResult] = Field(default_factory=list)


class Turn(BaseModel):
    """What a backend answered to one request."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    cached: bool = False


class ToolSpec(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class ChatBackend(Protocol):
    """Ollama or Claude behind one interface (activities/ollama.py, activities/claude.py)."""

    name: BackendName
    model: str

    async def unavailable_reason(self) -> str | None:
        """None when the backend can be asked now; otherwise what is missing, for a person."""
        ...

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
        """One model turn. `tools` may be called; `answer` is the final shape (a forced tool or a
        JSON schema, as the backend supports it), demanded outright when `force_answer`."""
        ...


class BackendError(Exception):
    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason


class BackendUnavailable(BackendError):
    """Down, misconfigured (auth) or refusing this request: another attempt will not help now,
    another backend might."""

    def __init__(
        self, backend: str, reason: str, *, kind: Literal["down", "auth", "rejected"] = "down"
    ) -> None:
        super().__init__(backend, reason)
        self.kind = kind


class BackendRateLimited(BackendError):
    """429 / overloaded: the same request will work later."""

    def __init__(self, backend: str, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(backend, reason)
        self.retry_after_s = retry_after_s
