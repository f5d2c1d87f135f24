"""Evidence from a repository: the frames' files, their code, blame, log and suspect commits.

Frames are mapped to tracked paths by the longest path suffix (`RepoFiles`); code is read from
git objects at the incident's commit; suspects are ranked by the failing line of the innermost
frame, then other failing lines, nearby lines and recent edits of the same files. Every bound
below keeps the returned Evidence a few KB whatever the stack or repository size; the full
record goes to the artifact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from remedy.calls import MAX_CALLEES, Callee, callees
from remedy.evidence import is_test_path
from remedy.git.diff import read_blob, tree_entries
from remedy.git.runner import FULL_SHA, OnWait, git_text
from remedy.models import (
    ArtifactRef,
    CalledCode,
    Evidence,
    Frame,
    FrameEvidence,
    InvestigateRequest,
    SuspectCommit,
)
from remedy.patching import REGULAR_FILE_MODES

WINDOW_RADIUS = 10
BLAME_RADIUS = 2
LOG_DEPTH = 10
MAX_SUSPECTS = 5
MAX_ANALYSED_FRAMES = 10
MAX_REPORTED_FRAMES = 20
MAX_SUSPECT_PATHS = 10
MAX_SUBJECT_CHARS = 200
MAX_ARTIFACT_LINE_CHARS = 500

_VENDORED = frozenset({"site-packages", "dist-packages", "node_modules", ".venv", "venv"})


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- locating frames


def _parts(path: str) -> list[str]:
    return [part for part in path.replace("\\", "/").split("/") if part not in {"", "."}]


def _common_suffix(a: Sequence[str], b: Sequence[str]) -> int:
    count = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        count += 1
    return count


class RepoFiles:
    """The files tracked at a commit, for mapping a frame's file to a repository path."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._by_name: dict[str, list[list[str]]] = {}
        for path in paths:
            parts = path.split("/")
            self._by_name.setdefault(parts[-1], []).append(parts)

    def locate(self, frame_file: str) -> str | None:
        """The longest path-suffix match of `frame_file`, ties going to the shortest path.

        An absolute frame path must end with the whole repository path (so
        /usr/lib/python3.11/json/__init__.py never matches app/__init__.py); a relative one
        may also be a suffix of it (cart.py, or app/cart.py inside a monorepo).
        """
        parts = _parts(frame_file)
        if not parts:
            return None
        absolute = frame_file.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", frame_file)
        best: tuple[int, int, str] | None = None
        for candidate in self._by_name.get(parts[-1], []):
            matched = _common_suffix(parts, candidate)
            covers = matched == len(candidate) or (not absolute and matched == len(parts))
            if not covers:
                continue
            key = (-matched, len(candidate), "/".join(candidate))
            if best is None or key < best:
                best = key
        return best[2] if best else None


def counts_as_in_app(frame: Frame, path: str, include: Sequence[str]) -> bool:
    """The frame's own verdict, else not vendored and under one of `include` (when given)."""
    if frame.in_app is not None:
        return frame.in_app
    if _VENDORED.intersection(_parts(frame.file)):
        return False
    if not include:
        return True
    module = frame.module or ""
    return any(path.startswith(prefix) or module.startswith(prefix) for prefix in include)


@dataclass
class FrameFinding:
    """One located frame and what history says about it (goes to the artifact)."""

    frame: Frame
    path: str
    window: dict[str, Any] | None = None
    blame: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)


def locate_frames(
    frames: Sequence[Frame], files: RepoFiles, include: Sequence[str]
) -> tuple[list[FrameFinding], list[str]]:
    """In-app frames found in the repository, innermost first, and in-app ones not found."""
    findings: list[FrameFinding] = []
    unmatched: list[str] = []
    seen: set[tuple[str, int | None]] = set()  # recursion repeats the same frame
    for frame in reversed(frames):
        if frame.in_app is False:
            continue
        path = files.locate(frame.file)
        if path is None:
            if frame.in_app and frame.file not in unmatched:
                unmatched.append(frame.file)
            continue
        if (path, frame.line) in seen or not counts_as_in_app(frame, path, include):
            continue
        seen.add((path, frame.line))
        if len(findings) < MAX_ANALYSED_FRAMES:
            findings.append(FrameFinding(frame=frame, path=path))
    return findings, unmatched


