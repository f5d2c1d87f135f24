"""The model's read-only view of the repository at the incident's commit: five tools.

read_file, grep, search_code (the code index, else grep), git_log and git_show. Each reads
git objects at the commit through the one git runner (remedy/git/runner.py), never the
checkout's files, so what the model sees is exactly what the patch will be applied to. A
call the model got wrong, a git failure or a git timeout comes back to it as the result.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from remedy.evidence import WindowSpec, ranked_windows
from remedy.git.runner import GitError, GitResult, OnWait, run_git_async
from remedy.llm.answers import PATH_DESCRIPTION
from remedy.llm.conversation import ToolCall, ToolResult, ToolSpec
from remedy.llm.prompts import CodeWindow, clip, fence, numbered
from remedy.models import Evidence, RelatedCode, Worktree
from remedy.patching import repo_path

SearchCode = Callable[[Worktree, str, int], Awaitable[Sequence[RelatedCode]]]
"""The code index: (worktree, query, limit) -> ranked hits. Absent: search_code greps."""

GIT_TIMEOUT_S = 30.0
MAX_GREP_MATCHES = 80
MAX_LOG_COMMITS = 20
MAX_SEARCH_HITS = 8
MAX_READ_LINES = 400

READ_FILE = ToolSpec(
    name="read_file",
    description=f"Read lines start..end (1-based, inclusive; at most {MAX_READ_LINES}) of a file "
    "in the repository at the incident's commit.",
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": PATH_DESCRIPTION},
            "start": {"type": "integer", "minimum": 1},
            "end": {"type": "integer", "minimum": 1},
        },
        "required": ["path"],
    },
)
GREP = ToolSpec(
    name="grep",
    description="Search the repository at the incident's commit for a regular expression "
    "(POSIX extended); returns path:line:text matches.",
    parameters={
        "type": "object",
        "properties": {
            "pattern": {"type": "string"},
            "path_glob": {
                "type": "string",
                "description": "Glob of the files to search, relative to the repository root "
                "(** spans directories); default: all files",
            },
        },
        "required": ["pattern"],
    },
)
SEARCH_CODE = ToolSpec(
    name="search_code",
    description="Find code related to a description or identifiers (semantic index).",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
)
GIT_LOG = ToolSpec(
    name="git_log",
    description="Recent commits up to the incident's commit, optionally those touching a path.",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "description": PATH_DESCRIPTION}},
        "required": [],
    },
)
GIT_SHOW = ToolSpec(
    name="git_show",
    description="The message and diff of one commit that is part of the incident's history.",
    parameters={
        "type": "object",
        "properties": {"sha": {"type": "string"}},
        "required": ["sha"],
    },
)
REPO_TOOLS = (READ_FILE, GREP, SEARCH_CODE, GIT_LOG, GIT_SHOW)

_SHA = re.compile(r"^[0-9a-fA-F]{4,40}$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def tool_path(raw: str) -> str | None:
    """A path argument as a repository path; None when it leaves the repository."""
    return repo_path(raw.removeprefix("./"))


def read_path(call: ToolCall, result: ToolResult) -> str | None:
    """The file a call showed the model: a successful read_file's path, else None."""
    raw = call.arguments.get("path")
    if call.name != READ_FILE.name or result.is_error or not isinstance(raw, str):
        return None
    return tool_path(raw)


class ToolError(Exception):
    """A tool call the model got wrong; the message goes back to it as the result."""


def _failed(what: str, result: GitResult) -> ToolError:
    lines = result.stderr.strip().splitlines()
    return ToolError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")


class RepoTools:
    """The tools over `worktree.commit`; `on_wait` is called while a git command runs long."""

    def __init__(
        self,
        worktree: Worktree,
        *,
        search_code: SearchCode | None,
        max_result_chars: int,
        on_wait: OnWait | None = None,
    ) -> None:
        self.worktree = worktree
        self._search_code = search_code
        self._max_chars = max_result_chars
        self._on_wait = on_wait
        self._blobs: dict[str, bytes | None] = {}
        self.windows: list[CodeWindow] = []
        """What code_windows() gave the prompts: the code a model may have seen up front."""

    @property
    def _commit(self) -> str:
        return self.worktree.commit

    async def _git(self, *args: str, glob: bool = False) -> GitResult:
        try:
            return await run_git_async(
                ["-C", self.worktree.path, *args],
                # Paths are literal unless a tool takes a glob: no path smuggles in pathspec magic.
                env={"GIT_LITERAL_PATHSPECS": "0" if glob else "1"},
                timeout=GIT_TIMEOUT_S,
                check=False,
                on_wait=self._on_wait,
            )
        except GitError:  # unchecked, the runner raises only when git ran out of time
            raise ToolError(
                f"git {args[0]} took longer than {GIT_TIMEOUT_S:.0f}s; narrow the request"
            ) from None

    async def blob(self, path: str) -> bytes | None:
        """The file at the commit; None when the path names no file there."""
        if path not in self._blobs:
            found = await self._git("cat-file", "blob", f"{self._commit}:{path}")
            self._blobs[path] = found.stdout if found.returncode == 0 else None
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

    async def code_windows(self, evidence: Evidence) -> list[CodeWindow]:
        """The code the prompt shows up front, in the evidence's ranking (remedy.evidence)."""
        windows = [w for spec in ranked_windows(evidence) if (w := await self.window(spec))]
        self.windows.extend(windows)
        return windows

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
        path = tool_path(raw)
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
        found = await self._git(*args, glob=bool(glob.strip()))
        if found.returncode == 1:
            return f"no matches for {pattern!r}"
        if found.returncode != 0:
            raise _failed("grep", found)
        rows = found.stdout.decode("utf-8", errors="replace").splitlines()
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
        grepped = await self._git(*args)
        if grepped.returncode not in {0, 1}:
            raise _failed("search", grepped)
        rows = [
            r.removeprefix(f"{self._commit}:")
            for r in grepped.stdout.decode(errors="replace").splitlines()
        ]
        found = "\n".join(rows[:40]) if rows else "no matches"
        return f"({note}; grep for {', '.join(words)})\n{found}"

    async def _git_log(self, arguments: dict[str, Any]) -> str:
        args = ["log", "--no-color", f"-n{MAX_LOG_COMMITS}", "--date=short"]
        args += ["--format=%H %ad %an: %s", self._commit]
        if arguments.get("path"):
            args += ["--", self._path(arguments)]
        found = await self._git(*args)
        if found.returncode != 0:
            raise _failed("git log", found)
        return found.text or "no commits"

    async def _git_show(self, arguments: dict[str, Any]) -> str:
        sha = self._arg(arguments, "sha", str).strip()
        if not _SHA.match(sha):
            raise ToolError(f"sha {sha!r} must be 4 to 40 hexadecimal digits")
        resolved = await self._git("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
        full = resolved.text
        if resolved.returncode != 0 or not full:
            raise ToolError(f"no commit {sha} in the repository")
        ancestry = await self._git("merge-base", "--is-ancestor", full, self._commit)
        if ancestry.returncode != 0:
            raise ToolError(f"commit {sha} is not part of the history of {self._commit[:12]}")
        shown = await self._git("show", "--no-color", "--stat", "--patch", full)
        if shown.returncode != 0:
            raise _failed("git show", shown)
        return shown.stdout.decode("utf-8", errors="replace")
