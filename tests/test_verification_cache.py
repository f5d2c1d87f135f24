"""verify_patch runs nothing twice: finished runs are reused for the same tree, command and
environment only, never one cut short, never an unsandboxed one; parallel runs judge as
serial ones do.

Every command prints a fresh random marker first, so a log that repeats an earlier run's
marker was reused from it, and one with a new marker ran again.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sandbox import SandboxActivities, parallel_slots
from remedy.config import LimitsConfig, SandboxConfig
from remedy.models import (
    CommandRun,
    SuiteBeforeRequest,
    SuiteBeforeResult,
    VerificationResult,
    VerifyRequest,
)
from remedy.sandbox.cache import RunCache, RunRecord
from tests.test_sandbox import INCIDENT, PYTEST, Shop, _exposing, needs_sandbox

MARKED = "echo RUN $(cat /proc/sys/kernel/random/uuid) && "
SECOND = "checkout-0123456789abcdef-e5f6a7b8"
THIRD = "checkout-0123456789abcdef-c9d0e1f2"
FIX = ('item["qty"]', 'item.get("qty", 1)')


def marker(shop: Shop, run: CommandRun) -> str:
    """The random marker the run printed."""
    assert run.log is not None
    found = re.search(r"^RUN (\S+)$", shop.store.get_text(run.log), re.MULTILINE)
    assert found, shop.store.get_text(run.log)
    return found.group(1)


def runs_of(result: VerificationResult) -> dict[str, CommandRun]:
    return {run.label: run for run in result.runs}


def cache_entries(shop: Shop) -> list[Path]:
    return sorted((shop.tmp / "home" / "cache" / "verify").glob("*.json"))


@needs_sandbox
async def test_the_next_incident_on_the_same_commit_reuses_the_suite_before(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, MARKED + PYTEST)
    first = await shop.verify(shop.patch(*FIX), shop.regression())
    assert first.status == "passed" and first.reproduced is True, first.summary
    assert all(run.cached_from is None for run in first.runs)

    other_fix = shop.patch('item["qty"]', 'item.get("qty") or 1')
    second = await shop.verify(other_fix, incident=SECOND)
    before, after = runs_of(second)["before"], runs_of(second)["after"]
    assert before.cached_from == shop.commit and after.cached_from is None
    assert marker(shop, before) == marker(shop, runs_of(first)["before"])  # ran once
    assert marker(shop, after) != marker(shop, runs_of(first)["after"])
    assert (before.exit_code, before.passed, before.failed) == (0, 1, 0)
    assert second.status == "passed", second.summary
    reused = f"Tests before the patch: passed: 1 passed, 0 failed (cached from {shop.commit[:12]})"
    assert reused in second.summary
    assert shop.store.exists(f"{SECOND}/verify/before.log")  # the incident keeps its own copy


@needs_sandbox
async def test_a_retried_verification_reuses_every_run_it_finished(tmp_path: Path) -> None:
    shop = Shop(tmp_path, MARKED + PYTEST)
    first = await shop.verify(shop.patch(*FIX), shop.regression())
    ran = [marker(shop, run) for run in first.runs]  # read before the retry writes its logs
    retried = await shop.verify(shop.patch(*FIX), shop.regression())
    assert [run.cached_from for run in retried.runs] == [shop.commit] * 4
    assert [marker(shop, run) for run in retried.runs] == ran
    assert (retried.status, retried.reproduced, retried.new_failures) == (
        first.status,
        first.reproduced,
        first.new_failures,
    )


@needs_sandbox
async def test_another_commit_or_command_runs_again(tmp_path: Path) -> None:
    shop = Shop(tmp_path, MARKED + "true")
    first = runs_of(await shop.verify(shop.patch(*FIX)))["before"]

    shop.commit = shop.repo.commit({"app/notes.txt": "a file no test reads\n"}, "Add notes")
    shop.worktree = shop.worktree.model_copy(update={"commit": shop.commit})
    other_commit = runs_of(await shop.verify(shop.patch(*FIX), incident=SECOND))["before"]
    assert other_commit.cached_from is None
    assert marker(shop, other_commit) != marker(shop, first)

    shop.config.services["checkout"].test_command = MARKED + "true --"
    other_command = runs_of(await shop.verify(shop.patch(*FIX), incident=THIRD))["before"]
    assert other_command.cached_from is None
    assert marker(shop, other_command) not in {marker(shop, first), marker(shop, other_commit)}


@needs_sandbox
async def test_parallel_runs_judge_as_serial_runs_do(tmp_path: Path) -> None:
    verdicts = []
    for parallel in (1, 4):
        folder = tmp_path / f"parallel-{parallel}"
        folder.mkdir()
        shop = Shop(folder, PYTEST, SandboxConfig(parallel_runs=parallel, reuse_runs=False))
        result = await shop.verify(shop.patch(*FIX), shop.regression())
        assert all(run.cached_from is None for run in result.runs)
        assert cache_entries(shop) == []  # reuse_runs = false keeps nothing
        verdicts.append(
            (
                result.status,
                result.reproduced,
                result.tests_run,
                [(r.label, r.exit_code, r.passed, r.failed, r.failures) for r in result.runs],
            )
        )
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][:2] == ("passed", True)


def test_parallel_runs_are_bounded_by_the_cpus() -> None:
    assert parallel_slots(1) == 1
    assert 1 <= parallel_slots(1000) <= len(os.sched_getaffinity(0))


@needs_sandbox
async def test_a_run_cut_short_is_never_reused(tmp_path: Path) -> None:
    shop = Shop(tmp_path, MARKED + "touch started && sleep 30")
    request = VerifyRequest(incident_id=INCIDENT, worktree=shop.worktree, patch=shop.patch(*FIX))
    env = ActivityEnvironment()
    running = asyncio.ensure_future(
        env.run(SandboxActivities(shop.config, shop.store).verify_patch, request)
    )
    scratch = tmp_path / "home" / "sandbox"
    for _ in range(600):  # the run's copy on the host shows when the run has begun
        if list(scratch.glob("*/runs/*/started")):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the run never started")
    env.cancel()  # the activity is cancelled (a worker shutting down, a lost heartbeat)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 30)
    assert cache_entries(shop) == []

    shop.config.services["checkout"].test_command = MARKED + "sleep 30"
    shop.config.limits = LimitsConfig(test_timeout_s=1, test_cpu_s=60)
    timed_out = runs_of(await shop.verify(shop.patch(*FIX)))["before"]
    assert timed_out.timed_out and cache_entries(shop) == []
    cut_short = marker(shop, timed_out)
    again = runs_of(await shop.verify(shop.patch(*FIX)))["before"]
    assert again.timed_out and again.cached_from is None and marker(shop, again) != cut_short


def test_a_torn_entry_reads_as_a_miss(tmp_path: Path) -> None:
    cache = RunCache(tmp_path)
    record = RunRecord(
        exit_code=0, timed_out=False, signal=None, duration_s=0.1, passed=1, failed=0,
        log=b"1 passed in 0.01s\n", commit="a" * 40,
    )  # fmt: skip
    cache.put("k1", record)
    assert cache.get("k1") == record
    (tmp_path / "k1.log").write_bytes(b"1 failed in 0.01s\n")  # a log the record did not see
    assert cache.get("k1") is None
    (tmp_path / "k2.log").write_bytes(record.log)  # the log written, the record not yet
    assert cache.get("k2") is None
    cache.put("k3", RunRecord(None, True, None, 1.0, None, None, log=b"", commit="a" * 40))
    assert cache.get("k3") is None  # a timed-out run is not kept


def test_the_oldest_entries_make_room(tmp_path: Path) -> None:
    cache = RunCache(tmp_path, max_entries=2)
    record = RunRecord(0, False, None, 0.1, 1, 0, log=b"1 passed\n", commit="a" * 40)
    for number, key in enumerate(("old", "middle", "new")):
        cache.put(key, record)
        os.utime(tmp_path / f"{key}.json", ns=(number * 10**9, number * 10**9))
    cache.put("newest", record)
    assert cache.get("old") is None and not (tmp_path / "old.log").exists()
    assert cache.get("middle") is None
    assert cache.get("new") == record and cache.get("newest") == record


async def test_unsandboxed_runs_are_never_reused(tmp_path: Path) -> None:
    # Tests that run as the worker could have written the cache themselves.
    shop = Shop(tmp_path, MARKED + "true", _exposing(tmp_path, allow_unsandboxed=True))
    first = runs_of(await shop.verify(shop.patch(*FIX)))["before"]
    second = runs_of(await shop.verify(shop.patch(*FIX), incident=SECOND))["before"]
    assert second.cached_from is None and marker(shop, second) != marker(shop, first)
    assert cache_entries(shop) == []


async def suite_before(shop: Shop, acts: SandboxActivities | None = None) -> SuiteBeforeResult:
    request = SuiteBeforeRequest(incident_id=INCIDENT, worktree=shop.worktree)
    activities = acts or SandboxActivities(shop.config, shop.store)
    result: SuiteBeforeResult = await ActivityEnvironment().run(
        activities.run_suite_before, request
    )
    return result


@needs_sandbox
async def test_the_early_suite_run_is_the_verifications_before_run(tmp_path: Path) -> None:
    shop = Shop(tmp_path, MARKED + PYTEST)
    early = await suite_before(shop)
    assert early.status == "ran" and early.detail.startswith("exit 0 in "), early.detail
    assert (await suite_before(shop)).status == "reused"  # it ran once

    verified = await shop.verify(shop.patch(*FIX), shop.regression())
    before = runs_of(verified)["before"]
    assert before.cached_from == shop.commit, "verify_patch ran the suite before again"
    assert [r.cached_from for r in verified.runs[1:]] == [None] * 3
    assert verified.status == "passed" and verified.reproduced is True, verified.summary


@needs_sandbox
async def test_verification_waits_for_an_early_run_still_going_not_runs_it_twice(
    tmp_path: Path,
) -> None:
    shop = Shop(tmp_path, MARKED + "touch started && sleep 2 && " + PYTEST)
    acts = SandboxActivities(shop.config, shop.store)  # one worker
    early = asyncio.ensure_future(suite_before(shop, acts))
    scratch = tmp_path / "home" / "sandbox"
    for _ in range(600):
        if list(scratch.glob("*/runs/before/started")):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the early run never started")
    verified = await shop.verify(shop.patch(*FIX), activities=acts)
    assert (await asyncio.wait_for(early, 60)).status == "ran"
    before = runs_of(verified)["before"]
    assert before.cached_from == shop.commit and verified.status == "passed", verified.summary


async def test_the_early_suite_run_is_skipped_where_nothing_would_reuse_it(
    tmp_path: Path,
) -> None:
    for name in ("none", "off", "unsandboxed"):
        (tmp_path / name).mkdir()
    no_tests = Shop(tmp_path / "none", None)
    assert await suite_before(no_tests) == SuiteBeforeResult(
        status="skipped", detail="no test_command"
    )
    off = Shop(tmp_path / "off", MARKED + "true")
    off.config.services["checkout"].llm = "none"
    assert (await suite_before(off)).detail == "no diagnosis, so no verification"
    exposed = tmp_path / "unsandboxed"
    unsandboxed = Shop(exposed, MARKED + "true", _exposing(exposed, allow_unsandboxed=True))
    assert (await suite_before(unsandboxed)).status == "skipped"
    assert cache_entries(unsandboxed) == []