# ---------------------------------------------------------------------------- reading history


@dataclass
class Commit:
    sha: str
    author: str
    date: str
    subject: str
    timestamp: int = 0
    paths: list[str] = field(default_factory=list)


def _iso(epoch: int, tz: str) -> str:
    sign = -1 if tz.startswith("-") else 1
    digits = tz.lstrip("+-").rjust(4, "0")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4])) * sign
    return datetime.fromtimestamp(epoch, timezone(offset)).isoformat()


def parse_blame(porcelain: str) -> tuple[dict[int, str], dict[str, Commit], dict[int, str]]:
    """`git blame --porcelain`: line -> sha, sha -> commit, line -> text."""
    by_line: dict[int, str] = {}
    text: dict[int, str] = {}
    commits: dict[str, Commit] = {}
    headers: dict[str, dict[str, str]] = {}
    current = ""
    line = 0
    for raw in porcelain.split("\n"):
        if raw.startswith("\t"):
            text[line] = raw[1:]
            continue
        fields = raw.split(" ")
        if len(fields) >= 3 and FULL_SHA.match(fields[0]):
            current = fields[0]
            line = int(fields[2])
            by_line[line] = current
            headers.setdefault(current, {})
        elif current and raw:
            key, _, value = raw.partition(" ")
            headers[current].setdefault(key, value)
    for sha, info in headers.items():
        commits[sha] = Commit(
            sha=sha,
            author=info.get("author", ""),
            date=_iso(int(info.get("author-time", "0")), info.get("author-tz", "+0000")),
            subject=info.get("summary", ""),
            timestamp=int(info.get("author-time", "0")),
        )
    return by_line, commits, text


def file_log(repo: Path, commit: str, path: str, *, on_wait: OnWait | None = None) -> list[Commit]:
    """The last `LOG_DEPTH` commits that changed `path`, each with every path it changed."""
    out = git_text(
        repo, "-c", "core.quotepath=off", "log", f"-n{LOG_DEPTH}", "--full-diff", "--name-only",
        "--format=%x1e%H%x1f%an%x1f%aI%x1f%at%x1f%s", commit, "--", path, on_wait=on_wait,
    )  # fmt: skip
    commits = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        header, _, names_part = record.partition("\n")
        sha, author, date, epoch, subject = header.split("\x1f", 4)
        paths = [p for p in names_part.split("\n") if p.strip()]
        commits.append(Commit(sha, author, date, subject, int(epoch), paths))
    return commits


def changed_paths(repo: Path, sha: str, *, on_wait: OnWait | None = None) -> list[str]:
    out = git_text(
        repo, "-c", "core.quotepath=off", "diff-tree", "--no-commit-id", "--name-only", "-r",
        "--root", sha, on_wait=on_wait,
    )  # fmt: skip
    return [p for p in out.splitlines() if p]


