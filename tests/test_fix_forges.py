"""Following a change after pr_opened (issue 13): release_contains, the local forge's branch
watch and note, GitHub's pull request watch and comment. Real git repositories in tmp_path;
the loopback GitHub through the real PyGithub client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.forge
from activities.forge import LocalForge
from activities.git import GitActivities
from activities.github import GitHubActivities
from remedy.artifacts import ArtifactStore
from remedy.config import GitHubConfig, RemedyConfig, ServiceConfig
from remedy.git.runner import GitError
from remedy.models import (
    ChangeState,
    FixCommentRequest,
    FixCommentResult,
    FixFollowUp,
    IncidentStatus,
    Phase,
    Proposal,
    ProposeRequest,
    ReleaseCheck,
    ReleaseCheckRequest,
    WatchChangeRequest,
)
from remedy.names import branch_for
from remedy.render.pull_request import INCIDENT_TRAILER, fix_failed_comment, fix_failed_marker
from remedy.render.sanitize import code
from tests.fakes.github_server import TOKEN, GitHubServer
from tests.fakes.incident_factory import CART_BEFORE, make_incident
from tests.repos import CAROL, ServiceRepo, git, make_service_repo

pytestmark = pytest.mark.timeout(30)

INCIDENT = "checkout-0123456789abcdef-a1b2c3d4"
BRANCH = branch_for(INCIDENT)
REPO = "acme/checkout"
BEFORE = "def price(item):\n    return PRICES[item['sku']]\n"
AFTER = "def price(item):\n    return PRICES.get(item['sku'], 0)\n"
AS_CAROL = {
    "GIT_AUTHOR_NAME": CAROL.name,
    "GIT_AUTHOR_EMAIL": CAROL.email,
    "GIT_COMMITTER_NAME": CAROL.name,
    "GIT_COMMITTER_EMAIL": CAROL.email,
}
HOSTILE_RELEASE = "v1`<img src=x onerror=alert(1)>` @acme/team #1 --> https://evil.example"


def failed_fix(incident: IncidentStatus, release: str = "v1.4.0") -> IncidentStatus:
    """`incident` after `release`, which holds its fix, saw the error three more times."""
    if incident.proposal is None:  # the local forge's change: a branch, no pull request page
        branch = branch_for(incident.incident_id)
        incident.proposal = Proposal(branch=branch, commit="e" * 40, title="fix")
    incident.phase = Phase.FIX_FAILED
    incident.fix = FixFollowUp(
        commit=incident.proposal.commit,
        follow_until=datetime.now(UTC) + timedelta(days=7),
        failed_release=release,
        recurrences=3,
    )
    return incident


async def watch_started(
    watch: Any, request: WatchChangeRequest
) -> tuple[asyncio.Task[ChangeState], ActivityEnvironment]:
    """`watch` running in a task, returned once its first look found the change open (the
    watch beats before it waits for the next)."""
    env = ActivityEnvironment()
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    task: asyncio.Task[ChangeState] = asyncio.create_task(env.run(watch, request))
    deadline = time.monotonic() + 10
    while not beats:
        assert not task.done() and time.monotonic() < deadline, "the watch never waited"
        await asyncio.sleep(0.02)
    return task, env


# ---------------------------------------------------------------------------- release_contains


@dataclass
class Releases:
    repo: ServiceRepo
    git: GitActivities
    base: str
    fix: str
    later: str

    def check(self, release: str, commit: str | None = None) -> ReleaseCheck:
        result: ReleaseCheck = ActivityEnvironment().run(
            self.git.release_contains,
            ReleaseCheckRequest(service="checkout", release=release, commit=commit or self.fix),
        )
        return result


def make_releases(tmp_path: Path) -> Releases:
    """v1.0 (lightweight) before the fix, v1.1 (annotated) one commit after it."""
    repo = make_service_repo(tmp_path)
    base = repo.commit({"app/shop.py": BEFORE}, "Price items by sku")
    git(repo.work, "tag", "v1.0")
    fix = repo.commit({"app/shop.py": AFTER}, "Unknown skus cost 0")
    later = repo.commit({"README.md": "# shop\n"}, "Describe the shop")
    git(repo.work, "tag", "-a", "v1.1", "-m", "release 1.1", env=AS_CAROL)
    git(repo.work, "push", "-q", "origin", "v1.0", "v1.1")
    config = repo.config(tmp_path / "home")
    return Releases(repo, GitActivities(config, ArtifactStore(config.artifacts_dir)), base, fix,
                    later)  # fmt: skip


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    return make_releases(tmp_path_factory.mktemp("releases"))


def test_a_tag_after_the_fix_contains_it(releases: Releases) -> None:
    check = releases.check("v1.1")
    assert check.contains is True and check.release_commit == releases.later
    assert "contains fix" in check.detail


def test_a_release_cut_before_the_fix_does_not_contain_it(releases: Releases) -> None:
    by_tag = releases.check("v1.0")
    by_sha = releases.check(releases.base)
    for check in (by_tag, by_sha):
        assert check.contains is False and check.release_commit == releases.base
    assert "does not contain" in by_tag.detail


def test_the_fix_commit_itself_is_a_release_with_the_fix(releases: Releases) -> None:
    assert releases.check(releases.fix).contains is True


@pytest.mark.parametrize("release", ["v9.9", "--upload-pack=touch pwned", "HEAD:app/shop.py"])
def test_a_release_that_names_no_commit_is_unknown(releases: Releases, release: str) -> None:
    check = releases.check(release)
    assert check.contains is None and check.release_commit is None
    assert repr(release) in check.detail and "names no commit" in check.detail


def test_a_fix_commit_the_repository_never_had_is_in_no_release(releases: Releases) -> None:
    check = releases.check("v1.1", commit="f" * 40)
    assert check.contains is False and check.release_commit == releases.later
    assert "is not in" in check.detail


def test_a_release_newer_than_the_mirror_is_fetched(tmp_path: Path) -> None:
    releases = make_releases(tmp_path)
    assert releases.check("v1.1").contains is True  # the mirror exists from here on
    newer = releases.repo.commit({"app/tax.py": "RATE = 0.2\n"}, "Add tax")

    check = releases.check(newer)

    assert check.contains is True and check.release_commit == newer


# ---------------------------------------------------------------------------- watch_branch


@dataclass
class Opened:
    repo: ServiceRepo
    config: RemedyConfig
    forge: LocalForge
    fix: str

    def request(self, *, watch_s: int = 1, branch: str = "main") -> WatchChangeRequest:
        proposal = Proposal(branch=BRANCH, commit=self.fix, title="fix", remote=self.repo.url)
        return WatchChangeRequest(incident_id=INCIDENT, service="checkout", proposal=proposal,
                                  branch=branch, watch_s=watch_s, poll_s=1)  # fmt: skip

    async def watch(self, *, watch_s: int = 1, branch: str = "main") -> ChangeState:
        state: ChangeState = await ActivityEnvironment().run(
            self.forge.watch_branch, self.request(watch_s=watch_s, branch=branch)
        )
        return state

    def on_main(self, *args: str) -> str:
        """Run git on the service's branch in the working clone, push it, return its head."""
        git(self.repo.work, *args, env=AS_CAROL)
        git(self.repo.work, "push", "-q", "origin", "HEAD:refs/heads/main")
        return self.repo.head()


