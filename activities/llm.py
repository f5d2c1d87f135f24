"""Diagnosis with a language model: route, investigate with bounded tools, check, keep everything.

`diagnose` routes an incident to Ollama or Claude (remedy.diagnosis.plan_route), lets the model
read the repository at the incident's commit through five read-only tools, and checks the
answer in code (exact edits, scope, syntax, diff size). A rejected answer goes back to the
model with the reasons; after `[llm].max_attempts` answers the incident escalates (auto) or
the activity abstains with the reason. A missing backend is an abstention, never a failure:
the workflow then ends in `triaged` with its evidence.

Every prompt, model turn, tool call and verdict is written to the incident's artifacts
(`<incident>/diagnosis/`); history gets only the answer, the usage and short summaries.
Identical requests are answered from a content-addressed cache in the artifact store, so a
retried activity replays its finished turns for free.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.claude import ClaudeBackend
from activities.git import git_env
from activities.ollama import OllamaBackend
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.diagnosis import (
    ANSWER_NOW,
    DIAGNOSIS_SYSTEM_PROMPT,
    MAX_READ_LINES,
    REGRESSION_SYSTEM_PROMPT,
    REPO_TOOLS,
    SUBMIT_DIAGNOSIS,
    SUBMIT_REGRESSION_TEST,
    BackendName,
    BackendRateLimited,
    BackendUnavailable,
    ChatBackend,
    ChatMessage,
    CodeWindow,
    MalformedAnswer,
    Mode,
    RegressionTestAnswer,
    RoutePlan,
    ToolCall,
    ToolResult,
    ToolSpec,
    Turn,
    WindowSpec,
    cache_key,
    clip,
    diagnosis_prompt,
    estimate_cost,
    fence,
    in_app_files,
    numbered,
    parse_diagnosis,
    parse_regression_test,
    plan_route,
    referenced_paths,
    regression_test_prompt,
    rejection_feedback,
    validate_diagnosis,
    validate_regression_test,
    window_specs,
)
from remedy.models import (
    ArtifactRef,
    AttemptOutcome,
    DiagnoseRequest,
    Diagnosis,
    DiagnosisAttempt,
    DiagnosisResult,
    LLMUsage,
    RegressionTest,
    RegressionTestRequest,
    RegressionTestResult,
    RelatedCode,
    Severity,
    ToolCallSummary,
    Worktree,
)
from remedy.patching import repo_path
from remedy.redact import redact_text

SearchCode = Callable[[Worktree, str, int], Awaitable[Sequence[RelatedCode]]]
"""The code index: (worktree, query, limit) -> ranked hits. Absent: search_code greps."""

GIT_TIMEOUT_S = 30.0
HEARTBEAT_INTERVAL_S = 5.0
MAX_CALLS_PER_TURN = 6
MAX_GREP_MATCHES = 80
MAX_LOG_COMMITS = 20
MAX_SEARCH_HITS = 8
MAX_SUMMARIES = 40
DEFAULT_RETRY_AFTER_S = 30.0

_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")

T = TypeVar("T")


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)


async def _heartbeating(work: Awaitable[T], note: str) -> T:
    """Await `work`, heartbeating meanwhile: a model may stream its answer for minutes."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_INTERVAL_S)
            if done:
                return task.result()
            _heartbeat(note)
    finally:
        task.cancel()


def _incident_key(incident_id: str) -> str:
    if not _SAFE_ID.match(incident_id):
        raise ApplicationError(
            f"incident id {incident_id!r} must be letters, digits, '.', '_' or '-'",
            type="BadRequest",
            non_retryable=True,
        )
    return incident_id


# ---------------------------------------------------------------------------- repository tools


class ToolError(Exception):
    """A tool call the model got wrong; the message goes back to it as the result."""


