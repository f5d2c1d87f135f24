"""The sandbox's cost per verification run: bubblewrap against a plain `unshare --net`.

A small service repository (a module and a pytest suite of --tests tests) is committed once.
Each round makes the per-run copy the product makes (`activities.sandbox.export_copy`), runs
the suite in it through the product's runner (`remedy.sandbox.runner.run_confined`) once in
bubblewrap and once with only a fresh network namespace (the isolation verification had
before the sandbox: same limits, same scrubbed environment), and removes the copy. The two
runs alternate which goes first, so a busy machine weighs on both alike. Printed: the median
and p90 of each, the median added by the sandbox, and the copy's own median.

    .venv/bin/python bench/sandbox.py [--runs 20] [--tests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.sandbox import export_copy
from remedy.sandbox.bwrap import python_prefixes, read_only_paths
from remedy.sandbox.limits import MB, SandboxLimits
from remedy.sandbox.runner import (
    Confinement,
    Unsandboxed,
    find_bubblewrap,
    network_isolation_prefix,
    probe,
    remove_tree,
    run_confined,
)

LIMITS = SandboxLimits(wall_s=120, cpu_s=120, memory_bytes=4096 * MB, file_bytes=512 * MB)
COMMAND = f"{sys.executable} -m pytest -q -p no:cacheprovider"


def make_repo(root: Path, tests: int) -> Path:
    repo = root / "service"
    (repo / "app").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "app/__init__.py").write_text("")
    (repo / "app/cart.py").write_text("def total(items):\n    return sum(items)\n")
    cases = "".join(
        f"\n\ndef test_total_{n}():\n    assert total([{n}, 1]) == {n + 1}\n" for n in range(tests)
    )
    (repo / "tests/test_cart.py").write_text(f"from app.cart import total\n{cases}")
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "suite"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


async def one_run(repo: Path, folder: Path, confinement: Confinement) -> tuple[float, float]:
    """(ms for the run, ms for making and removing its copy)."""
    copy = folder / "copy"
    started = time.perf_counter()
    problem = await export_copy(repo, copy)
    assert problem is None, problem
    copied = time.perf_counter()
    outcome = await run_confined(
        COMMAND,
        copy=copy,
        home=folder,
        log=folder / "run.log",
        limits=LIMITS,
        confinement=confinement,
    )
    ran = time.perf_counter()
    remove_tree(copy)
    removed = time.perf_counter()
    log = (folder / "run.log").read_text(errors="replace")
    assert outcome.exit_code == 0, log
    return (ran - copied) * 1000, ((copied - started) + (removed - ran)) * 1000


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


async def main(runs: int, tests: int) -> None:
    found = find_bubblewrap(read_only_paths(python_prefixes(sys.executable)), (65534, 65534))
    reason = found if isinstance(found, str) else await probe(found, LIMITS)
    if reason or isinstance(found, str):
        raise SystemExit(f"no sandbox here: {reason}")
    network = network_isolation_prefix()
    if network is None:
        raise SystemExit("no `unshare --net` here to compare with")
    plain = Unsandboxed(network=tuple(network))
    contenders: dict[str, Confinement] = {"bubblewrap": found, "unshare --net": plain}
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    copies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="remedy-bench-sandbox-") as scratch:
        root = Path(scratch)
        repo = make_repo(root, tests)
        for name, confinement in contenders.items():  # warm the page cache and imports
            (root / name).mkdir()
            await one_run(repo, root / name, confinement)
        for round_ in range(runs):
            order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
            for name in order:
                run_ms, copy_ms = await one_run(repo, root / name, contenders[name])
                timings[name].append(run_ms)
                copies.append(copy_ms)
    sandboxed, unshared = timings["bubblewrap"], timings["unshare --net"]
    added = statistics.median(sandboxed) - statistics.median(unshared)
    copy = statistics.median(copies)
    where = f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores"
    who = "root (staged, as uid 65534)" if found.run_as else f"uid {os.geteuid()}"
    print(f"{runs} rounds, {tests} tests, bwrap as {who}, {where}")
    for name, values in timings.items():
        print(f"  {name:14} median {statistics.median(values):7.1f} ms  p90 {p90(values):7.1f} ms")
    print(f"  added by the sandbox: {added:.1f} ms per run; the per-run copy: {copy:.1f} ms")
    print(
        f"| {runs} rounds, {tests}-test pytest suite | {statistics.median(sandboxed):.0f} ms "
        f"| {statistics.median(unshared):.0f} ms | {added:+.0f} ms | {copy:.0f} ms | {who} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tests", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.tests))
