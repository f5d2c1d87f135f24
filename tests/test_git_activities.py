"""sync_repo, investigate and prepare_patch against real repositories made in tmp_path."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from activities.progress import heartbeat
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.git.history import RepoFiles
from remedy.git.mirror import mirror_for
from remedy.git.runner import GitError, redact_location, run_git, run_git_async
from remedy.models import (
    Edit,
    ErrorInfo,
    Frame,
    InvestigateRequest,
    PatchRequest,
    PatchResult,
    SyncRequest,
    Worktree,
)
from remedy.service_policy import ServicePolicy
from tests.repos import ALICE, BOB, CAROL, ServiceRepo, git, make_service_repo, serve_over_http

Via = Literal["path", "url"]
INCIDENT = "checkout-0123456789abcdef-a1b2c3d4"
TOKEN = "s3cr3t-t0ken"

CART_V1 = '''"""Cart totals."""

PRICES = {"apple": 3, "pear": 4}


def total(items):
    """Sum of price times quantity."""
    result = 0
    for item in items:
        price = PRICES[item["name"]]
        result += price * item["qty"]
    return result
'''
BUGGY_LINE = '        price = PRICES[item["sku"]]'
CART_V2 = CART_V1.replace('        price = PRICES[item["name"]]', BUGGY_LINE)
FAILING_LINE = CART_V2.splitlines().index(BUGGY_LINE) + 1

API_V1 = """from app import cart


def checkout(request):
    items = request["items"]
    return {"total": cart.total(items)}
"""
API_V2 = API_V1.replace("def checkout(request):", "def checkout(request):\n    # the body is JSON")
API_CALL_LINE = API_V2.splitlines().index('    return {"total": cart.total(items)}') + 1


@dataclass
class Shop:
    repo: ServiceRepo
    config: RemedyConfig
    git: GitActivities
    store: ArtifactStore
    initial: str
    bug: str
    head: str


def make_shop(tmp_path: Path, via: Via = "path", **service: Any) -> Shop:
    """Four commits by three authors; Bob's third commit introduces the KeyError."""
    repo = make_service_repo(tmp_path)
    initial = repo.commit(
        {"app/__init__.py": "", "app/cart.py": CART_V1, "app/api.py": API_V1},
        "Add cart totals",
        author=ALICE,
    )
    repo.commit({"README.md": "# checkout\n"}, "Document the service", author=CAROL)
    bug = repo.commit({"app/cart.py": CART_V2}, "Look up prices by sku", author=BOB)
    head = repo.commit({"app/api.py": API_V2}, "Explain the request body", author=CAROL)
    config = repo.config(tmp_path / "home", via=via, **service)
    store = ArtifactStore(config.artifacts_dir)
    return Shop(repo, config, GitActivities(config, store), store, initial, bug, head)


def sync(shop: Shop, release: str | None = None, incident: str = INCIDENT) -> Worktree:
    request = SyncRequest(incident_id=incident, service="checkout", release=release)
    return ActivityEnvironment().run(shop.git.sync_repo, request)


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path)


# ---------------------------------------------------------------------------- sync_repo


@pytest.mark.parametrize("via", ["path", "url"])
def test_sync_checks_out_the_branch_head_or_the_release(tmp_path: Path, via: Via) -> None:
    shop = make_shop(tmp_path, via=via)

    head = sync(shop)
    assert head.commit == shop.head
    assert head.commit_source == "branch_head"
    assert head.branch == "main"
    assert Path(head.path) == shop.config.home_dir / "worktrees" / INCIDENT
    assert (Path(head.path) / "app/api.py").read_text() == API_V2

    released = sync(shop, release=shop.bug[:8], incident=INCIDENT + "0")
    assert released.commit == shop.bug
    assert released.commit_source == "release"
    assert (Path(released.path) / "app/api.py").read_text() == API_V1