async def run_git(
    repo: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = GIT_TIMEOUT_S
) -> tuple[int, bytes, str]:
    """(exit code, stdout, stderr) of a read-only git command in `repo`."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        repo,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_env(env),
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ToolError(
            f"git {args[0]} took longer than {timeout:.0f}s; narrow the request"
        ) from None
    except asyncio.CancelledError:
        proc.kill()
        raise
    return proc.returncode or 0, out, err.decode("utf-8", errors="replace").strip()


class RepoTools:
    """The model's read-only view of the repository at the incident's commit.

    Everything is read from git objects at `worktree.commit`, never from the checkout's files,
    so what the model sees is exactly what the patch will be applied to.
    """

    def __init__(
        self, worktree: Worktree, *, search_code: SearchCode | None, max_result_chars: int
    ) -> None:
        self.worktree = worktree
        self._search_code = search_code
        self._max_chars = max_result_chars
        self._blobs: dict[str, bytes | None] = {}

    @property
    def _commit(self) -> str:
        return self.worktree.commit

    async def _git(self, *args: str, glob: bool = False) -> tuple[int, bytes, str]:
        # Paths are literal unless a tool takes a glob, so no path can smuggle in pathspec magic.
        return await run_git(
            self.worktree.path, *args, env={"GIT_LITERAL_PATHSPECS": "0" if glob else "1"}
        )

    async def blob(self, path: str) -> bytes | None:
        """The file at the commit; None when the path names no file there."""
        if path not in self._blobs:
            code, out, _ = await self._git("cat-file", "blob", f"{self._commit}:{path}")
            self._blobs[path] = out if code == 0 else None
        return self._blobs[path]

    async def text_at_commit(self, path: str) -> str | None:
        """The file's text at the commit; None when absent or not UTF-8."""
        data = await self.blob(path)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def window(self, spec: WindowSpec) -> CodeWindow | None:
        text = await self.text_at_commit(spec.path)
        if text is None:
            return None
        lines = text.splitlines()[spec.start - 1 : spec.end]
        return CodeWindow(spec.path, spec.start, "\n".join(lines), spec.note) if lines else None

    # -- the tools ------------------------------------------------------------

    async def run(self, call: ToolCall) -> ToolResult:
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {
            "read_file": self._read_file,
            "grep": self._grep,
            "search_code": self._search,
            "git_log": self._git_log,
            "git_show": self._git_show,
        }
        handler = handlers.get(call.name)
        try:
            if handler is None:
                raise ToolError(f"no tool named {call.name!r}; use one of {', '.join(handlers)}")
            text, is_error = await handler(call.arguments), False
        except ToolError as exc:
            text, is_error = str(exc), True
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=fence("TOOL", clip(text, self._max_chars)),
            is_error=is_error,
        )

    @staticmethod
    def _arg(arguments: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
        value = arguments.get(name, default)
        if value is None and default is None:
            raise ToolError(f"argument {name!r} is required")
        if kind is int and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ToolError(f"argument {name!r} must be a {kind.__name__}")
        return value

    def _path(self, arguments: Mapping[str, Any]) -> str:
        raw = self._arg(arguments, "path", str)
        path = repo_path(raw.removeprefix("./"))
        if path is None:
            raise ToolError(f"path {raw!r} must be relative to the repository root")
        return path

    async def _read_file(self, arguments: dict[str, Any]) -> str:
        path = self._path(arguments)
        start = max(self._arg(arguments, "start", int, 1), 1)
        end = self._arg(arguments, "end", int, start + 199)
        end = min(max(end, start), start + MAX_READ_LINES - 1)
        data = await self.blob(path)
        if data is None:
            raise ToolError(f"{path}: no such file at commit {self._commit[:12]}")
        lines = data.decode("utf-8", errors="replace").splitlines()
        if start > len(lines):
            raise ToolError(f"{path} has {len(lines)} lines; start {start} is past its end")
        chunk = "\n".join(lines[start - 1 : end])
        shown_end = min(end, len(lines))
        return f"{path} lines {start}-{shown_end} of {len(lines)}\n{numbered(chunk, start)}"

    async def _grep(self, arguments: dict[str, Any]) -> str:
        pattern = self._arg(arguments, "pattern", str)
        glob = self._arg(arguments, "path_glob", str, "")
        args = ["grep", "-n", "-I", "-E", "-e", pattern, self._commit]
        if glob.strip():
            args += ["--", f":(glob){glob.strip()}"]
        code, out, err = await self._git(*args, glob=bool(glob.strip()))
        if code == 1:
            return f"no matches for {pattern!r}"
        if code != 0:
            raise ToolError(f"grep failed: {err.splitlines()[-1] if err else f'exit {code}'}")
        rows = out.decode("utf-8", errors="replace").splitlines()
        prefix = f"{self._commit}:"
        shown = [row.removeprefix(prefix) for row in rows[:MAX_GREP_MATCHES]]
        more = len(rows) - len(shown)
        return "\n".join(shown) + (f"\n... {more} more matches; narrow the pattern" if more else "")

    async def _search(self, arguments: dict[str, Any]) -> str:
        query = self._arg(arguments, "query", str)
        note = "no code index is available"
        if self._search_code is not None:
            try:
                hits = await self._search_code(self.worktree, query, MAX_SEARCH_HITS)
            except Exception as exc:  # the index is an aid: any failure falls back to grep
                note = f"the code index failed ({type(exc).__name__})"
            else:
                if hits:
                    return "\n".join(
                        f"{h.path}:{h.start_line}-{h.end_line} {h.symbol or ''} "
                        f"(score {h.score:.2f})"
                        for h in hits
                    )
                # Not indexed at this commit, or the store is busy indexing: grep still helps.
                note = "the code index had no answer"
        words = sorted(set(_IDENTIFIER.findall(query)), key=len, reverse=True)[:5]
        if not words:
            raise ToolError("the query holds no identifier to search for")
        args = [
            "grep",
            "-n",
            "-I",
            "-i",
            "-F",
            *(a for w in words for a in ("-e", w)),
            self._commit,
        ]
        code, out, err = await self._git(*args)
        if code not in {0, 1}:
            raise ToolError(f"search failed: {err.splitlines()[-1] if err else f'exit {code}'}")
        rows = [
            r.removeprefix(f"{self._commit}:") for r in out.decode(errors="replace").splitlines()
        ]
        found = "\n".join(rows[:40]) if rows else "no matches"
        return f"({note}; grep for {', '.join(words)})\n{found}"

    async def _git_log(self, arguments: dict[str, Any]) -> str:
        args = ["log", "--no-color", f"-n{MAX_LOG_COMMITS}", "--date=short"]
        args += ["--format=%H %ad %an: %s", self._commit]
        if arguments.get("path"):
            args += ["--", self._path(arguments)]
        code, out, err = await self._git(*args)
        if code != 0:
            raise ToolError(f"git log failed: {err.splitlines()[-1] if err else f'exit {code}'}")
        return out.decode("utf-8", errors="replace").strip() or "no commits"

    async def _git_show(self, arguments: dict[str, Any]) -> str:
        sha = self._arg(arguments, "sha", str).strip()
        if not _SHA.match(sha):
            raise ToolError(f"sha {sha!r} must be 4 to 40 hexadecimal digits")
        code, out, _ = await self._git("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
        full = out.decode().strip()
        if code != 0 or not full:
            raise ToolError(f"no commit {sha} in the repository")
        code, _, _ = await self._git("merge-base", "--is-ancestor", full, self._commit)
        if code != 0:
            raise ToolError(f"commit {sha} is not part of the history of {self._commit[:12]}")
        code, out, err = await self._git("show", "--no-color", "--stat", "--patch", full)
        if code != 0:
            raise ToolError(f"git show failed: {err.splitlines()[-1] if err else f'exit {code}'}")
        return out.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- one activity's calls


class TokenCapReached(Exception):
    pass


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
        self, config: RemedyConfig, store: ArtifactStore, tools: RepoTools, *, token_budget: int
    ) -> None:
        self._llm = config.llm
        self._store = store
        self.tools = tools
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
            turn = await _heartbeating(
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
            )
            if self._llm.cache:
                self._store.put_json(key, turn.model_dump())
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
        _heartbeat(f"{backend.name} turn {usage.calls}")
        if self.tokens > self.token_budget:
            raise TokenCapReached(
                f"the incident has used {self.tokens} LLM tokens, over "
                f"limits.max_tokens_per_incident = {self.token_budget}"
            )
        return turn

    async def run_tools(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        results = []
        for number, call in enumerate(calls):
            if number >= MAX_CALLS_PER_TURN:
                result = ToolResult(
                    call_id=call.id,
                    name=call.name,
                    content=f"not run: at most {MAX_CALLS_PER_TURN} tool calls per turn",
                    is_error=True,
                )
            else:
                result = await self.tools.run(call)
            arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
            self.note("tool_call", call=call.model_dump(), result=result.model_dump())
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
        _heartbeat(f"ran {len(calls)} tool calls")
        return results

    def save(self, key: str, **extra: Any) -> ArtifactRef:
        return self._store.put_json(
            key,
            {
                **extra,
                "tokens": self.tokens,
                "cost_usd": self.cost_usd,
                "usage": [u.model_dump() for u in self.usage],
                "events": self.events,
            },
        )


@dataclass(frozen=True)
class Rejected:
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


# ---------------------------------------------------------------------------- the activities


class DiagnosisActivities:
    """The LLM activities. Built once per worker; `search_code` plugs in the code index."""

    def __init__(
        self,
        config: RemedyConfig,
        store: ArtifactStore,
        *,
        search_code: SearchCode | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._search_code = search_code
        self._backends: dict[BackendName, ChatBackend] = {
            "ollama": OllamaBackend(config.llm),
            "claude": ClaudeBackend(config.llm),
        }

    def _mode(self, service: str) -> Mode:
        configured = self._config.services.get(service)
        return configured.llm if configured and configured.llm else self._config.llm.mode

    def _plan(self, service: str, severity: Severity, evidence_files: int) -> RoutePlan:
        return plan_route(
            self._mode(service),
            severity=severity,
            in_app_files=evidence_files,
            llm=self._config.llm,
        )

    def _tools(self, worktree: Worktree) -> RepoTools:
        return RepoTools(
            worktree,
            search_code=self._search_code,
            max_result_chars=self._config.llm.max_tool_result_chars,
        )

    def _admit(self, service: str, incident_id: str) -> str | None:
        """Count this incident against the service's diagnoses this hour; the reason if over."""
        now = datetime.now(UTC)
        folder = f"llm-usage/{service}/{now:%Y%m%d%H}"
        marker = f"{folder}/{incident_id}"
        if self._store.exists(marker):
            return None  # a retry of a diagnosis already counted
        path = self._store.path_of(folder)
        used = sum(1 for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else 0
        cap = self._config.limits.max_diagnoses_per_hour
        if used >= cap:
            return (
                f"service {service}: {used} diagnoses this hour reached "
                f"limits.max_diagnoses_per_hour = {cap} (raise it in remedy.toml to diagnose more)"
            )
        self._store.put_text(marker, now.isoformat())
        return None

    @activity.defn(name=names.ACTIVITY_DIAGNOSE)
    async def diagnose(self, request: DiagnoseRequest) -> DiagnosisResult:
        incident = _incident_key(request.incident_id)
        plan = self._plan(
            request.worktree.service, request.severity, in_app_files(request.evidence)
        )
        if not plan.backends:
            return DiagnosisResult(abstained_reason=plan.reason, route=plan.reason)
        tools = self._tools(request.worktree)
        session = Session(
            self._config,
            self._store,
            tools,
            token_budget=self._config.limits.max_tokens_per_incident,
        )
        try:
            result = await self._diagnose(request, plan, session)
        except BackendRateLimited as exc:
            session.note("rate_limited", backend=exc.backend, reason=exc.reason)
            session.save(f"{incident}/diagnosis/transcript.json", route=plan.reason)
            delay = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
            raise ApplicationError(
                f"diagnosing {incident}: {exc.reason}; retrying in {delay:.0f}s",
                type="LLMRateLimited",
                next_retry_delay=timedelta(seconds=delay),
            ) from None
        artifact = session.save(
            f"{incident}/diagnosis/transcript.json",
            route=plan.reason,
            result=result.model_dump(mode="json"),
        )
        return result.model_copy(
            update={
                "artifact": artifact,
                "route": plan.reason,
                "tokens": session.tokens,
                "cost_usd": session.cost_usd,
                "usage": session.usage,
                "tool_calls": session.summaries,
            }
        )

    async def _diagnose(
        self, request: DiagnoseRequest, plan: RoutePlan, session: Session
    ) -> DiagnosisResult:
        incident, llm = request.incident_id, self._config.llm
        windows = [
            w for s in window_specs(request.evidence) if (w := await session.tools.window(s))
        ]
        prompt = diagnosis_prompt(request, windows, max_chars=llm.max_prompt_chars)
        self._store.put_text(
            f"{incident}/diagnosis/prompt.md", f"{DIAGNOSIS_SYSTEM_PROMPT}\n---\n{prompt}"
        )

        async def validate(diagnosis: Diagnosis) -> list[str]:
            files = {p: await session.tools.text_at_commit(p) for p in referenced_paths(diagnosis)}
            return validate_diagnosis(diagnosis, files, request.policy, request.worktree.commit)

        attempts: list[DiagnosisAttempt] = []
        unavailable: list[str] = []
        rejected: list[str] = []
        best: tuple[Diagnosis, BackendName] | None = None
        admitted = False
        for index, name in enumerate(plan.backends):
            backend = self._backends[name]

            def record(
                outcome: AttemptOutcome, detail: str, backend: ChatBackend = backend
            ) -> None:
                attempts.append(
                    DiagnosisAttempt(
                        backend=backend.name, model=backend.model, outcome=outcome, detail=detail
                    )
                )

            if (reason := await backend.unavailable_reason()) is not None:
                unavailable.append(reason)
                record("unavailable", reason)
                continue
            if not admitted:
                if over := self._admit(request.worktree.service, incident):
                    return DiagnosisResult(
                        rate_limited=True, abstained_reason=over, attempts=attempts
                    )
                admitted = True
            try:
                outcome = await converse(
                    session,
                    backend,
                    system=DIAGNOSIS_SYSTEM_PROMPT,
                    prompt=prompt,
                    answer=SUBMIT_DIAGNOSIS,
                    parse=parse_diagnosis,
                    validate=validate,
                    max_attempts=llm.max_attempts,
                    max_iterations=llm.max_tool_iterations,
                )
            except BackendUnavailable as exc:
                unavailable.append(exc.reason)
                record("unavailable", exc.reason)
                continue
            except BackendRateLimited as exc:
                record("rate_limited", exc.reason)
                if best is None:
                    raise
                break  # keep the answer in hand rather than wait for the escalation
            except TokenCapReached as exc:
                record("token_cap", str(exc))
                return DiagnosisResult(
                    rate_limited=True, abstained_reason=str(exc), attempts=attempts
                )
            if isinstance(outcome, Rejected):
                record(outcome.outcome, outcome.detail)
                rejected.append(f"{name} {backend.model}: {outcome.detail}")
                if not plan.escalate:
                    break
                continue
            unsure = outcome.confidence < llm.escalate_below_confidence
            escalate = plan.escalate and unsure and index + 1 < len(plan.backends)
            record(
                "low_confidence" if escalate else "accepted", f"confidence {outcome.confidence:.2f}"
            )
            if best is None or outcome.confidence > best[0].confidence:
                best = (outcome, name)
            if not escalate:
                break
        if best is not None:
            return DiagnosisResult(diagnosis=best[0], backend=best[1], attempts=attempts)
        if rejected:
            reason = "no acceptable diagnosis: " + "; ".join(rejected + unavailable)
        else:
            reason = "no LLM backend: " + " and ".join(unavailable)
        return DiagnosisResult(abstained_reason=reason, attempts=attempts)

    @activity.defn(name=names.ACTIVITY_WRITE_REGRESSION_TEST)
    async def write_regression_test(self, request: RegressionTestRequest) -> RegressionTestResult:
        """Ask a model for a new test file that fails before the fix and passes after it.

        Optional evidence: a model that is unavailable, rate-limited or keeps writing unusable
        files yields an abstention with the reason, never a retry or a failure.
        """
        incident = _incident_key(request.incident_id)
        plan = self._plan(
            request.worktree.service, request.severity, in_app_files(request.evidence)
        )
        order = list(plan.backends)
        if request.backend in order:
            order.remove(request.backend)
            order.insert(0, request.backend)
        if not order:
            return RegressionTestResult(abstained_reason=plan.reason)
        budget = self._config.limits.max_tokens_per_incident - request.tokens_used
        if budget <= 0:
            return RegressionTestResult(
                rate_limited=True,
                abstained_reason="the incident's LLM tokens are spent "
                f"(limits.max_tokens_per_incident = {self._config.limits.max_tokens_per_incident})",
            )
        tools = self._tools(request.worktree)
        session = Session(self._config, self._store, tools, token_budget=budget)
        llm = self._config.llm
        windows = [w for s in window_specs(request.evidence) if (w := await tools.window(s))]
        prompt = regression_test_prompt(request, windows, max_chars=llm.max_prompt_chars)
        self._store.put_text(
            f"{incident}/regression/prompt.md", f"{REGRESSION_SYSTEM_PROMPT}\n---\n{prompt}"
        )

        async def validate(answer: RegressionTestAnswer) -> list[str]:
            path = repo_path(answer.path)
            exists = path is not None and await tools.blob(path) is not None
            return validate_regression_test(answer, exists=exists)

        reasons: list[str] = []
        result = RegressionTestResult()
        for name in order:
            backend = self._backends[name]
            if (reason := await backend.unavailable_reason()) is not None:
                reasons.append(reason)
                continue
            try:
                outcome = await converse(
                    session,
                    backend,
                    system=REGRESSION_SYSTEM_PROMPT,
                    prompt=prompt,
                    answer=SUBMIT_REGRESSION_TEST,
                    parse=parse_regression_test,
                    validate=validate,
                    max_attempts=llm.max_attempts,
                    max_iterations=llm.max_tool_iterations,
                )
            except (BackendUnavailable, BackendRateLimited) as exc:
                reasons.append(exc.reason)
                continue
            except TokenCapReached as exc:
                result = RegressionTestResult(rate_limited=True, abstained_reason=str(exc))
                break
            if isinstance(outcome, Rejected):
                reasons.append(f"{name} {backend.model}: {outcome.detail}")
                break
            path = repo_path(outcome.path)
            assert path is not None  # validated above
            content = self._store.put_text(f"{incident}/regression/test_file.py", outcome.content)
            result = RegressionTestResult(
                test=RegressionTest(path=path, content=content), backend=name
            )
            break
        if result.test is None and result.abstained_reason is None:
            result.abstained_reason = "no regression test: " + "; ".join(reasons)
        artifact = session.save(
            f"{incident}/regression/transcript.json", result=result.model_dump(mode="json")
        )
        return result.model_copy(
            update={
                "artifact": artifact,
                "tokens": session.tokens,
                "cost_usd": session.cost_usd,
                "usage": session.usage,
            }
        )
