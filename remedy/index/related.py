"""What the index adds to an investigation: code related to an incident, similar past
incidents, and the memory of a closed incident that later ones are compared with.

The queries come from the incident itself (the error, the failing lines of its frames, the
frame functions); a frame's own code is already in the evidence, so it is counted but left
out of the related code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remedy.evidence import is_test_path
from remedy.git.history import RepoFiles
from remedy.git.runner import run_git
from remedy.index.core import CodeHit, CodeIndex
from remedy.index.store import Hit
from remedy.models import (
    ArtifactRef,
    Frame,
    RecordIncidentRequest,
    RelatedCode,
    RelatedRequest,
    RelatedResult,
    SimilarIncident,
)

MAX_FRAME_QUERIES = 5
FAILING_LINES_RADIUS = 2
MAX_PATCH_CHARS = 8000
SIMILAR_INCIDENTS = 5


@dataclass(frozen=True)
class Located:
    """A frame and the repository path its file was found at."""

    frame: Frame
    path: str


def locate_frames(checkout: Path, commit: str, frames: Sequence[Frame]) -> list[Located]:
    """Frames found in the repository at `commit`, innermost first."""
    listing = run_git(["-C", checkout, "ls-tree", "-r", "-z", "--name-only", commit]).stdout.decode(
        "utf-8", errors="surrogateescape"
    )
    files = RepoFiles([p for p in listing.split("\0") if p])
    located = []
    for frame in reversed(frames):
        path = files.locate(frame.file)
        if path is not None and frame.in_app is not False:
            located.append(Located(frame, path))
    return located


def related_queries(
    request: RelatedRequest, located: Sequence[Located], root: Path
) -> list[tuple[str, str]]:
    """(source, text) of every query: the error, each failing line, the frame functions."""
    error = request.error
    queries = [("error", f"{error.type}: {error.message}".strip())]
    for item in located[:MAX_FRAME_QUERIES]:
        frame = item.frame
        lines = _failing_lines(root / item.path, frame.line) or (frame.code or "")
        if lines.strip():
            queries.append((f"frame {item.path}:{frame.line}", f"{frame.function or ''}\n{lines}"))
    functions = [
        f.function for f in reversed(request.frames) if f.function and f.function != "<module>"
    ]
    if functions:
        queries.append(("functions", " ".join(dict.fromkeys(functions))))
    return queries


def _failing_lines(path: Path, line: int | None) -> str:
    if not line:
        return ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    start = max(0, line - 1 - FAILING_LINES_RADIUS)
    return "\n".join(lines[start : line + FAILING_LINES_RADIUS])


@dataclass
class Findings:
    """What one find_related search turned up, before it is stored and summarised."""

    queries: list[tuple[str, str]]
    related: list[CodeHit]
    frames: list[CodeHit]
    similar: list[Hit]

    def similar_incidents(self) -> list[SimilarIncident]:
        return [
            SimilarIncident(
                incident_id=str(h.payload.get("incident_id", "")),
                summary=str(h.payload.get("summary", "")),
                outcome=str(h.payload.get("outcome", "")),
                score=round(h.score, 4),
            )
            for h in self.similar
        ]

    def as_json(self, incident_id: str, repo: str, commit: str) -> dict[str, Any]:
        """The artifact: every query, hit and similar incident in full."""
        return {
            "incident_id": incident_id,
            "repo": repo,
            "commit": commit,
            "queries": [{"source": source, "text": text} for source, text in self.queries],
            "related": [dict(h.as_json(), queries=h.queries) for h in self.related],
            "frames": [dict(h.as_json(), frame=True) for h in self.frames],
            "similar_incidents": [
                dict(s.model_dump(), **_incident_details(h.payload))
                for s, h in zip(self.similar_incidents(), self.similar, strict=True)
            ],
        }

    def result(self, artifact: ArtifactRef) -> RelatedResult:
        return RelatedResult(
            related_code=[related_code(h) for h in self.related],
            similar_incidents=self.similar_incidents(),
            frame_chunks=len(self.frames),
            artifact=artifact,
        )


def find_related(
    index: CodeIndex,
    repo: str,
    request: RelatedRequest,
    located: Sequence[Located],
    queries: Sequence[tuple[str, str]],
) -> Findings:
    """Search the code at the incident's commit and the service's past incidents."""
    worktree = request.worktree
    error_text = f"{request.error.type}: {request.error.message}"
    functions = " ".join(f.function for f in request.frames if f.function)
    hits = index.search(repo, worktree.commit, [q for _, q in queries], 3 * request.limit + 8)
    similar = index.similar_incidents(
        worktree.service, f"{error_text}\n{functions}", SIMILAR_INCIDENTS, request.incident_id
    )
    frame_hits = [h for h in hits if _is_frame(h, located)]
    # When the failure surfaces in a test, the queries come from test code and retrieve
    # more tests; the code under test is what explains it, so it goes first (stable order
    # by score within each group).
    beyond_frames = [h for h in hits if not _is_frame(h, located)]
    related = sorted(beyond_frames, key=lambda h: is_test_path(h.path))[: request.limit]
    return Findings(list(queries), related, frame_hits, similar)


def _is_frame(hit: CodeHit, located: Sequence[Located]) -> bool:
    return any(
        hit.path == item.path
        and item.frame.line is not None
        and hit.start_line <= item.frame.line <= hit.end_line
        for item in located
    )


def _incident_details(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("fingerprint", "error_type", "error_message", "root_cause", "reason", "patch")
    return {key: payload.get(key) for key in keys}


def related_code(hit: CodeHit) -> RelatedCode:
    """A hit as the workflow carries it: where it is and how well it matched, no text."""
    return RelatedCode(
        path=hit.path,
        symbol=hit.symbol,
        start_line=hit.start_line,
        end_line=hit.end_line,
        score=round(hit.score, 4),
    )


def incident_memory(request: RecordIncidentRequest, patch: str) -> tuple[dict[str, Any], str]:
    """(payload, text to embed) of a closed incident, its patch clipped."""
    functions = " ".join(f.function for f in request.frames if f.function)
    text = (
        f"{request.error.type}: {request.error.message}\n{functions}\n"
        f"{request.summary}\n{request.root_cause}"
    )
    payload: dict[str, Any] = {
        "kind": "incident",
        "incident_id": request.incident_id,
        "service": request.service,
        "fingerprint": request.fingerprint,
        "error_type": request.error.type,
        "error_message": request.error.message[:2000],
        "functions": functions,
        "summary": request.summary,
        "root_cause": request.root_cause,
        "outcome": request.outcome,
        "reason": request.reason,
        "patch": patch[:MAX_PATCH_CHARS],
    }
    return payload, text