def test_branch_mode_ignores_the_release(tmp_path: Path) -> None:
    shop = make_shop(tmp_path, deployed_commit="branch")
    worktree = sync(shop, release=shop.initial)
    assert (worktree.commit, worktree.commit_source) == (shop.head, "branch_head")


def test_second_sync_fetches_into_the_same_mirror(shop: Shop) -> None:
    first = sync(shop)
    mirror = mirror_for(shop.config, "checkout").path
    assert mirror.parent == shop.config.home_dir / "mirrors"
    assert re.fullmatch(r"checkout-[0-9a-f]{12}\.git", mirror.name)
    inode = mirror.stat().st_ino
    (mirror / "remedy-test-marker").write_text("a re-clone would lose this")

    newer = shop.repo.commit({"app/cart.py": CART_V1}, "Revert the sku lookup", author=ALICE)
    second = sync(shop, release=newer[:10], incident=INCIDENT + "1")

    assert second.commit == newer
    assert mirror.stat().st_ino == inode
    assert (mirror / "remedy-test-marker").exists()
    assert first.commit == shop.head
    assert (Path(second.path) / "app/cart.py").read_text() == CART_V1


def test_branch_head_follows_the_remote(shop: Shop) -> None:
    sync(shop)
    newer = shop.repo.commit({"NOTES.md": "x\n"}, "Add notes", author=BOB)
    assert sync(shop, incident=INCIDENT + "1").commit == newer


def test_worktree_is_reused_at_the_right_commit_and_reset_at_a_wrong_one(shop: Shop) -> None:
    first = sync(shop, release=shop.bug)
    marker = Path(first.path) / "untracked.txt"
    marker.write_text("kept while the worktree is reused")

    again = sync(shop, release=shop.bug)
    assert again == first
    assert marker.exists()

    (Path(first.path) / "app/cart.py").write_text("damaged\n")
    moved = sync(shop, release=shop.head)
    assert moved.path == first.path
    assert git(Path(moved.path), "rev-parse", "HEAD") == shop.head
    assert git(Path(moved.path), "status", "--porcelain") == ""
    assert not marker.exists()


def test_a_leftover_directory_becomes_a_worktree(shop: Shop) -> None:
    leftover = shop.config.home_dir / "worktrees" / INCIDENT
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("from a crashed attempt")
    worktree = sync(shop)
    assert git(Path(worktree.path), "rev-parse", "HEAD") == shop.head
    assert not (leftover / "junk").exists()


def test_unknown_release_is_a_permanent_error_naming_the_fix(shop: Shop) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ApplicationError) as caught:
        sync(shop, release=missing)
    error = caught.value
    assert error.type == "CommitNotFound"
    assert error.non_retryable
    assert missing in error.message
    assert "'checkout'" in error.message
    assert "deployed_commit" in error.message


def test_missing_branch_is_a_permanent_error(tmp_path: Path) -> None:
    shop = make_shop(tmp_path, branch="release")
    with pytest.raises(ApplicationError) as caught:
        sync(shop)
    assert caught.value.type == "BranchNotFound"
    assert caught.value.non_retryable
    assert "services.checkout.branch" in caught.value.message


def test_missing_repository_is_a_permanent_error(tmp_path: Path) -> None:
    shop = make_shop(tmp_path, repo=str(tmp_path / "nowhere"))
    with pytest.raises(ApplicationError) as caught:
        sync(shop)
    assert caught.value.non_retryable
    assert str(tmp_path / "nowhere") in caught.value.message


