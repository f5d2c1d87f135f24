"""The tool loop: ask, let the model investigate, check its answer, feed problems back.

`converse` is backend-neutral: it speaks to a ChatBackend through a Session and takes the
answer's parser and checks as arguments, so the diagnosis and the regression test share it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from remedy.llm.answers import MalformedAnswer
from remedy.llm.conversation import ChatBackend, ChatMessage, ToolResult, ToolSpec, Turn
from remedy.llm.prompts import ANSWER_NOW, rejection_feedback
from remedy.llm.repo_tools import REPO_TOOLS
from remedy.llm.session import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Rejected:
    """No answer passed its checks: which way the last one failed, and why."""

    outcome: Literal["invalid", "malformed"]
    detail: str


def _reply_to(turn: Turn, answer: ToolSpec, feedback: str) -> ChatMessage:
    """The message that answers a rejected turn: every tool call in it gets a result."""
    if not turn.tool_calls:
        return ChatMessage(role="user", text=feedback)
    answered = any(call.name == answer.name for call in turn.tool_calls)
    results = [
        ToolResult(
            call_id=call.id,
            name=call.name,
            content=feedback if call.name == answer.name else "not run: the turn gave an answer",
            is_error=True,
        )
        for call in turn.tool_calls
    ]
    return ChatMessage(role="tool", tool_results=results, text="" if answered else feedback)


async def converse(
    session: Session,
    backend: ChatBackend,
    *,
    system: str,
    prompt: str,
    answer: ToolSpec,
    parse: Callable[[str | Mapping[str, Any]], T],
    validate: Callable[[T], Awaitable[list[str]]],
    max_attempts: int,
    max_iterations: int,
) -> T | Rejected:
    """Ask until an answer passes `validate` or `max_attempts` answers were rejected.

    Between answers the model may call the repository tools, `max_iterations` turns in all;
    then it must answer. Raises BackendUnavailable, BackendRateLimited or TokenCapReached.
    """
    messages = [ChatMessage(role="user", text=prompt)]
    iterations = 0
    outcome: Rejected = Rejected("malformed", "no answer")
    for attempt in range(1, max_attempts + 1):
        force = False
        while True:
            force = force or iterations >= max_iterations
            turn = await session.chat(
                backend,
                system=system,
                messages=messages,
                tools=() if force else REPO_TOOLS,
                answer=answer,
                force_answer=force,
            )
            answer_call = next((c for c in turn.tool_calls if c.name == answer.name), None)
            if answer_call is not None:
                raw: str | Mapping[str, Any] = answer_call.arguments
                break
            if turn.tool_calls and not force:
                iterations += 1
                results = await session.run_tools(turn.tool_calls)
                nudge = f"Tool budget spent. {ANSWER_NOW}" if iterations >= max_iterations else ""
                messages += [
                    ChatMessage(role="assistant", text=turn.text, tool_calls=turn.tool_calls),
                    ChatMessage(role="tool", tool_results=results, text=nudge),
                ]
                continue
            raw = turn.text
            if force:
                break
            # Plain text ends the investigation: it is the answer, or the answer is asked for.
            try:
                parse(raw)
            except MalformedAnswer:
                messages += [
                    ChatMessage(role="assistant", text=turn.text),
                    ChatMessage(role="user", text=ANSWER_NOW),
                ]
                force = True
                continue
            break
        try:
            value = parse(raw)
            problems = await validate(value)
            kind: Literal["invalid", "malformed"] = "invalid"
        except MalformedAnswer as exc:
            problems, kind = [str(exc)], "malformed"
        session.note(
            "verdict",
            backend=backend.name,
            attempt=attempt,
            accepted=not problems,
            problems=problems,
        )
        if not problems:
            return value
        outcome = Rejected(kind, f"answer {attempt}: {'; '.join(problems)}")
        messages += [
            ChatMessage(role="assistant", text=turn.text, tool_calls=turn.tool_calls),
            _reply_to(turn, answer, rejection_feedback(problems)),
        ]
    return Rejected(outcome.outcome, f"{max_attempts} answers rejected, last: {outcome.detail}")