def opened_change(tmp_path: Path) -> Opened:
    """The local forge's change, pushed as BRANCH on top of main, with its trailer."""
    repo = make_service_repo(tmp_path)
    repo.commit({"app/shop.py": BEFORE}, "Price items by sku")
    git(repo.work, "checkout", "-q", "-b", BRANCH)
    message = f"fix(checkout): unknown skus cost 0\n\n{INCIDENT_TRAILER}: {INCIDENT}"
    fix = repo.commit({"app/shop.py": AFTER}, message, push=False)
    git(repo.work, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}")
    git(repo.work, "checkout", "-q", "main")
    config = repo.config(tmp_path / "home")
    return Opened(repo, config, LocalForge(config, ArtifactStore(config.artifacts_dir)), fix)


async def test_watch_branch_sees_a_fast_forward_merge(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    opened.on_main("merge", "-q", "--ff-only", BRANCH)

    assert await opened.watch() == ChangeState(state="merged")


async def test_watch_branch_sees_a_merge_commit_and_ignores_the_deleted_branch(
    tmp_path: Path,
) -> None:
    opened = opened_change(tmp_path)
    opened.repo.commit({"README.md": "# shop\n"}, "Describe the shop")
    opened.on_main("merge", "-q", "--no-ff", "-m", "Merge the fix", BRANCH)
    git(opened.repo.work, "push", "-q", "origin", "--delete", BRANCH)

    assert await opened.watch() == ChangeState(state="merged")


async def test_watch_branch_finds_a_rebased_change_by_its_trailer(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    opened.repo.commit({"README.md": "# shop\n"}, "Describe the shop")
    landed = opened.on_main("cherry-pick", opened.fix)
    git(opened.repo.work, "push", "-q", "origin", "--delete", BRANCH)

    state = await opened.watch()

    assert landed != opened.fix
    assert state == ChangeState(state="merged", merge_commit=landed)


async def test_watch_branch_sees_the_branch_deleted_unmerged(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    git(opened.repo.work, "push", "-q", "origin", "--delete", BRANCH)

    assert await opened.watch() == ChangeState(state="closed")


async def test_watch_branch_answers_open_when_watch_s_is_over(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    started = time.monotonic()

    state = await opened.watch(watch_s=1)

    assert state == ChangeState(state="open")
    assert 1.0 <= time.monotonic() - started < 5


async def test_watch_branch_sees_a_merge_made_while_it_waits(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    # "": the service's configured branch.
    request = opened.request(watch_s=20, branch="")
    watching, _ = await watch_started(opened.forge.watch_branch, request)
    started = time.monotonic()
    await asyncio.to_thread(opened.on_main, "merge", "-q", "--ff-only", BRANCH)

    assert await asyncio.wait_for(watching, 10) == ChangeState(state="merged")
    assert time.monotonic() - started < 5, "seen at the next poll, not at the end of watch_s"


async def test_watch_branch_outlives_a_failed_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = opened_change(tmp_path)
    opened.on_main("merge", "-q", "--ff-only", BRANCH)
    real = activities.forge.update_mirror
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise GitError("fetch", 128, "fatal: unable to access: Connection reset by peer")
        real(*args, **kwargs)

    monkeypatch.setattr(activities.forge, "update_mirror", flaky)

    assert await opened.watch(watch_s=5) == ChangeState(state="merged")
    assert len(calls) == 2


async def test_watch_branch_stops_on_a_permanent_git_failure(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)
    config = opened.config.model_copy(
        update={"services": {"checkout": ServiceConfig(repo=str(tmp_path / "gone.git"))}}
    )
    forge = LocalForge(config, opened.forge.store)

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(forge.watch_branch, opened.request(watch_s=20))

    assert caught.value.non_retryable and caught.value.type == "GitPermanentError"


async def test_watch_branch_stops_when_the_service_branch_is_missing(tmp_path: Path) -> None:
    opened = opened_change(tmp_path)

    with pytest.raises(ApplicationError) as caught:
        await opened.watch(watch_s=20, branch="trunk")

    assert caught.value.non_retryable and caught.value.type == "BranchNotFound"
    assert "'trunk'" in str(caught.value)


# ---------------------------------------------------------------------------- note_on_change


def note(forge: LocalForge, incident: IncidentStatus) -> FixCommentResult:
    result: FixCommentResult = ActivityEnvironment().run(
        forge.note_on_change, FixCommentRequest(incident=incident)
    )
    return result


def test_note_on_change_is_left_once_per_failed_release(tmp_path: Path) -> None:
    config = RemedyConfig(home=str(tmp_path / "home"))
    store = ArtifactStore(config.artifacts_dir)
    forge = LocalForge(config, store)
    incident = failed_fix(make_incident(Phase.FIX_FAILED))
    key = f"{incident.incident_id}/pull_request_comments.md"

    first = note(forge, incident)
    again = note(forge, incident)

    assert first.created and not again.created
    assert first.url == again.url == store.path_of(key).as_uri()
    assert store.get_text(key) == fix_failed_comment(incident)

    later = note(forge, failed_fix(incident, "v1.5.0"))
    text = store.get_text(key)
    assert later.created
    assert text.count("This fix did not hold") == 2 and "`v1.5.0`" in text


def test_note_on_change_refuses_an_incident_whose_fix_has_not_failed(tmp_path: Path) -> None:
    config = RemedyConfig(home=str(tmp_path / "home"))
    forge = LocalForge(config, ArtifactStore(config.artifacts_dir))

    with pytest.raises(ApplicationError) as caught:
        note(forge, make_incident(Phase.PR_OPENED))

    assert caught.value.non_retryable and caught.value.type == "NothingToComment"


# ---------------------------------------------------------------------------- the comment text


def test_the_comment_says_where_the_fix_failed_and_that_a_new_incident_opened() -> None:
    incident = failed_fix(make_incident(Phase.FIX_FAILED))
    assert incident.fix is not None

    body = fix_failed_comment(incident)

    assert "came back in release `v1.4.0`" in body
    assert f"fix `{incident.fix.commit[:12]}`" in body and "3 report(s)" in body
    assert "new incident" in body and "KeyError: 'sku'" in body
    assert body.rstrip().endswith(fix_failed_marker(incident))


def test_the_comment_keeps_a_hostile_release_inert() -> None:
    incident = failed_fix(make_incident(Phase.FIX_FAILED), HOSTILE_RELEASE)

    body = fix_failed_comment(incident)
    marker = fix_failed_marker(incident)

    assert code(HOSTILE_RELEASE) in body
    assert body.count(HOSTILE_RELEASE) == 1, "only inside its code span"
    assert body.rstrip().splitlines()[-1] == marker
    assert "img" not in marker and "-->" not in marker[: -len("-->")]


# ---------------------------------------------------------------------------- GitHub


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo(REPO, {"app/cart.py": CART_BEFORE, "README.md": "# checkout\n"})
        yield server


@pytest.fixture
def forge(
    github: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> GitHubActivities:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    config = RemedyConfig(
        home=str(tmp_path / "home"),
        github=GitHubConfig(api_url=github.api_url, write_interval_s=0),
        services={"checkout": ServiceConfig(repo=str(tmp_path), github_repo=REPO)},
    )
    return GitHubActivities(config, ArtifactStore(config.artifacts_dir))


@dataclass
class Pull:
    incident: IncidentStatus
    proposal: Proposal
    number: int
    lists_before: int


@pytest.fixture
def pull(github: GitHubServer, forge: GitHubActivities) -> Pull:
    incident = make_incident(Phase.OPENING_PR, decision="approve")
    proposal: Proposal = ActivityEnvironment().run(
        forge.open_pull_request, ProposeRequest(incident=incident)
    )
    incident.phase, incident.proposal = Phase.PR_OPENED, proposal
    [opened] = github.pulls(REPO)
    return Pull(incident, proposal, opened["number"], pull_lists(github))


def watch_request(pull: Pull, *, watch_s: int = 1, branch: str | None = None) -> WatchChangeRequest:
    proposal = pull.proposal.model_copy(update={"branch": branch or pull.proposal.branch})
    return WatchChangeRequest(
        incident_id=pull.incident.incident_id,
        service="checkout",
        proposal=proposal,
        branch="main",
        watch_s=watch_s,
        poll_s=1,
    )


async def watch_pull(forge: GitHubActivities, request: WatchChangeRequest) -> ChangeState:
    state: ChangeState = await ActivityEnvironment().run(forge.watch_pull_request, request)
    return state


def pull_lists(github: GitHubServer, since: Pull | None = None) -> int:
    """How many times the pull requests were listed (since `since` was opened)."""
    listed = github.requests.count(("GET", f"/repos/{REPO}/pulls"))
    return listed - since.lists_before if since else listed


@pytest.mark.parametrize("delete_branch", [False, True])
async def test_watch_pull_request_returns_the_merge_commit(
    github: GitHubServer, forge: GitHubActivities, pull: Pull, delete_branch: bool
) -> None:
    merged = github.merge_pull(REPO, pull.number, delete_branch=delete_branch)

    state = await watch_pull(forge, watch_request(pull, watch_s=5))

    assert state == ChangeState(state="merged", merge_commit=merged)
    assert github.branches(REPO)["main"] == merged
    assert pull_lists(github, pull) == 1, "looked once, read nothing more"


async def test_watch_pull_request_sees_it_closed(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    github.close_pull(REPO, pull.number)

    assert await watch_pull(forge, watch_request(pull, watch_s=5)) == ChangeState(state="closed")


async def test_watch_pull_request_answers_open_when_watch_s_is_over(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    started = time.monotonic()

    state = await watch_pull(forge, watch_request(pull, watch_s=1))

    assert state == ChangeState(state="open")
    assert 1.0 <= time.monotonic() - started < 3
    assert pull_lists(github, pull) == 2, "at once and at the deadline"


@pytest.mark.parametrize(
    "fault",
    [
        {"mode": "respond", "status": 429, "headers": {"Retry-After": "2"}},
        {"mode": "respond", "status": 502},
        {"mode": "drop"},
    ],
    ids=["rate-limited", "bad-gateway", "connection-lost"],
)
async def test_a_failed_poll_waits_for_the_next_one(
    github: GitHubServer, forge: GitHubActivities, pull: Pull, fault: dict[str, Any]
) -> None:
    merged = github.merge_pull(REPO, pull.number)
    github.fail("GET pulls", **fault)
    started = time.monotonic()

    state = await watch_pull(forge, watch_request(pull, watch_s=10))

    assert state == ChangeState(state="merged", merge_commit=merged)
    assert pull_lists(github, pull) == 2
    waited = time.monotonic() - started
    assert (2.0 if fault.get("status") == 429 else 1.0) <= waited < 5, "as long as GitHub asks"


async def test_a_refused_poll_ends_the_watch(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    github.fail("GET pulls", "respond", status=401, body={"message": "Bad credentials"})

    with pytest.raises(ApplicationError) as caught:
        await watch_pull(forge, watch_request(pull, watch_s=20))

    assert caught.value.non_retryable and caught.value.type == "GitHubRefused"


async def test_a_pull_request_that_was_never_there_is_not_watched(
    forge: GitHubActivities, pull: Pull
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await watch_pull(forge, watch_request(pull, watch_s=20, branch="remedy/elsewhere"))

    assert caught.value.non_retryable and caught.value.type == "PullRequestNotFound"


async def test_a_pull_request_missing_from_one_listing_is_a_stale_read(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    watching, _ = await watch_started(forge.watch_pull_request, watch_request(pull, watch_s=20))
    github.fail("GET pulls", "hide")
    merged = github.merge_pull(REPO, pull.number)

    state = await asyncio.wait_for(watching, 10)

    assert state == ChangeState(state="merged", merge_commit=merged)
    assert pull_lists(github, pull) == 3, "open, hidden, merged"


async def test_cancelling_the_watch_ends_it_at_once(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    watching, env = await watch_started(forge.watch_pull_request, watch_request(pull, watch_s=60))

    env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(watching, 5)


def comment(forge: GitHubActivities, incident: IncidentStatus) -> FixCommentResult:
    result: FixCommentResult = ActivityEnvironment().run(
        forge.comment_on_pull_request, FixCommentRequest(incident=incident)
    )
    return result


def test_the_fix_failed_comment_is_posted_once(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    incident = failed_fix(pull.incident)

    first = comment(forge, incident)
    again = comment(forge, incident)

    [posted] = github.comments(REPO, pull.number)
    assert first.created and not again.created
    assert first.url == again.url
    assert first.url == f"{github.api_url}/{REPO}/pull/{pull.number}#issuecomment-{posted['id']}"
    assert posted["body"] == fix_failed_comment(incident)
    assert github.writes().count(f"POST /repos/{REPO}/issues/{pull.number}/comments") == 1


def test_a_hostile_release_is_inert_in_the_posted_comment(
    github: GitHubServer, forge: GitHubActivities, pull: Pull
) -> None:
    incident = failed_fix(pull.incident, HOSTILE_RELEASE)

    assert comment(forge, incident).created
    assert not comment(forge, incident).created

    [posted] = github.comments(REPO, pull.number)
    assert code(HOSTILE_RELEASE) in posted["body"]
    assert posted["body"].rstrip().endswith(fix_failed_marker(incident))
