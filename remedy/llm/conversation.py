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
    native_tools: bool
    """Offer the tools as function calls. False: the loop offers them as JSON answers instead
    (remedy.llm.agent), and sets it so for a model that answers in text when offered tools."""
    context_chars: int | None
    """How much conversation fits the model's window beside its answer; None: no concern."""

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
        """One model turn. `tools` may be called and `answer` is offered with them (a tool or a
        JSON schema, as the backend supports it); `force_answer` demands it outright and offers
        the same tools, so that the prompt's prefix, and the server's cache of it, stay the
        same. Raises ToolsUnsupported when the model cannot be offered tools."""
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


class ToolsUnsupported(BackendError):
    """The model takes no tool definitions (Ollama answers 400): ask again without them."""


class BackendRateLimited(BackendError):
    """429 / overloaded: the same request will work later."""

    def __init__(self, backend: str, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(backend, reason)
        self.retry_after_s = retry_after_s
