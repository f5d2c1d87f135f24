"""The tool loop: ask, let the model investigate, check its answer, feed problems back.

`converse` is backend-neutral: it speaks to a ChatBackend through a Session and takes the
answer's parser and checks as arguments, so the diagnosis and the regression test share it.

Two protocols, one loop. With native tools the repository tools and the answer tool are
offered as function calls. Without them (a model that takes no tools, or one that answered
in text although tools were offered) every turn's answer schema is an *action*: one JSON
object `{"action": <a tool or the answer tool>, "arguments": {...}}` that the backend's
structured output enforces; the loop runs the tool and shows the result in the next user
message. Either way the system prompt and the tools stay the same from the first turn to the
forced answer, so a local server reuses its cache of the prompt's prefix; an answer citing a
file the conversation never showed is sent back once to read it first; a call the
conversation already answered is not run again, and a turn of nothing but repeats demands
the answer; edits written in a reply that was not a whole answer are recalled once if the
answer then drops them; and an empty edit list after a rejection is an abstention, not an
answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from remedy.llm.answers import (
    MalformedAnswer,
    cited_paths,
    parse_json_object,
    proposes_nothing,
    written_edits,
)
from remedy.llm.conversation import (
    ChatBackend,
    ChatMessage,
    ToolCall,
    ToolResult,
    ToolSpec,
    ToolsUnsupported,
    Turn,
)
from remedy.llm.prompts import (
    ACTION_NOW,
    ANSWER_NOW,
    NOTHING_NEW,
    CodeWindow,
    code_section,
    dropped_edits_feedback,
    json_action_rules,
    native_tool_rules,
    read_first_feedback,
    rejection_feedback,
)
from remedy.llm.repo_tools import REPO_TOOLS, read_path
from remedy.llm.session import Session
from remedy.models import Edit

T = TypeVar("T")
Answer = str | Mapping[str, Any]


@dataclass(frozen=True)
class Rejected:
    """No answer passed its checks: which way the last one failed, and why.

    `abstained`: the model gave up (no edits) after its answers were rejected; `detail` says
    so, with the last rejection's reasons.
    """

    outcome: Literal["invalid", "malformed"]
    detail: str
    abstained: bool = False


def action_schema(tools: Sequence[ToolSpec], answer: ToolSpec) -> ToolSpec:
    """The answer shape of a turn in the JSON action protocol: one of the tools or the answer."""
    branches = [
        {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": [spec.name]},
                "arguments": spec.parameters,
            },
            "required": ["action", "arguments"],
            "additionalProperties": False,
        }
        for spec in (*tools, answer)
    ]
    return ToolSpec(
        name="next_action",
        description=f"The next step: one tool, or {answer.name} with the final answer.",
        parameters={"type": "object", "anyOf": branches},
    )


@dataclass
class _Step:
    """What one turn asks for: tools to run, or an answer to check (None: nothing usable)."""

    calls: list[ToolCall] = field(default_factory=list)
    answer: Answer | None = None


def shown_paths(prompt: str, windows: Sequence[CodeWindow]) -> set[str]:
    """The files whose code the prompt shows (a window the budget left out was not seen)."""
    return {window.path for window in windows if code_section(window) in prompt}


class _Dialogue:
    """The messages of one conversation and the protocol it speaks to its backend."""

    def __init__(
        self, session: Session, backend: ChatBackend, system: str, prompt: str, answer: ToolSpec
    ) -> None:
        self.session = session
        self.backend = backend
        self.base_system = system
        self.answer = answer
        self.messages = [ChatMessage(role="user", text=prompt)]
        self.native_calls = 0
        self.native = backend.native_tools
        self._answered: set[str] = set()  # tool calls whose results the model has been shown
        self._note_protocol()

    @property
    def system(self) -> str:
        rules = native_tool_rules if self.native else json_action_rules
        return f"{self.base_system}\n{rules(REPO_TOOLS, self.answer)}"

    def _note_protocol(self) -> None:
        protocol = "native tools" if self.native else "JSON actions"
        self.session.note(
            "protocol", backend=self.backend.name, protocol=protocol, system=self.system
        )

    def to_json_actions(self) -> None:
        """From now on, and for this backend's later conversations, actions are JSON answers."""
        self.native = self.backend.native_tools = False
        self._note_protocol()

    def size(self) -> int:
        tools = json.dumps([t.model_dump() for t in REPO_TOOLS]) if self.native else ""
        return (
            len(self.system)
            + len(tools)
            + sum(
                len(m.text)
                + sum(len(r.content) for r in m.tool_results)
                + sum(len(json.dumps(c.arguments)) for c in m.tool_calls)
                for m in self.messages
            )
        )

    def full(self) -> bool:
        limit = self.backend.context_chars
        return limit is not None and self.size() >= limit

    async def ask(self, force: bool) -> Turn:
        while True:
            tools: Sequence[ToolSpec]
            if self.native:
                tools, answer = REPO_TOOLS, self.answer
            else:
                # Tools become answer shapes; the forced answer's shape is the answer itself.
                tools, answer = (), self.answer if force else action_schema(REPO_TOOLS, self.answer)
            try:
                return await self.session.chat(
                    self.backend,
                    system=self.system,
                    messages=self.messages,
                    tools=tools,
                    answer=answer,
                    force_answer=force or not self.native,
                )
            except ToolsUnsupported:
                self.to_json_actions()

    def step(self, turn: Turn, force: bool) -> _Step:
        if self.native:
            answered = next((c for c in turn.tool_calls if c.name == self.answer.name), None)
            if answered is not None:
                return _Step(answer=answered.arguments)
            if turn.tool_calls:
                self.native_calls += 1
                return _Step(calls=list(turn.tool_calls))
            if force or self.native_calls:
                return _Step(answer=turn.text)
            # Text although tools were offered: this model does not call them. The text may
            # already be an action written out, so it is read as one.
            self.to_json_actions()
        payload: Answer = turn.tool_calls[0].arguments if turn.tool_calls else turn.text
        try:
            action = parse_json_object(payload)
        except MalformedAnswer:
            return _Step(answer=payload)  # parsing it again says what is wrong
        arguments = action.get("arguments")
        # Small models also write the tool-call shape their chat template taught them.
        name = action.get("action", action.get("name") if isinstance(arguments, dict) else None)
        if not isinstance(name, str):
            return _Step(answer=action)  # the answer itself, without the action around it
        if not isinstance(arguments, dict):
            arguments = {}
        if name == self.answer.name:
            return _Step(answer=arguments)
        return _Step(
            calls=[ToolCall(id=f"action_{len(self.messages)}", name=name, arguments=arguments)]
        )

    def _said(self, turn: Turn) -> ChatMessage:
        if self.native:
            return ChatMessage(role="assistant", text=turn.text, tool_calls=turn.tool_calls)
        said = turn.text or (json.dumps(turn.tool_calls[0].arguments) if turn.tool_calls else "")
        return ChatMessage(role="assistant", text=said)

    @staticmethod
    def _call_key(call: ToolCall) -> str:
        return json.dumps([call.name, call.arguments], sort_keys=True, default=str)

    def repeats(self, calls: Sequence[ToolCall]) -> set[str]:
        """Ids of the calls this conversation already answered: a small model may ask for the
        same file on every turn, and each copy would grow the prompt by the whole file."""
        return {call.id for call in calls if self._call_key(call) in self._answered}

    def add_results(
        self, turn: Turn, calls: Sequence[ToolCall], results: Sequence[ToolResult]
    ) -> None:
        # A call that failed may be worth repeating (a timeout); one that answered is not.
        self._answered |= {
            self._call_key(c) for c, r in zip(calls, results, strict=True) if not r.is_error
        }
        if self.native:
            reply = ChatMessage(role="tool", tool_results=list(results))
        else:
            shown = "\n\n".join(f"Result of {r.name}:\n{r.content}" for r in results)
            reply = ChatMessage(role="user", text=shown)
        self.messages += [self._said(turn), reply]

    def add_note(self, note: str) -> None:
        """Text after the last message's tool results (it is always one of ours)."""
        last = self.messages[-1]
        last.text = f"{last.text}\n\n{note}" if last.text else note

    def add_feedback(self, turn: Turn, feedback: str) -> None:
        """Answer a turn that gave an answer (or tried to) with why it is not taken."""
        said = self._said(turn)
        reply = ChatMessage(role="user", text=feedback)
        if said.tool_calls:  # every native call gets a result
            reply = ChatMessage(
                role="tool",
                tool_results=[
                    ToolResult(
                        call_id=call.id,
                        name=call.name,
                        content=feedback
                        if call.name == self.answer.name
                        else "not run: the turn gave an answer",
                        is_error=True,
                    )
                    for call in said.tool_calls
                ],
                text="" if any(c.name == self.answer.name for c in said.tool_calls) else feedback,
            )
        self.messages += [said, reply]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


