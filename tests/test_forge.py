"""propose_change (the local forge) against real repositories made in tmp_path."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.forge import LocalForge
from activities.git import GitActivities
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.models import (
    ApprovalRequest,
    Decision,
    Diagnosis,
    DiagnosisResult,
    Edit,
    ErrorInfo,
    EvidenceLine,
    Frame,
    IncidentStatus,
    InvestigateRequest,
    PatchRequest,
    Phase,
    Proposal,
    ProposeRequest,
    SyncRequest,
    VerificationResult,
)
from remedy.names import branch_for
from remedy.render.pull_request import pull_request_title
from remedy.service_policy import ServicePolicy, Severity
from tests.repos import ALICE, BOB, ServiceRepo, git, make_service_repo, serve_over_http

Via = Literal["path", "url"]
INCIDENT = "checkout-0123456789abcdef-a1b2c3d4"
BRANCH = branch_for(INCIDENT)
FIXED = "def price(item):\n    return PRICES.get(item['sku'], 0)\n"
APPROVED_AT = datetime(2026, 1, 6, 10, 30, tzinfo=UTC)


@dataclass
class Approved:
    repo: ServiceRepo
    config: RemedyConfig
    store: ArtifactStore
    forge: LocalForge
    incident: IncidentStatus


def approved_incident(tmp_path: Path, via: Via = "path", **service: Any) -> Approved:
    """A two-commit repository, synced, investigated and patched by the real git activities,
    then approved."""
    repo = make_service_repo(tmp_path)
    repo.commit({"app/prices.py": "PRICES = {}\n"}, "Add price table", author=ALICE)
    base = repo.commit(
        {"app/shop.py": "def price(item):\n    return PRICES[item['sku']]\n"},
        "Price items by sku",
        author=BOB,
    )
    config = repo.config(tmp_path / "home", via=via, **service)
    store = ArtifactStore(config.artifacts_dir)
    git_activities = GitActivities(config, store)
    env = ActivityEnvironment()
    worktree = env.run(
        git_activities.sync_repo,
        SyncRequest(incident_id=INCIDENT, service="checkout", release=base),
    )
    evidence = env.run(
        git_activities.investigate,
        InvestigateRequest(
            incident_id=INCIDENT,
            worktree=worktree,
            error=ErrorInfo(type="KeyError", message="'sku'"),
            frames=[Frame(file="/srv/app/app/shop.py", line=2, function="price")],
        ),
    )
    edit = Edit(
        path="app/shop.py", search="PRICES[item['sku']]", replace="PRICES.get(item['sku'], 0)"
    )
    patch = env.run(
        git_activities.prepare_patch,
        PatchRequest(incident_id=INCIDENT, worktree=worktree, edits=[edit], policy=ServicePolicy()),
    )
    assert patch.applied, patch.reason
    first_seen = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    incident = IncidentStatus(
        incident_id=INCIDENT,
        workflow_id="incident-checkout-0123456789abcdef",
        service="checkout",
        fingerprint="0123456789abcdef",
        phase=Phase.OPENING_PR,
        severity=Severity.HIGH,
        error_type="KeyError",
        error_message="'sku'",
        occurrences=3,
        first_seen=first_seen,
        last_seen=first_seen,
        release=base,
        worktree=worktree,
        evidence=evidence,
        diagnosis=DiagnosisResult(
            diagnosis=Diagnosis(
                summary="Unknown skus raise KeyError in price()",
                root_cause="price() indexes PRICES directly, so an item without a price fails.",
                confidence=0.8,
                evidence=[EvidenceLine(path="app/shop.py", line=2)],
                edits=[edit],
            ),
            backend="ollama",
        ),
        patch=patch,
        verification=VerificationResult(status="passed", summary="3 passed", tests_run=3),
        approval=ApprovalRequest(
            request_id="r1",
            approvers=["U1"],
            requested_at=first_seen,
            expires_at=first_seen + timedelta(days=1),
            decision=Decision(decision="approve", approver="U1", at=APPROVED_AT),
        ),
        ui_url="http://127.0.0.1:8233/namespaces/default/workflows/incident-checkout-0123456789abcdef",
    )
    return Approved(repo, config, store, LocalForge(config, store), incident)


def propose(approved: Approved) -> Proposal:
    return ActivityEnvironment().run(
        approved.forge.propose_change, ProposeRequest(incident=approved.incident)
    )


def forget_local_state(approved: Approved) -> None:
    for folder in ("mirrors", "worktrees"):
        shutil.rmtree(approved.config.home_dir / folder, ignore_errors=True)
        assert not (approved.config.home_dir / folder).exists()


@pytest.mark.parametrize("via", ["path", "url"])
def test_propose_pushes_a_branch_with_the_fix(tmp_path: Path, via: Via) -> None:
    approved = approved_incident(tmp_path, via=via)
    assert approved.incident.worktree is not None
    base = approved.incident.worktree.commit

    proposal = propose(approved)

    assert proposal.branch == BRANCH
    assert proposal.pr_url is None
    assert proposal.remote == approved.config.repo_location("checkout")
    assert proposal.title == "fix(checkout): Unknown skus raise KeyError in price()"
    assert approved.repo.remote_branch(BRANCH) == proposal.commit
    origin = approved.repo.origin
    assert git(origin, "show", f"{proposal.commit}:app/shop.py") == FIXED.strip()
    assert git(origin, "rev-parse", f"{proposal.commit}^") == base
    assert git(origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>", proposal.commit) == (
        "Remedy <remedy@localhost>|Remedy <remedy@localhost>"
    )
    assert git(origin, "log", "-1", "--format=%at", proposal.commit) == str(
        int(APPROVED_AT.timestamp())
    )
    message = git(origin, "log", "-1", "--format=%B", proposal.commit)
    assert message.splitlines()[0] == proposal.title
    assert message.endswith(f"Remedy-Incident: {INCIDENT}")
    assert git(origin, "branch", "--list", "main", "--format=%(objectname)") == base


def test_propose_pushes_through_an_authenticated_url_without_leaking_it(tmp_path: Path) -> None:
    with serve_over_http(tmp_path, user="remedy", token="s3cr3t-t0ken") as base:
        url = base.replace("http://", "http://remedy:s3cr3t-t0ken@") + "/checkout.git"
        approved = approved_incident(tmp_path, repo=url)
        proposal = propose(approved)
        assert propose(approved) == proposal
    assert approved.repo.remote_branch(BRANCH) == proposal.commit
    assert proposal.remote == url.replace("remedy:s3cr3t-t0ken@", "***@")
    assert "s3cr3t" not in proposal.model_dump_json()
    body = approved.store.get_text(f"{INCIDENT}/pull_request.md")
    assert "s3cr3t" not in body


def test_the_pull_request_text_is_stored_beside_the_incident(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    proposal = propose(approved)
    assert proposal.body is not None and proposal.body.key == f"{INCIDENT}/pull_request.md"
    body = approved.store.get_text(proposal.body)
    for expected in (
        "KeyError: 'sku'",
        "price() indexes PRICES directly",
        "Confidence: 80% (ollama).",
        "`app/shop.py:2`",
        "+1 -1: `app/shop.py`",
        "+    return PRICES.get(item['sku'], 0)",
        "**passed**, 3 tests. 3 passed",
        "Approved by U1 at 2026-01-06T10:30:00+00:00.",
        "app/shop.py:2 in price",
        f"| `{approved.repo.head()[:12]}` | Bob Baker | 2026-01-05 | Price items by sku | last "
        "changed app/shop.py:2 (the failing line) |",
        approved.incident.ui_url,
        f"Remedy-Incident: {INCIDENT}",
    ):
        assert expected in body, expected


def test_propose_twice_and_after_losing_local_state_gives_one_commit(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    assert approved.incident.worktree is not None
    base = approved.incident.worktree.commit
    first = propose(approved)

    assert propose(approved) == first
    forget_local_state(approved)
    assert propose(approved) == first
    assert git(approved.repo.origin, "rev-list", "--count", f"{base}..{BRANCH}") == "1"

    # A crash after the commit but before the push: the retry builds the very same commit.
    git(approved.repo.origin, "update-ref", "-d", f"refs/heads/{BRANCH}")
    forget_local_state(approved)
    again = propose(approved)
    assert again.commit == first.commit
    assert approved.repo.remote_branch(BRANCH) == first.commit


def test_a_branch_a_person_owns_is_never_overwritten(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    human = approved.repo.commit({"NOTES.md": "mine\n"}, "Human work", push=False)
    git(approved.repo.work, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}")

    with pytest.raises(ApplicationError) as caught:
        propose(approved)
    assert caught.value.type == "BranchConflict"
    assert caught.value.non_retryable
    assert BRANCH in caught.value.message and "Remedy-Incident" in caught.value.message
    assert approved.repo.remote_branch(BRANCH) == human


def test_only_the_exact_branch_counts_as_an_earlier_attempt(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    git(approved.repo.origin, "update-ref", f"refs/tags/x/refs/heads/{BRANCH}", "HEAD")
    proposal = propose(approved)
    assert approved.repo.remote_branch(BRANCH) == proposal.commit


def test_nothing_leaves_without_an_approval(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    assert approved.incident.approval is not None
    approved.incident.approval.decision = Decision(
        decision="reject", approver="U1", reason="no", at=APPROVED_AT
    )
    with pytest.raises(ApplicationError) as caught:
        propose(approved)
    assert caught.value.type == "NotApproved"
    assert approved.repo.remote_branch(BRANCH) is None


def test_an_incident_without_a_patch_has_nothing_to_propose(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    approved.incident.patch = None
    with pytest.raises(ApplicationError) as caught:
        propose(approved)
    assert (caught.value.type, caught.value.non_retryable) == ("NothingToPropose", True)


def test_title_falls_back_to_the_error_and_file(tmp_path: Path) -> None:
    approved = approved_incident(tmp_path)
    incident = approved.incident.model_copy(update={"diagnosis": None})
    assert pull_request_title(incident) == "fix(checkout): KeyError in app/shop.py"
    long = approved.incident.model_copy(deep=True)
    assert long.diagnosis is not None and long.diagnosis.diagnosis is not None
    long.diagnosis.diagnosis.summary = "x" * 200
    assert len(pull_request_title(long)) == 72
