"""The GitHub forge and issues against a loopback GitHub, through the real PyGithub client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.github import GitHubActivities
from remedy.artifacts import ArtifactStore
from remedy.config import GitHubConfig, RemedyConfig, ServiceConfig
from remedy.models import (
    IncidentStatus,
    IssueResult,
    OpenIssueRequest,
    Phase,
    Proposal,
    ProposeRequest,
)
from remedy.render.pull_request import INCIDENT_TRAILER
from remedy.service_policy import Severity
from tests.fakes.github_server import TOKEN, GitHubServer
from tests.fakes.incident_factory import (
    APPROVER,
    CART_AFTER,
    CART_BEFORE,
    TRACEBACK,
    make_incident,
)

REPO = "acme/checkout"


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo(REPO, {"app/cart.py": CART_BEFORE, "README.md": "# checkout\n"})
        yield server


def make_config(github: GitHubServer, tmp_path: Path, **settings: object) -> RemedyConfig:
    return RemedyConfig(
        home=str(tmp_path / "home"),
        github=GitHubConfig(api_url=github.api_url, write_interval_s=0, **settings),  # type: ignore[arg-type]
        services={"checkout": ServiceConfig(repo=str(tmp_path), github_repo=REPO)},
    )


@pytest.fixture
def forge(
    github: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> GitHubActivities:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    config = make_config(github, tmp_path)
    return GitHubActivities(config, ArtifactStore(config.artifacts_dir))


def approved() -> IncidentStatus:
    return make_incident(Phase.OPENING_PR, decision="approve")


def open_pr(forge: GitHubActivities, incident: IncidentStatus | None = None) -> Proposal:
    result: Proposal = ActivityEnvironment().run(
        forge.open_pull_request, ProposeRequest(incident=incident or approved())
    )
    return result


def open_issue(forge: GitHubActivities, incident: IncidentStatus) -> IssueResult:
    result: IssueResult = ActivityEnvironment().run(
        forge.open_issue, OpenIssueRequest(incident=incident, raw_error=TRACEBACK)
    )
    return result


def test_opens_a_draft_pull_request_through_the_git_data_api(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    main_before = github.branches(REPO)["main"]
    incident = approved()

    proposal = open_pr(forge, incident)

    branch = f"remedy/{incident.incident_id}"
    assert proposal.branch == branch and github.branches(REPO)[branch] == proposal.commit
    assert github.branches(REPO)["main"] == main_before, "Remedy never touches the base branch"
    assert github.file_at(REPO, proposal.commit, "app/cart.py") == CART_AFTER
    assert github.file_at(REPO, proposal.commit, "README.md") == "# checkout\n"
    assert f"{INCIDENT_TRAILER}: {incident.incident_id}" in github.commit_message(
        REPO, proposal.commit
    )
    [pull] = github.pulls(REPO)
    assert pull["pull"] == {
        "head": branch,
        "base": "main",
        "draft": True,
        "head_sha": proposal.commit,
    }
    assert pull["label_names"] == ["remedy"]
    assert proposal.pr_url == f"{github.api_url}/{REPO}/pull/{pull['number']}"
    for expected in ("Root cause", "legacy items have no price", f"Approved by {APPROVER}",
                     "12 tests", incident.ui_url):  # fmt: skip
        assert expected in pull["body"], expected
    assert proposal.body is not None
    assert forge._store.get_text(proposal.body) == pull["body"]


def test_a_retry_returns_the_same_pull_request_and_writes_nothing(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    incident = approved()
    first = open_pr(forge, incident)
    writes = github.writes()

    again = open_pr(forge, incident)

    assert again == first
    assert github.writes() == writes
    assert len(github.pulls(REPO)) == 1


@pytest.mark.parametrize("crash_at", ["POST git/refs", "POST pulls"])
def test_a_crash_after_a_write_yields_one_branch_and_one_pull_request(
    github: GitHubServer, forge: GitHubActivities, crash_at: str
) -> None:
    github.fail(crash_at, "drop")
    with pytest.raises(requests.ConnectionError):
        open_pr(forge)

    proposal = open_pr(forge)

    [pull] = github.pulls(REPO)
    assert proposal.pr_url and proposal.pr_url.endswith(f"/pull/{pull['number']}")
    assert [b for b in github.branches(REPO) if b.startswith("remedy/")] == [proposal.branch]
    assert github.writes().count("POST /repos/acme/checkout/git/commits") == 1


def test_reference_already_exists_becomes_a_lookup(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    github.fail("POST pulls", "respond", status=502)
    with pytest.raises(ApplicationError, match="502"):
        open_pr(forge)
    github.fail("GET git/ref", "hide")  # a stale read: the branch seems not to exist

    proposal = open_pr(forge)

    assert github.writes().count("POST /repos/acme/checkout/git/refs") == 2, "the second got 422"
    assert len(github.pulls(REPO)) == 1
    assert github.branches(REPO)[proposal.branch] == proposal.commit


def test_pull_request_already_exists_becomes_a_lookup(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    first = open_pr(forge)
    github.fail("GET pulls", "hide")

    again = open_pr(forge)

    assert again.pr_url == first.pr_url
    assert len(github.pulls(REPO)) == 1


def test_a_conflict_on_the_moved_base_is_reported_not_forced(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    github.push(REPO, {"app/cart.py": "def total(items):\n    return 0\n"})
    writes = github.writes()

    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)

    assert caught.value.non_retryable and caught.value.type == "PatchConflict"
    assert "app/cart.py" in str(caught.value) and "not found" in str(caught.value)
    assert github.writes() == writes and github.pulls(REPO) == []


def test_a_persons_branch_of_the_same_name_is_never_touched(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    incident = approved()
    github.push(REPO, {"NOTES.md": "mine\n"}, branch=f"remedy/{incident.incident_id}")

    with pytest.raises(ApplicationError) as caught:
        open_pr(forge, incident)

    assert caught.value.non_retryable and caught.value.type == "BranchConflict"
    assert github.pulls(REPO) == []


def test_nothing_leaves_without_an_approval(github: GitHubServer, forge: GitHubActivities) -> None:
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge, make_incident(Phase.OPENING_PR))
    assert caught.value.non_retryable and caught.value.type == "NotApproved"
    assert github.requests == []


def test_drafts_unsupported_opens_a_ready_pull_request(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    github.drafts_supported = False
    open_pr(forge)
    [pull] = github.pulls(REPO)
    assert pull["pull"]["draft"] is False


def test_bad_credentials_are_not_retried_and_stay_secret(
    github: GitHubServer, forge: GitHubActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrongtoken")
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert caught.value.non_retryable and "401" in str(caught.value)
    assert "$GITHUB_TOKEN" in str(caught.value) and "ghp_wrongtoken" not in str(caught.value)


def test_missing_permission_is_not_retried(github: GitHubServer, forge: GitHubActivities) -> None:
    github.fail("POST git/blobs", "respond", status=403,
                body={"message": "Resource not accessible by integration"})  # fmt: skip
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert caught.value.non_retryable and "not accessible" in str(caught.value)


def test_secondary_rate_limit_waits_as_github_asks(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    github.fail("POST pulls", "respond", status=403, headers={"Retry-After": "30"},
                body={"message": "You have exceeded a secondary rate limit."})  # fmt: skip
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert not caught.value.non_retryable
    assert caught.value.next_retry_delay is not None
    assert caught.value.next_retry_delay.total_seconds() == 30


def test_primary_rate_limit_waits_until_the_reset(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    reset = int(time.time()) + 120
    limited = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    github.fail("GET repo", "respond", status=429, headers=limited)
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert caught.value.next_retry_delay is not None
    assert 100 <= caught.value.next_retry_delay.total_seconds() <= 120


def test_server_errors_are_retried(github: GitHubServer, forge: GitHubActivities) -> None:
    github.fail("POST git/commits", "respond", status=502)
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert not caught.value.non_retryable and caught.value.next_retry_delay is None
    assert open_pr(forge).pr_url


def test_a_github_app_installation_token(
    github: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    github.app_id = "31337"
    github.app_public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", pem)
    config = make_config(github, tmp_path, app_id="31337")

    proposal = open_pr(GitHubActivities(config, ArtifactStore(config.artifacts_dir)))

    assert proposal.pr_url
    assert ("GET", "/repos/acme/checkout/installation") in github.requests
    assert ("POST", "/app/installations/4242/access_tokens") in github.requests


def test_one_issue_per_fingerprint_for_configured_severities(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    critical = make_incident(Phase.INVESTIGATING, severity=Severity.CRITICAL)

    first = open_issue(forge, critical)
    again = open_issue(forge, critical)
    high = open_issue(forge, make_incident(Phase.INVESTIGATING, severity=Severity.HIGH))

    assert first.created and first.opened and first.url
    assert again.opened and not again.created and again.number == first.number
    assert not high.opened and "issue_severities" in (high.reason or "")
    [issue] = github.issues(REPO)
    assert issue["label_names"] == ["incident", "remedy"]
    assert "KeyError: 'sku'" in issue["body"] and issue["title"].startswith("[critical] KeyError")


def test_an_issue_is_found_again_after_a_crash(
    github: GitHubServer, forge: GitHubActivities
) -> None:
    critical = make_incident(Phase.INVESTIGATING, severity=Severity.CRITICAL)
    github.fail("POST issues", "drop")
    with pytest.raises(requests.ConnectionError):
        open_issue(forge, critical)

    found = open_issue(forge, critical)

    assert found.opened and not found.created
    assert len(github.issues(REPO)) == 1


def test_without_github_no_issue_and_a_clear_pull_request_error(
    github: GitHubServer, forge: GitHubActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN")
    critical = make_incident(Phase.INVESTIGATING, severity=Severity.CRITICAL)
    assert "GITHUB_TOKEN" in (open_issue(forge, critical).reason or "")
    with pytest.raises(ApplicationError) as caught:
        open_pr(forge)
    assert caught.value.non_retryable and "$GITHUB_TOKEN" in str(caught.value)
    assert github.requests == []
