"""The model calls of one activity run: the one door to a model, with cache, usage and caps.

Every request is redacted before it leaves, answered from a content-addressed cache in the
artifact store when it was asked before (a retried activity replays its finished turns for
free), counted against the incident's token budget, priced, and written to the transcript
with every tool call. Progress is reported through a callback (the activity's heartbeat), so
this module never imports a worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.llm.conversation import ChatBackend, ChatMessage, ToolCall, ToolResult, ToolSpec, Turn
from remedy.llm.pricing import estimate_cost
from remedy.llm.prompts import ALREADY_SHOWN, clip
from remedy.llm.repo_tools import RepoTools
from remedy.models import ArtifactRef, LLMUsage, ToolCallSummary
from remedy.redact import redact_text

Progress = Callable[[str], None]
"""Told what the session is doing, every few seconds while a model answers."""

PROGRESS_INTERVAL_S = 5.0
MAX_CALLS_PER_TURN = 6
MAX_SUMMARIES = 40

T = TypeVar("T")


def cache_key(payload: Mapping[str, Any]) -> str:
    """Content address of one model request: same backend, model, prompt and tools, same key."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def _reporting(work: Awaitable[T], note: str, progress: Progress) -> T:
    """Await `work`, reporting progress meanwhile: a model may stream its answer for minutes."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
            if done:
                return task.result()
            progress(note)
    finally:
        task.cancel()


class TokenCapReached(Exception):
    """The incident's token budget is spent; the message says how far."""


def _without_secrets(message: ChatMessage) -> ChatMessage:
    return message.model_copy(
        update={
            "text": redact_text(message.text),
            "tool_results": [
                result.model_copy(update={"content": redact_text(result.content)})
                for result in message.tool_results
            ],
        }
    )


class Session:
    """The model calls of one activity run: cache, usage, cost, transcript, tool summaries."""

    def __init__(
        self,
        config: RemedyConfig,
        store: ArtifactStore,
        tools: RepoTools,
        *,
        token_budget: int,
        progress: Progress | None = None,
    ) -> None:
        self._llm = config.llm
        self._store = store
        self.tools = tools
        self._progress: Progress = progress or (lambda note: None)
        self.token_budget = token_budget
        self.tokens = 0
        self.cost_usd = 0.0
        self.events: list[dict[str, Any]] = []
        self.summaries: list[ToolCallSummary] = []
        self._usage: dict[tuple[str, str], LLMUsage] = {}

    @property
    def usage(self) -> list[LLMUsage]:
        return list(self._usage.values())

    def note(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "at": time.time(), **fields})

    async def chat(
        self,
        backend: ChatBackend,
        *,
        system: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        answer: ToolSpec,
        force_answer: bool,
    ) -> Turn:
        # The one door to a model: whatever reached the transcript (repository code, tool
        # output, log text), a secret in it stops here and never enters a prompt.
        system = redact_text(system)
        messages = [_without_secrets(message) for message in messages]
        request = {
            "backend": backend.name,
            "model": backend.model,
            "system": system,
            "messages": [m.model_dump() for m in messages],
            "tools": [t.model_dump() for t in tools],
            "answer": answer.model_dump(),
            "force_answer": force_answer,
            "max_tokens": self._llm.max_output_tokens,
            "temperature": self._llm.temperature,
        }
        key = f"llm-cache/{cache_key(request)}.json"
        started = time.monotonic()
        if self._llm.cache and self._store.exists(key):
            turn = Turn.model_validate(self._store.get_json(key)).model_copy(
                update={"cached": True}
            )
        else:
            turn = await _reporting(
                backend.chat(
                    system=system,
                    messages=messages,
                    tools=tools,
                    answer=answer,
                    force_answer=force_answer,
                    max_tokens=self._llm.max_output_tokens,
                    temperature=self._llm.temperature,
                ),
                f"waiting for {backend.name} ({len(messages)} messages)",
                self._progress,
            )
            if self._llm.cache:
                self._store.put_json(key, turn.model_dump(), model_output=True)
        spent_in, spent_out = (0, 0) if turn.cached else (turn.input_tokens, turn.output_tokens)
        cost, priced = estimate_cost(
            backend.name, backend.model, spent_in, spent_out, self._llm.prices
        )
        usage = self._usage.setdefault(
            (backend.name, backend.model), LLMUsage(backend=backend.name, model=backend.model)
        )
        usage.calls += 1
        usage.cached_calls += int(turn.cached)
        usage.input_tokens += spent_in
        usage.output_tokens += spent_out
        usage.cost_usd += cost
        usage.priced = usage.priced and priced
        self.tokens += spent_in + spent_out
        self.cost_usd += cost
        self.note(
            "model_turn",
            backend=backend.name,
            model=backend.model,
            cache_key=key,
            force_answer=force_answer,
            tools_offered=[t.name for t in tools],
            messages_sent=len(messages),
            reply=turn.model_dump(),
            cost_usd=cost,
            priced=priced,
            duration_s=round(time.monotonic() - started, 3),
        )
        self._progress(f"{backend.name} turn {usage.calls}")
        if self.tokens > self.token_budget:
            raise TokenCapReached(
                f"the incident has used {self.tokens} LLM tokens, over "
                f"limits.max_tokens_per_incident = {self.token_budget}"
            )
        return turn

    async def run_tools(
        self, calls: Sequence[ToolCall], *, repeated: Collection[str] = ()
    ) -> list[ToolResult]:
        """Run a turn's calls; `repeated`: ids of calls the conversation already answered,
        which get a reminder instead of the same result again."""
        results = []
        for number, call in enumerate(calls):
            if number >= MAX_CALLS_PER_TURN or call.id in repeated:
                result = ToolResult(
                    call_id=call.id,
                    name=call.name,
                    content=ALREADY_SHOWN
                    if call.id in repeated
                    else f"not run: at most {MAX_CALLS_PER_TURN} tool calls per turn",
                    is_error=True,
                )
            else:
                result = await self.tools.run(call)
            arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
            # The transcript keeps what the model was shown: the result as chat() redacts it.
            shown = result.model_copy(update={"content": redact_text(result.content)})
            self.note("tool_call", call=call.model_dump(), result=shown.model_dump())
            if len(self.summaries) < MAX_SUMMARIES:
                self.summaries.append(
                    ToolCallSummary(
                        name=call.name,
                        arguments=clip(arguments, 160),
                        ok=not result.is_error,
                        result_chars=len(result.content),
                    )
                )
            results.append(result)
        self._progress(f"ran {len(calls)} tool calls")
        return results

    def save(self, key: str, **extra: Any) -> ArtifactRef:
        """The transcript: what the model was shown (redacted already) and what it answered."""
        return self._store.put_json(
            key,
            {
                **extra,
                "tokens": self.tokens,
                "cost_usd": self.cost_usd,
                "usage": [u.model_dump() for u in self.usage],
                "events": self.events,
            },
            model_output=True,
        )
