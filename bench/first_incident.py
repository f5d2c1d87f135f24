"""A service's first incident on a never-indexed repository: time to `diagnosing` against the
repository's full cold index, side by side in one run.

One real bug of `../shared/bench/realbugs` (default tornado-1: tornado is about 5,600 chunks)
runs through bench/localize.py's pipeline on a fresh store, with the incident's frames
handed to `index_repo` as the workflow does: sync_repo, the focus index, investigate,
find_related, i.e. everything before the diagnosis starts. Then the same tree is indexed in
full on another fresh store (`index_repo` with `complete=True`, what IndexWorkflow runs after
the incident), and the case runs again on that complete index. Printed: the two times and
their ratio (goal <= 10 %), what each indexed, and where the fix file ranks in the evidence
the diagnosis would see, with the focus index and with the complete one.

    nice .venv/bin/python bench/first_incident.py [--case tornado-1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from activities.index import IndexActivities
from bench.localize import (
    FILE_TOP,
    REALBUGS,
    config_for,
    load_cases,
    project_repository,
    run_case,
    service_name,
)
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.index.embed import get_embedder
from remedy.models import IndexRequest, IndexResult, SyncRequest


def full_cold_index(case: dict[str, object], data: Path, work: Path) -> tuple[IndexResult, float]:
    service = service_name(str(case["project"]))
    repo, commit = project_repository(case, data, work)
    config = config_for(work, {service: repo})
    store = ArtifactStore(config.artifacts_dir)
    env = ActivityEnvironment()
    worktree = env.run(
        GitActivities(config, store).sync_repo,
        SyncRequest(incident_id="bench-full", service=service, release=commit),
    )
    started = time.perf_counter()
    result: IndexResult = env.run(
        IndexActivities(config, store).index_repo,
        IndexRequest(worktree=worktree, incident_id="bench-full", complete=True),
    )
    return result, time.perf_counter() - started


def _steps(steps: dict[str, float]) -> str:
    return ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps.items())


def _rank(rank: int | None) -> str:
    return f"#{rank}" if rank else f"not in the top {FILE_TOP}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="tornado-1")
    parser.add_argument("--data", type=Path, default=REALBUGS)
    arguments = parser.parse_args()
    [case] = load_cases(arguments.data, None, [arguments.case])
    # Workers load the model when they start (worker.py), not on the first incident.
    get_embedder(RemedyConfig().embeddings)
    with tempfile.TemporaryDirectory(prefix="remedy-first-incident-") as scratch:
        first = run_case(case, arguments.data, Path(scratch) / "first", with_frames=True)
        assert first.index is not None  # run with the index
        print(f"first incident: {first.to_diagnosing:.1f} s to diagnosing, "
              f"{first.index.files} files / {first.index.chunks} chunks indexed "
              f"(complete: {first.index.complete}); fix file in the evidence: "
              f"{_rank(first.file_rank)}; steps: {_steps(first.steps)}", flush=True)  # fmt: skip
        full, seconds = full_cold_index(case, arguments.data, Path(scratch) / "full")
        print(f"full cold index: {seconds:.1f} s, {full.files} files / {full.chunks} chunks "
              f"({full.backend})", flush=True)  # fmt: skip
        # The same incident once the index is complete (the tree is recommitted: only the
        # commit is new, every chunk is reused).
        later = run_case(case, arguments.data, Path(scratch) / "full", with_frames=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"with the complete index: fix file in the evidence: {_rank(later.file_rank)} "
          f"({later.to_diagnosing:.1f} s to diagnosing)")  # fmt: skip
    print(f"first incident to diagnosing / full cold index: "
          f"{100 * first.to_diagnosing / seconds:.1f} % (goal <= 10 %)")  # fmt: skip


if __name__ == "__main__":
    main()