def _examine(
    repo: Path,
    commit: str,
    finding: FrameFinding,
    blob: str,
    commits: dict[str, Commit],
    on_wait: OnWait | None,
) -> None:
    """Fill in the finding's log, code window and blame; remember every commit seen."""
    for entry in file_log(repo, commit, finding.path, on_wait=on_wait):
        commits.setdefault(entry.sha, entry)
        finding.log.append(
            {"sha": entry.sha, "author": entry.author, "date": entry.date,
             "subject": entry.subject, "paths": entry.paths[:MAX_SUSPECT_PATHS]}
        )  # fmt: skip
    line = finding.frame.line
    source = read_blob(repo, blob, on_wait=on_wait).decode("utf-8", errors="replace").split("\n")
    if source and source[-1] == "":
        source.pop()
    if not line or line > len(source):
        return
    start, end = max(1, line - WINDOW_RADIUS), min(len(source), line + WINDOW_RADIUS)
    finding.window = {
        "start_line": start,
        "end_line": end,
        "lines": [
            {"line": n, "text": _clip(source[n - 1].rstrip("\r"), MAX_ARTIFACT_LINE_CHARS)}
            for n in range(start, end + 1)
        ],
    }
    low, high = max(1, line - BLAME_RADIUS), min(len(source), line + BLAME_RADIUS)
    porcelain = git_text(
        repo, "blame", "--porcelain", "-w", "-L", f"{low},{high}", commit, "--", finding.path,
        on_wait=on_wait,
    )  # fmt: skip
    by_line, blamed, text = parse_blame(porcelain)
    for sha, info in blamed.items():
        commits.setdefault(sha, info)
    finding.blame = [
        {"line": n, "sha": sha, "author": commits[sha].author, "date": commits[sha].date,
         "subject": commits[sha].subject,
         "text": _clip(text.get(n, ""), MAX_ARTIFACT_LINE_CHARS)}
        for n, sha in sorted(by_line.items())
    ]  # fmt: skip


def _rank_suspects(
    repo: Path,
    findings: Sequence[FrameFinding],
    commits: Mapping[str, Commit],
    on_wait: OnWait | None,
) -> list[SuspectCommit]:
    """Failing line of the innermost frame, other failing lines, nearby lines, recent edits."""
    reasons: dict[str, str] = {}

    def consider(sha: str, reason: str) -> None:
        reasons.setdefault(sha, reason)

    for position, finding in enumerate(findings):
        for entry in finding.blame:
            if entry["line"] == finding.frame.line:
                where = "the failing line" if position == 0 else "a calling line"
                consider(entry["sha"], f"last changed {finding.path}:{entry['line']} ({where})")
    for finding in findings:
        nearby = sorted(finding.blame, key=lambda e: abs(e["line"] - (finding.frame.line or 0)))
        for entry in nearby:
            consider(
                entry["sha"],
                f"last changed {finding.path}:{entry['line']} "
                f"(near {finding.path}:{finding.frame.line})",
            )
    recent = sorted(
        ((commits[e["sha"]], finding.path) for finding in findings for e in finding.log),
        key=lambda pair: -pair[0].timestamp,
    )
    for logged, path in recent:
        consider(logged.sha, f"recently changed {path}")

    suspects = []
    for sha, reason in list(reasons.items())[:MAX_SUSPECTS]:
        info = commits[sha]
        paths = info.paths or changed_paths(repo, sha, on_wait=on_wait)
        suspects.append(
            SuspectCommit(
                sha=sha,
                author=_clip(info.author, 200),
                date=info.date,
                subject=_clip(info.subject, MAX_SUBJECT_CHARS),
                paths=[_clip(p, 300) for p in paths[:MAX_SUSPECT_PATHS]],
                reason=reason,
            )
        )
    return suspects


# ---------------------------------------------------------------------------- the evidence


@dataclass
class Investigation:
    findings: list[FrameFinding]
    unmatched: list[str]
    suspects: list[SuspectCommit]
    called: list[Callee] = field(default_factory=list)


def _follow_order(findings: Sequence[FrameFinding]) -> list[FrameFinding]:
    """Frames whose calls to follow, most telling first: the service's own code innermost
    first, then the test functions themselves, then other test code (assertion helpers)."""

    def rank(finding: FrameFinding) -> int:
        if not is_test_path(finding.path):
            return 0
        return 1 if (finding.frame.function or "").startswith("test") else 2

    return sorted(findings, key=rank)