def test_a_url_with_credentials_syncs_without_leaking_them(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with serve_over_http(tmp_path, user="remedy", token=TOKEN) as base:
        url = base.replace("http://", f"http://remedy:{TOKEN}@") + "/checkout.git"
        config = shop.repo.config(tmp_path / "home", repo=url)
        shop = replace(shop, config=config, git=GitActivities(config, shop.store))

        first = sync(shop)
        newer = shop.repo.commit({"NOTES.md": "x\n"}, "Add notes", author=BOB)
        second = sync(shop, release=newer, incident=INCIDENT + "1")

    assert (first.commit, second.commit) == (shop.head, newer)
    mirror = mirror_for(config, "checkout")
    assert mirror.public_location == url.replace(f"remedy:{TOKEN}@", "***@")
    home = config.home_dir
    on_disk = [p for p in home.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert on_disk == []
    assert TOKEN not in repr(mirror) + first.model_dump_json() + str(mirror.path)


def test_a_wrong_token_is_permanent_and_redacted(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with serve_over_http(tmp_path, user="remedy", token=TOKEN) as base:
        url = base.replace("http://", "http://remedy:wr0ng-t0ken@") + "/checkout.git"
        config = shop.repo.config(tmp_path / "home", repo=url)
        with pytest.raises(ApplicationError) as caught:
            sync(replace(shop, config=config, git=GitActivities(config, shop.store)))
    assert caught.value.non_retryable
    assert "wr0ng" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)


def test_an_unreachable_remote_is_retried(tmp_path: Path) -> None:
    shop = make_shop(tmp_path, repo=f"https://remedy:{TOKEN}@127.0.0.1:9/acme/checkout.git")
    with pytest.raises(ApplicationError) as caught:
        sync(shop)
    assert not caught.value.non_retryable
    assert TOKEN not in str(caught.value)
    assert redact_location(f"fatal: unable to access 'https://u:{TOKEN}@h/x.git/'") == (
        "fatal: unable to access 'https://***@h/x.git/'"
    )


def test_concurrent_syncs_share_one_mirror(shop: Shop) -> None:
    results: dict[str, Worktree] = {}
    errors: list[BaseException] = []

    def run(incident: str) -> None:
        try:
            results[incident] = sync(shop, incident=incident)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"{INCIDENT}{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {w.commit for w in results.values()} == {shop.head}
    assert len(list((shop.config.home_dir / "mirrors").glob("*.git"))) == 1


def test_a_hung_git_command_heartbeats_then_is_killed() -> None:
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    started = time.monotonic()
    with pytest.raises(GitError, match="timed out"):
        env.run(run_git, ["-c", "alias.hang=!sleep 60", "hang"], timeout=1.0, on_wait=heartbeat)
    assert time.monotonic() - started < 10
    assert beats, "a running git command must heartbeat"


async def test_the_async_runner_reports_waits_and_times_out_like_the_sync_one() -> None:
    notes: list[str] = []
    started = time.monotonic()
    with pytest.raises(GitError, match="timed out"):
        await run_git_async(
            ["-c", "alias.hang=!sleep 60", "hang"], timeout=1.0, on_wait=notes.append
        )
    assert time.monotonic() - started < 10
    assert notes and notes[0] == "git hang running"

    same = (["hash-object", "--stdin"], b"same input, same blob\n")
    assert await run_git_async(same[0], input=same[1]) == run_git(same[0], input=same[1])
    failed = await run_git_async(["rev-parse", "--verify", "no-such-rev"], check=False)
    assert failed.returncode != 0
    with pytest.raises(GitError, match="rev-parse failed"):
        await run_git_async(["rev-parse", "--verify", "no-such-rev"])


def _running(pid: str) -> bool:
    """Whether the process lives; a killed one is gone, or a zombie waiting to be reaped."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[-1][:1] != "Z"


async def test_cancelling_the_async_runner_kills_git_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    running = asyncio.ensure_future(
        run_git_async(["-c", f"alias.hang=!echo $$ > {pid_file}.tmp; mv {pid_file}.tmp "
                       f"{pid_file}; exec sleep 60", "hang"])
    )  # fmt: skip
    for _ in range(200):
        if pid_file.exists():
            break
        await asyncio.sleep(0.05)
    pid = pid_file.read_text().strip()
    assert _running(pid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(100):
        if not _running(pid):
            break
        await asyncio.sleep(0.05)
    assert not _running(pid), "the child of a cancelled git command survived"


def test_git_runs_without_prompts_or_redirection(tmp_path: Path) -> None:
    os.environ["GIT_DIR"] = str(tmp_path / "elsewhere")
    try:
        env = run_git(["-c", "alias.env=!env", "env"], cwd=tmp_path).text.splitlines()
    finally:
        del os.environ["GIT_DIR"]
    assert "GIT_TERMINAL_PROMPT=0" in env
    assert "GIT_ASKPASS=" in env
    assert not any(line.startswith("GIT_DIR=") and "elsewhere" in line for line in env)


# ---------------------------------------------------------------------------- investigate


def frames_of_the_keyerror() -> list[Frame]:
    """Outermost first, as Python prints them."""
    return [
        Frame(file="/srv/app/.venv/lib/python3.11/site-packages/flask/app.py", line=880),
        Frame(file="/srv/app/app/api.py", line=API_CALL_LINE, function="checkout"),
        Frame(file="/usr/lib/python3.11/json/__init__.py", line=3, in_app=False),
        Frame(file="/srv/app/app/cart.py", line=FAILING_LINE, function="total", in_app=True),
    ]


def investigate(shop: Shop, worktree: Worktree, frames: list[Frame]) -> Any:
    request = InvestigateRequest(
        incident_id=INCIDENT,
        worktree=worktree,
        error=ErrorInfo(type="KeyError", message="'sku'"),
        frames=frames,
    )
    return ActivityEnvironment().run(shop.git.investigate, request)


def test_investigate_names_the_file_function_and_the_commit_that_broke_it(shop: Shop) -> None:
    worktree = sync(shop, release=shop.head)
    evidence = investigate(shop, worktree, frames_of_the_keyerror())

    assert [(f.path, f.line, f.function) for f in evidence.frames] == [
        ("app/cart.py", FAILING_LINE, "total"),
        ("app/api.py", API_CALL_LINE, "checkout"),
    ]
    top = evidence.suspect_commits[0]
    assert top.sha == shop.bug
    assert top.author == BOB.name
    assert top.subject == "Look up prices by sku"
    assert top.paths == ["app/cart.py"]
    assert top.reason == f"last changed app/cart.py:{FAILING_LINE} (the failing line)"
    assert top.date.startswith("2026-01-05T11:00:00")
    shas = [s.sha for s in evidence.suspect_commits]
    assert len(shas) == len(set(shas)) <= 5
    assert shop.head in shas  # Carol's recent edit of app/api.py
    assert "KeyError" in evidence.summary
    assert f"app/cart.py:{FAILING_LINE} in total()" in evidence.summary
    assert shop.bug[:12] in evidence.summary and BOB.name in evidence.summary

    stored = shop.store.get_json(evidence.artifact)
    cart = stored["frames"][0]
    failing = next(e for e in cart["window"]["lines"] if e["line"] == FAILING_LINE)
    assert failing["text"] == BUGGY_LINE
    assert cart["window"]["start_line"] == 1
    assert {e["line"] for e in cart["blame"]} == set(range(FAILING_LINE - 2, FAILING_LINE + 3))
    assert [e["sha"] for e in cart["log"]] == [shop.bug, shop.initial]


def test_investigate_reports_in_app_frames_it_cannot_find(shop: Shop) -> None:
    worktree = sync(shop)
    frames = [Frame(file="/srv/app/app/gone.py", line=3, function="old", in_app=True)]
    evidence = investigate(shop, worktree, frames)
    assert [(f.path, f.found) for f in evidence.frames] == [("/srv/app/app/gone.py", False)]
    assert evidence.suspect_commits == []
    assert "no stack frame matched" in evidence.summary


def test_a_line_beyond_the_file_still_gives_recent_history(shop: Shop) -> None:
    worktree = sync(shop)
    frames = [Frame(file="app/cart.py", line=999, function="total")]
    evidence = investigate(shop, worktree, frames)
    assert [(f.path, f.start_line) for f in evidence.frames] == [("app/cart.py", None)]
    assert [s.sha for s in evidence.suspect_commits] == [shop.bug, shop.initial]
    assert evidence.suspect_commits[0].reason == "recently changed app/cart.py"


def test_steps_after_sync_work_on_a_worker_without_its_files(shop: Shop) -> None:
    worktree = sync(shop)
    for folder in ("mirrors", "worktrees"):
        shutil.rmtree(shop.config.home_dir / folder)
    evidence = investigate(shop, worktree, frames_of_the_keyerror())
    assert evidence.suspect_commits[0].sha == shop.bug
    assert prepare(shop, worktree, [FIX]).applied


def test_evidence_stays_small_for_a_deep_stack(shop: Shop) -> None:
    worktree = sync(shop)
    recursion = [
        Frame(file="/srv/app/app/cart.py", line=n % 12 + 1, function="total") for n in range(480)
    ]
    gone = [Frame(file=f"/srv/app/app/gone{n}.py", line=1, in_app=True) for n in range(20)]
    evidence = investigate(shop, worktree, gone + recursion)
    assert len(evidence.frames) == 20
    assert len({(f.path, f.line) for f in evidence.frames}) == 20
    assert len(evidence.model_dump_json()) < 8_000
    assert len(evidence.suspect_commits) <= 5


def test_frames_map_to_the_longest_path_suffix() -> None:
    files = RepoFiles(["app/__init__.py", "app/cart.py", "vendor/lib/app/cart.py", "setup.py"])
    assert files.locate("/srv/app/app/cart.py") == "app/cart.py"
    assert files.locate("/opt/x/vendor/lib/app/cart.py") == "vendor/lib/app/cart.py"
    assert files.locate("cart.py") == "app/cart.py"
    assert files.locate("C:\\build\\app\\cart.py") == "app/cart.py"
    assert files.locate("/usr/lib/python3.11/json/__init__.py") is None
    assert files.locate("/srv/app/setup.py") == "setup.py"
    assert files.locate("/srv/app/app/basket.py") is None


# ---------------------------------------------------------------------------- prepare_patch

FIX = Edit(path="app/cart.py", search='PRICES[item["sku"]]', replace='PRICES[item["name"]]')


def prepare(shop: Shop, worktree: Worktree, edits: list[Edit]) -> PatchResult:
    request = PatchRequest(
        incident_id=INCIDENT, worktree=worktree, edits=edits, policy=ServicePolicy()
    )
    return ActivityEnvironment().run(shop.git.prepare_patch, request)


def test_prepare_patch_stores_a_diff_git_apply_accepts(shop: Shop, tmp_path: Path) -> None:
    worktree = sync(shop, release=shop.head)
    result = prepare(shop, worktree, [FIX])

    assert result.applied, result.reason
    assert (result.files, result.lines_added, result.lines_removed) == (["app/cart.py"], 1, 1)
    assert result.diff is not None and result.diff.key == f"{INCIDENT}/patch.diff"
    diff = shop.store.get_text(result.diff)
    assert diff.startswith("diff --git a/app/cart.py b/app/cart.py")
    assert '-        price = PRICES[item["sku"]]' in diff
    assert '+        price = PRICES[item["name"]]' in diff

    # the incident worktree, which other steps read, is untouched
    assert (Path(worktree.path) / "app/cart.py").read_text() == CART_V2
    assert git(Path(worktree.path), "status", "--porcelain") == ""

    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(shop.repo.origin), str(fresh))
    git(fresh, "checkout", "-q", "--detach", shop.head)
    subprocess.run(["git", "apply", "--check", "-"], cwd=fresh, input=diff.encode(), check=True)
    subprocess.run(["git", "apply", "-"], cwd=fresh, input=diff.encode(), check=True)
    assert (fresh / "app/cart.py").read_text() == CART_V1


def test_prepare_patch_applies_several_edits_to_one_file(shop: Shop) -> None:
    worktree = sync(shop)
    edits = [
        FIX,
        Edit(path="app/cart.py", search='"pear": 4', replace='"pear": 4, "plum": 2'),
        Edit(path="app/api.py", search="    # the body is JSON\n", replace=""),
    ]
    result = prepare(shop, worktree, edits)
    assert result.applied, result.reason
    assert result.files == ["app/api.py", "app/cart.py"]
    assert (result.lines_added, result.lines_removed) == (2, 3)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            Edit(path="app/cart.py", search="no such text", replace="x"),
            "edit 1 (app/cart.py): the search text is not found in the file at commit",
        ),
        (
            Edit(path="app/cart.py", search="result", replace="total"),
            "edit 1 (app/cart.py): the search text is found more than once",
        ),
        (
            Edit(path="app/basket.py", search="x", replace="y"),
            "edit 1 (app/basket.py): no such file at commit",
        ),
        (
            Edit(path="../outside.py", search="x", replace="y"),
            "edit 1 (../outside.py): the path must be relative and stay inside the repository",
        ),
        (
            Edit(path="/etc/passwd", search="root", replace="x"),
            "edit 1 (/etc/passwd): the path must be relative and stay inside the repository",
        ),
        (
            Edit(path="app/../.git/config", search="bare", replace="x"),
            "the path must be relative and stay inside the repository",
        ),
        (
            Edit(path="app", search="x", replace="y"),
            "edit 1 (app): not a regular file",
        ),
        (
            Edit(path="app/cart.py", search="PRICES", replace="PRICES"),
            "the search text is found more than once",
        ),
        (
            Edit(path="app/api.py", search="def checkout", replace="def checkout"),
            "the edits change nothing",
        ),
    ],
)
def test_prepare_patch_refuses_edits_that_do_not_apply_exactly(
    shop: Shop, edit: Edit, expected: str
) -> None:
    worktree = sync(shop)
    result = prepare(shop, worktree, [edit])
    assert not result.applied
    assert result.reason is not None and expected in result.reason
    assert result.diff is None
    assert not shop.store.exists(f"{INCIDENT}/patch.diff")


def test_prepare_patch_refuses_a_symlink_and_never_follows_it(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    (shop.repo.work / "app/secrets.py").symlink_to("/etc/hostname")
    git(shop.repo.work, "add", "app/secrets.py")
    shop.repo.commit({}, "Link a file from the host", author=BOB)
    worktree = sync(shop)

    result = prepare(shop, worktree, [Edit(path="app/secrets.py", search="a", replace="b")])
    assert not result.applied
    assert result.reason is not None and "not a regular file" in result.reason
    frames = [Frame(file="/srv/app/app/secrets.py", line=1, function="f", in_app=True)]
    evidence = investigate(shop, worktree, frames)
    assert [(f.path, f.found) for f in evidence.frames] == [("/srv/app/app/secrets.py", False)]


def test_prepare_patch_names_the_failing_edit_and_refuses_overlaps(shop: Shop) -> None:
    worktree = sync(shop)
    overlapping = Edit(path="app/cart.py", search='item["sku"]]', replace="x")
    result = prepare(shop, worktree, [FIX, overlapping])
    assert not result.applied
    assert result.reason == (
        "edit 2 (app/cart.py): the search text overlaps an earlier edit of the same file"
    )


def test_prepare_patch_reads_the_commit_not_the_worktree(shop: Shop) -> None:
    worktree = sync(shop)
    (Path(worktree.path) / "app/cart.py").write_text("changed on disk\n")
    result = prepare(shop, worktree, [FIX])
    assert result.applied, result.reason
    assert json.dumps(result.model_dump(mode="json"))