async def converse(
    session: Session,
    backend: ChatBackend,
    *,
    system: str,
    prompt: str,
    answer: ToolSpec,
    parse: Callable[[Answer], T],
    validate: Callable[[T], Awaitable[list[str]]],
    max_attempts: int,
    max_iterations: int,
    cited: Callable[[T], Collection[str]] = cited_paths,
    abstains: Callable[[T], bool] = proposes_nothing,
) -> T | Rejected:
    """Ask until an answer passes `validate` or `max_attempts` answers were rejected.

    Between answers the model may call the repository tools, `max_iterations` turns in all
    (a request to read a cited file first counts as one), while the conversation fits the
    backend's window; then it must answer. `cited`: the files an answer rests on, which the
    conversation must have shown; `abstains`: an answer that proposes nothing, an abstention
    when it follows a rejection. Raises BackendUnavailable, BackendRateLimited or
    TokenCapReached.
    """
    dialogue = _Dialogue(session, backend, system, prompt, answer)
    seen = shown_paths(prompt, session.tools.windows)
    asked_to_read: set[str] = set()
    iterations = 0
    rejections: list[str] = []
    written: list[Edit] = []  # edits written in replies that were not whole answers
    reminded = False
    outcome = Rejected("malformed", "no answer")
    kind: Literal["invalid", "malformed"]
    for attempt in range(1, max_attempts + 1):
        force = False
        while True:
            force = force or iterations >= max_iterations or dialogue.full()
            turn = await dialogue.ask(force)
            was_native = dialogue.native
            step = dialogue.step(turn, force)
            if step.calls and not force:
                iterations += 1
                repeated = dialogue.repeats(step.calls)
                results = await session.run_tools(step.calls, repeated=repeated)
                seen |= {
                    p for c, r in zip(step.calls, results, strict=True) if (p := read_path(c, r))
                }
                dialogue.add_results(turn, step.calls, results)
                if all(call.id in repeated for call in step.calls):
                    session.note("repeated_calls", backend=backend.name, attempt=attempt)
                    dialogue.add_note(f"{NOTHING_NEW} {ANSWER_NOW}")
                    force = True
                elif iterations >= max_iterations:
                    dialogue.add_note(f"Tool budget spent. {ANSWER_NOW}")
                elif dialogue.full():
                    dialogue.add_note(f"Context budget spent. {ANSWER_NOW}")
                continue
            raw: Answer = step.answer if step.answer is not None else turn.text
            try:
                value = parse(raw)
            except MalformedAnswer as exc:
                for source in (raw, turn.text):
                    written += [e for e in written_edits(source) if e not in written]
                if force:
                    problems, kind = [str(exc)], "malformed"
                    break
                switched = was_native and not dialogue.native
                # A model that just learned the JSON protocol may still investigate;
                # otherwise the next turn demands the answer.
                dialogue.add_feedback(turn, f"{exc}. {ACTION_NOW if switched else ANSWER_NOW}")
                force = not switched
                continue
            if written and not reminded and abstains(value):
                # The fix it wrote before the full shape was asked for must not be lost.
                reminded = True
                iterations += 1
                paths = sorted({edit.path for edit in written})
                session.note("dropped_edits", backend=backend.name, attempt=attempt, paths=paths)
                dialogue.add_feedback(turn, dropped_edits_feedback(paths))
                continue
            if rejections and abstains(value):
                detail = (
                    f"abstained after {_plural(len(rejections), 'rejected answer')}: "
                    f"{rejections[-1]}"
                )
                session.note("verdict", backend=backend.name, attempt=attempt, abstained=detail)
                return Rejected("invalid", detail, abstained=True)
            problems, kind = await validate(value), "invalid"
            unread = [
                p
                for p in sorted(cited(value))
                if p not in seen and p not in asked_to_read and await session.tools.blob(p)
            ]
            if unread and not problems and not force:
                # It would pass, but rests on code the model never saw: look before leaping.
                iterations += 1
                asked_to_read.update(unread)
                session.note("read_first", backend=backend.name, attempt=attempt, paths=unread)
                dialogue.add_feedback(turn, read_first_feedback(unread))
                continue
            break  # the answer is judged
        session.note(
            "verdict",
            backend=backend.name,
            attempt=attempt,
            accepted=not problems,
            problems=problems,
        )
        if not problems:
            return value
        rejections.append(f"answer {attempt}: {'; '.join(problems)}")
        outcome = Rejected(kind, rejections[-1])
        dialogue.add_feedback(turn, rejection_feedback(problems))
    return Rejected(outcome.outcome, f"{max_attempts} answers rejected, last: {outcome.detail}")
