"""Fault localization on real bugs: does the evidence point at the code the real fix changed?

For each case of ../shared/bench/realbugs beside the repository (real tracebacks of real bugs
in 12 open-source Python projects; `--data` points elsewhere) the buggy tree becomes a git
repository and the error goes through the pipeline an incident takes: `build_incident_start`
(redaction, traceback parsing, in-app marking) on an ErrorEvent made of the error type,
message and traceback; then the real `sync_repo`, `index_repo`, `investigate` and
`find_related` activities. The evidence is ranked by `remedy.evidence.ranked_windows`, the
order in which the diagnosis prompt shows code, and compared with the answer key
(`fix_files`, `fix_functions`), which only this scoring reads:

- file: a fix file among the first 5 files of those windows (`ranked_files(evidence, 5)`);
- function: a fix function among the first 10 functions they show (`ranked_chunks`). A frame
  names a function the way its traceback printed it (`initialize`, never
  `IOLoop.initialize`), so a chunk `path::name` also matches a fix function `path::Cls.name`
  of the same file.

The baseline is the same evidence with the stack frames only (no suspect commits, no code
index). One persistent index store serves every case: chunks are content-addressed per
project, so the next buggy commit of a project embeds only what changed.

    nice .venv/bin/python bench/localize.py [--kind exception] [--cases ID,ID] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from activities.index import IndexActivities
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, ServiceConfig
from remedy.evidence import ranked_chunks, ranked_files
from remedy.intake import build_incident_start
from remedy.models import (
    ErrorEvent,
    ErrorInfo,
    Evidence,
    IndexRequest,
    IndexResult,
    InvestigateRequest,
    RelatedRequest,
    RelatedResult,
    SyncRequest,
    Worktree,
)

REALBUGS = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "realbugs"
FILE_TOP = 5
FUNCTION_TOP = 10
MAX_MESSAGE_CHARS = 16_384  # ErrorInfo.message's limit; clients clip longer messages


@dataclass
class Outcome:
    case: str
    project: str
    kind: str
    file_rank: int | None
    function_rank: int | None
    baseline_file_rank: int | None
    baseline_function_rank: int | None
    calls_file_rank: int | None
    calls_function_rank: int | None
    index: IndexResult | None
    seconds: float
    to_diagnosing: float
    steps: dict[str, float]
    files: list[str]
    chunks: list[str]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def load_cases(data: Path, kind: str | None, only: Sequence[str]) -> list[dict[str, Any]]:
    cases_file = data / "cases.jsonl"
    if not cases_file.is_file():
        raise SystemExit(f"--data: no {cases_file} (point --data at the realbugs folder)")
    cases = [json.loads(line) for line in cases_file.read_text().splitlines()]
    if only:
        unknown = set(only) - {c["id"] for c in cases}
        if unknown:
            raise SystemExit(f"--cases: no such case {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c["id"] in only]
    if kind:
        cases = [c for c in cases if c["kind"] == kind]
    # Exception cases first: they are the target, and the rest may not finish in time.
    return sorted(cases, key=lambda c: (c["kind"] != "exception", c["project"], c["id"]))


def service_name(project: str) -> str:
    return project.lower().replace(".", "-")


def project_repository(case: dict[str, Any], data: Path, work: Path) -> tuple[Path, str]:
    """The case's buggy tree as a fresh one-commit repository at a path fixed per project (the
    index keys a repository by its location, so every case of a project shares vectors)."""
    repo = work / "projects" / service_name(case["project"])
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    prefix = f"{case['id']}/"
    with tarfile.open(data / "trees" / f"{case['id']}.tar.gz") as archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            member.name = member.name[len(prefix) :]
            if member.name:
                members.append(member)
        archive.extractall(repo, members=members, filter="data")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all", "--force")
    message = f"{case['project']} at {case['buggy_commit']}"
    git(repo, "-c", "user.name=realbugs", "-c", "user.email=realbugs@example.com",
        "commit", "--quiet", "--no-verify", "-m", message)  # fmt: skip
    return repo, git(repo, "rev-parse", "HEAD")


def config_for(work: Path, services: dict[str, Path]) -> RemedyConfig:
    config = RemedyConfig(
        home=str(work / "home"),
        services={name: ServiceConfig(repo=str(path)) for name, path in services.items()},
    )
    config.qdrant.path = str(work / "index")
    # Every buggy commit of a project stays answerable, so later cases reuse its vectors.
    config.qdrant.keep_commits = 1000
    return config


def rank_of(found: Sequence[str], wanted: Sequence[str], match: Any) -> int | None:
    for rank, item in enumerate(found, start=1):
        if any(match(item, target) for target in wanted):
            return rank
    return None


def same_function(chunk: str, fix: str) -> bool:
    path, _, symbol = chunk.partition("::")
    fix_path, _, fix_symbol = fix.partition("::")
    return path == fix_path and (symbol == fix_symbol or fix_symbol.endswith(f".{symbol}"))


def incident_event(case: dict[str, Any], commit: str) -> ErrorEvent:
    """The error report a case's failure makes: its type, message and traceback, at `commit`
    (never the answer key)."""
    return ErrorEvent(
        service=service_name(case["project"]),
        release=commit,
        error=ErrorInfo(type=case["error_type"], message=case["error_message"][:MAX_MESSAGE_CHARS]),
        traceback=case["traceback"],
    )


def run_case(
    case: dict[str, Any],
    data: Path,
    work: Path,
    *,
    with_frames: bool = False,
    with_index: bool = True,
) -> Outcome:
    """The case through the evidence activities. `with_frames` hands index_repo the
    incident's frames as the workflow does, so a never-indexed repository gets its focus
    index (remedy.index.focus) rather than a full one; without `with_index` the code index
    is left out (the evidence an incident has when indexing fails)."""
    started = time.perf_counter()
    service = service_name(case["project"])
    repo, commit = project_repository(case, data, work)
    config = config_for(work, {service: repo})
    store = ArtifactStore(config.artifacts_dir)
    env = ActivityEnvironment()
    gits = GitActivities(config, store)
    index = IndexActivities(config, store)

    start = build_incident_start(incident_event(case, commit), config)
    incident = f"bench-{case['id']}"
    pipeline_started = time.perf_counter()
    steps: dict[str, float] = {}

    def timed(step: str, function: Any, request: Any) -> Any:
        began = time.perf_counter()
        result = env.run(function, request)
        steps[step] = time.perf_counter() - began
        return result

    worktree: Worktree = timed(
        "sync", gits.sync_repo, SyncRequest(incident_id=incident, service=service, release=commit)
    )
    frames = start.event.frames if with_frames else []
    indexed: IndexResult | None = (
        timed(
            "index",
            index.index_repo,
            IndexRequest(worktree=worktree, incident_id=incident, frames=frames),
        )
        if with_index
        else None
    )
    # What the workflow hands both activities: the incident's error and parsed frames.
    about: dict[str, Any] = {
        "incident_id": incident,
        "worktree": worktree,
        "error": start.event.error,
        "frames": start.event.frames,
    }
    evidence: Evidence = timed("investigate", gits.investigate, InvestigateRequest(**about))
    full = evidence
    if with_index:
        related: RelatedResult = timed("related", index.find_related, RelatedRequest(**about))
        full = evidence.model_copy(
            update={
                "related_code": related.related_code,
                "similar_incidents": related.similar_incidents,
            }
        )
    to_diagnosing = time.perf_counter() - pipeline_started
    baseline = Evidence(summary=evidence.summary, frames=evidence.frames)
    with_calls = baseline.model_copy(update={"called_code": evidence.called_code})
    files, chunks = ranked_files(full, FILE_TOP), ranked_chunks(full, FUNCTION_TOP)
    # The answer key is read here, after the pipeline, and nowhere else.
    fix_files, fix_functions = case["fix_files"], case["fix_functions"]
    return Outcome(
        case=case["id"],
        project=case["project"],
        kind=case["kind"],
        file_rank=rank_of(files, fix_files, str.__eq__),
        function_rank=rank_of(chunks, fix_functions, same_function),
        baseline_file_rank=rank_of(ranked_files(baseline, FILE_TOP), fix_files, str.__eq__),
        baseline_function_rank=rank_of(
            ranked_chunks(baseline, FUNCTION_TOP), fix_functions, same_function
        ),
        calls_file_rank=rank_of(ranked_files(with_calls, FILE_TOP), fix_files, str.__eq__),
        calls_function_rank=rank_of(
            ranked_chunks(with_calls, FUNCTION_TOP), fix_functions, same_function
        ),
        index=indexed,
        seconds=time.perf_counter() - started,
        to_diagnosing=to_diagnosing,
        steps=steps,
        files=files,
        chunks=chunks,
    )


def _mark(rank: int | None) -> str:
    return f"#{rank}" if rank else "-"


def _share(outcomes: Sequence[Outcome], attribute: str) -> str:
    hits = sum(1 for o in outcomes if getattr(o, attribute) is not None)
    return f"{hits}/{len(outcomes)} ({100 * hits / len(outcomes):.0f}%)" if outcomes else "-"


def summary(outcomes: Sequence[Outcome]) -> list[str]:
    rows = [
        f"{'kind':<10} {'cases':>5}  {'file@5 full':>14} {'file@5 frames':>14} "
        f"{'file@5 +calls':>14}  {'func@10 full':>14} {'func@10 frames':>14} "
        f"{'func@10 +calls':>14}"
    ]
    groups = [
        (kind, [o for o in outcomes if o.kind == kind]) for kind in ("exception", "assertion")
    ]
    for kind, group in [*groups, ("all", list(outcomes))]:
        if not group:
            continue
        rows.append(
            f"{kind:<10} {len(group):>5}  {_share(group, 'file_rank'):>14} "
            f"{_share(group, 'baseline_file_rank'):>14} {_share(group, 'calls_file_rank'):>14}  "
            f"{_share(group, 'function_rank'):>14} {_share(group, 'baseline_function_rank'):>14} "
            f"{_share(group, 'calls_function_rank'):>14}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["exception", "assertion"])
    parser.add_argument("--cases", default="", help="comma-separated case ids")
    parser.add_argument(
        "--data", type=Path, default=REALBUGS, help=f"the realbugs folder (default {REALBUGS})"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(__file__).resolve().parent / "out" / "localize",
        help="scratch repositories and the persistent index store",
    )
    parser.add_argument("--json", type=Path, help="also write every outcome here")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="every case on a never-indexed store, its frames handed to index_repo as the "
        "workflow does (the focus index a service's first incident gets)",
    )
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="leave the code index out: minutes instead of hours, the full evidence is then "
        "the frames, their calls and the suspect commits",
    )
    arguments = parser.parse_args()
    cases = load_cases(arguments.data, arguments.kind, [c for c in arguments.cases.split(",") if c])
    arguments.work.mkdir(parents=True, exist_ok=True)
    print(
        f"{'case':<18} {'kind':<9} {'file':>4} {'func':>4} | {'base file':>9} {'base func':>9} "
        f"| {'+calls file':>11} {'+calls func':>11} "
        f"| {'chunks':>6} {'embedded':>8} {'index s':>7} {'to diag':>7} {'total s':>7}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    for case in cases:
        work = arguments.work / "cold" / case["id"] if arguments.cold else arguments.work
        if arguments.cold:
            shutil.rmtree(work, ignore_errors=True)
        outcome = run_case(
            case,
            arguments.data,
            work,
            with_frames=arguments.cold,
            with_index=not arguments.no_index,
        )
        indexed = outcome.index or IndexResult(repo="", commit="")
        outcomes.append(outcome)
        print(
            f"{outcome.case:<18} {outcome.kind:<9} {_mark(outcome.file_rank):>4} "
            f"{_mark(outcome.function_rank):>4} | {_mark(outcome.baseline_file_rank):>9} "
            f"{_mark(outcome.baseline_function_rank):>9} | {_mark(outcome.calls_file_rank):>11} "
            f"{_mark(outcome.calls_function_rank):>11} | {indexed.chunks:>6} "
            f"{indexed.embedded:>8} {indexed.seconds:>7.1f} "
            f"{outcome.to_diagnosing:>7.1f} {outcome.seconds:>7.1f}",
            flush=True,
        )
    print()
    print("\n".join(summary(outcomes)))
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                [{**vars(o), "index": o.index and o.index.model_dump()} for o in outcomes],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
