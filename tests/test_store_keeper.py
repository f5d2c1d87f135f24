"""StoreKeeper: a worker keeps the embedded store open between activities, one at a time,
durable at each give-back, and lets other processes have it once idle."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remedy.config import RemedyConfig
from remedy.index.edge_store import EdgeStore, describe_holder
from remedy.index.store import PointData, StoreBusy, StoreKeeper, Where

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> RemedyConfig:
    return RemedyConfig(home=str(tmp_path / "home"))


def _root(config: RemedyConfig) -> Path:
    return config.home_dir / config.qdrant.path


def _point(number: int) -> PointData:
    return PointData(id=f"00000000-0000-0000-0000-{number:012d}", payload={"repo": "shop"},
                     dense=[1.0, 0.0, 0.0, float(number)])  # fmt: skip


def _count(root: Path) -> int:
    store = EdgeStore(root, lock_timeout_s=5)
    try:
        store.ensure_collection("code", 4)
        return store.count("code", Where({"repo": "shop"}))
    finally:
        store.close()


def test_the_store_stays_open_between_uses_and_closes_once_idle(tmp_path: Path) -> None:
    config = _config(tmp_path)
    keeper = StoreKeeper(config, idle_s=0.5)
    with keeper.lend(lock_timeout_s=5, holder="indexing shop") as first:
        first.ensure_collection("code", 4)
        first.upsert("code", [_point(1)])
    with keeper.lend(lock_timeout_s=5, holder="searching for shop-1") as second:
        assert second is first, "the second activity reopened the store"
        # Whoever waits for the store is told what it is held for now.
        assert describe_holder(_root(config) / ".lock").startswith("searching for shop-1 (pid ")
    # Kept: another process (here another handle) cannot have it yet...
    with pytest.raises(StoreBusy, match="searching for shop-1"):
        EdgeStore(_root(config), lock_timeout_s=0.2)
    # ...and has it, with the writes, once the keeper has been idle for idle_s.
    assert _count(_root(config)) == 1


def test_with_no_idle_time_each_use_closes_the_store(tmp_path: Path) -> None:
    config = _config(tmp_path)
    keeper = StoreKeeper(config)
    with keeper.lend(lock_timeout_s=5, holder="indexing shop") as store:
        store.ensure_collection("code", 4)
        store.upsert("code", [_point(1), _point(2)])
    other = EdgeStore(_root(config), lock_timeout_s=0.2)
    other.close()
    assert _count(_root(config)) == 2


KEEP_AND_DIE = """
import sys, time
from remedy.config import RemedyConfig
from remedy.index.store import PointData, StoreKeeper
keeper = StoreKeeper(RemedyConfig(home=sys.argv[1]), idle_s=600)
with keeper.lend(lock_timeout_s=5, holder="indexing shop") as store:
    store.ensure_collection("code", 4)
    store.upsert("code", [PointData(id="00000000-0000-0000-0000-000000000001",
                                    payload={"repo": "shop"}, dense=[1.0, 0.0, 0.0, 1.0])])
print("given back", flush=True)
time.sleep(600)
"""


def test_a_use_given_back_is_durable_though_the_worker_dies_with_the_store_open(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    worker = subprocess.Popen(
        [sys.executable, "-c", KEEP_AND_DIE, str(config.home_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "given back"
    finally:
        worker.kill()  # SIGKILL: no close, no flush at exit
        worker.wait(timeout=10)
    assert _count(_root(config)) == 1


def test_a_second_activity_waits_its_turn_and_is_told_who_holds_the_store(
    tmp_path: Path,
) -> None:
    keeper = StoreKeeper(_config(tmp_path), idle_s=60)
    lent, done = threading.Event(), threading.Event()

    def long_index() -> None:
        with keeper.lend(lock_timeout_s=5, holder="indexing tornado"):
            lent.set()
            done.wait(timeout=30)

    holder = threading.Thread(target=long_index)
    holder.start()
    try:
        assert lent.wait(timeout=10)
        told: list[str] = []
        started = time.monotonic()
        waiting = keeper.lend(lock_timeout_s=1.5, holder="searching", on_wait=told.append)
        with pytest.raises(StoreBusy) as busy, waiting:
            pass
        assert 1.4 < time.monotonic() - started < 5
        assert busy.value.holder == "indexing tornado" and "indexing tornado" in str(busy.value)
        assert told and set(told) == {"indexing tornado"}
    finally:
        done.set()
        holder.join(timeout=10)
    with keeper.lend(lock_timeout_s=5, holder="searching") as store:
        store.ensure_collection("code", 4)
    keeper.close()
    EdgeStore(_root(_config(tmp_path)), lock_timeout_s=0.2).close()


def test_a_use_that_fails_closes_the_store(tmp_path: Path) -> None:
    config = _config(tmp_path)
    keeper = StoreKeeper(config, idle_s=60)
    lent = keeper.lend(lock_timeout_s=5, holder="indexing shop")
    with pytest.raises(RuntimeError, match="the model crashed"), lent as failed:
        failed.ensure_collection("code", 4)
        raise RuntimeError("the model crashed")
    EdgeStore(_root(config), lock_timeout_s=0.2).close()  # not held any more
    with keeper.lend(lock_timeout_s=5, holder="indexing shop") as store:
        assert store is not failed
    keeper.close()