def follow_calls(
    repo: Path,
    findings: Sequence[FrameFinding],
    blobs: Mapping[str, str],
    *,
    on_wait: OnWait | None = None,
) -> list[Callee]:
    """The project code the located frames call (remedy.calls), each definition once."""
    texts: dict[str, str | None] = {}

    def read(path: str) -> str | None:
        if path not in texts:
            blob = blobs.get(path)
            data = read_blob(repo, blob, on_wait=on_wait) if blob else None
            texts[path] = data.decode("utf-8", errors="replace") if data is not None else None
        return texts[path]

    on_stack = {(f.path, f.frame.function) for f in findings}
    found: dict[tuple[str, str], Callee] = {}
    for finding in _follow_order(findings):
        if not finding.frame.line or len(found) >= MAX_CALLEES:
            continue
        called = callees(
            finding.path, finding.frame.line, blobs.keys(), read, function=finding.frame.function
        )
        for callee in called:
            if (callee.path, callee.symbol.rsplit(".", 1)[-1]) not in on_stack:
                found.setdefault((callee.path, callee.symbol), callee)
    return list(found.values())[:MAX_CALLEES]


def investigate(
    repo: Path,
    commit: str,
    frames: Sequence[Frame],
    include: Sequence[str],
    *,
    on_wait: OnWait | None = None,
) -> Investigation:
    """Locate the in-app frames at `commit`, read their code, blame the lines, rank suspects."""
    blobs = {
        path: sha
        for path, (mode, sha) in tree_entries(repo, commit, recursive=True, on_wait=on_wait).items()
        if mode in REGULAR_FILE_MODES
    }
    findings, unmatched = locate_frames(frames, RepoFiles(list(blobs)), include)
    commits: dict[str, Commit] = {}
    for finding in findings:
        if on_wait is not None:
            on_wait(f"investigating {finding.path}")
        _examine(repo, commit, finding, blobs[finding.path], commits, on_wait)
    suspects = _rank_suspects(repo, findings, commits, on_wait)
    called = follow_calls(repo, findings, blobs, on_wait=on_wait)
    return Investigation(findings, unmatched, suspects, called)


def evidence_record(request: InvestigateRequest, found: Investigation) -> dict[str, Any]:
    """Everything the investigation saw, for the incident's `evidence.json` artifact."""
    worktree = request.worktree
    return {
        "incident_id": request.incident_id,
        "service": worktree.service,
        "commit": worktree.commit,
        "error": request.error.model_dump(),
        "frames": [
            {
                "file": f.frame.file,
                "function": f.frame.function,
                "line": f.frame.line,
                "path": f.path,
                "window": f.window,
                "blame": f.blame,
                "log": f.log,
            }
            for f in found.findings
        ],
        "unmatched_frames": found.unmatched,
        "suspect_commits": [s.model_dump() for s in found.suspects],
        "called_code": [vars(callee) for callee in found.called],
    }


def evidence_of(request: InvestigateRequest, found: Investigation, ref: ArtifactRef) -> Evidence:
    """The bounded summary the workflow keeps; `ref` points at the full record."""
    frames = [
        FrameEvidence(
            path=f.path,
            line=f.frame.line,
            function=f.frame.function,
            start_line=f.window["start_line"] if f.window else None,
            end_line=f.window["end_line"] if f.window else None,
        )
        for f in found.findings
    ]
    frames += [
        FrameEvidence(path=_clip(file, 300), found=False)
        for file in found.unmatched[: MAX_REPORTED_FRAMES - len(frames)]
    ]
    return Evidence(
        summary=_summary(request, found),
        frames=frames,
        suspect_commits=found.suspects,
        called_code=[CalledCode(**vars(callee)) for callee in found.called],
        artifact=ref,
    )


def _summary(request: InvestigateRequest, found: Investigation) -> str:
    error = request.error.type
    message = request.error.message.strip().splitlines()[0] if request.error.message else ""
    headline = _clip(f"{error}: {message}" if message else error, 160)
    if not found.findings:
        return (
            f"{headline}; no stack frame matched a file of {request.worktree.service} "
            f"at {request.worktree.commit[:12]}"
        )
    inner = found.findings[0]
    where = f"{inner.path}:{inner.frame.line}" if inner.frame.line else inner.path
    if inner.frame.function:
        where += f" in {inner.frame.function}()"
    summary = f"{headline} at {where}."
    if found.suspects:
        top = found.suspects[0]
        summary += (
            f"\nTop suspect: {top.sha[:12]} {_clip(top.subject, 80)!r} by {top.author}: "
            f"{top.reason}."
        )
    return summary
