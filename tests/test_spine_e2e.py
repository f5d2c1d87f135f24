"""The spine end to end: HTTP intake -> real Temporal -> real git activities -> approval -> push
-> a person merges the branch -> a deploy of the merge -> the fix holds.

Only the diagnosis is a double (registered under the real activity name): the LLM backends
have their own tests against loopback Ollama/Anthropic servers. Everything else is the
product: the intake app with its coalescing reporter, the workflow, the worker's activities
on real repositories.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio import activity
from temporalio.client import Client

from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig
from remedy.models import (
    DiagnoseRequest,
    Diagnosis,
    DiagnosisResult,
    Edit,
    EvidenceLine,
    IncidentStatus,
    Phase,
)
from starter.app import create_app
from starter.incidents import decide
from starter.reporter import TemporalReporter
from tests.repos import ALICE, BOB, CAROL, ServiceRepo, git, make_service_repo
from tests.workflow_harness import APPROVER, until_phase
from worker import build_activities, build_worker

TOKEN = "e2e-intake-token"

CART_GOOD = "def total(order):\n    return order['price'] * order['qty']\n"
CART_BUGGY = (
    "def total(order):\n"
    "    discount = order['discount']\n"
    "    return order['price'] * order['qty'] - discount\n"
)
BUGGY_LINE = "    discount = order['discount']\n"
FIXED_LINE = "    discount = order.get('discount', 0)\n"


@activity.defn(name=names.ACTIVITY_DIAGNOSE)
async def scripted_diagnose(request: DiagnoseRequest) -> DiagnosisResult:
    return DiagnosisResult(
        diagnosis=Diagnosis(
            summary="orders without a discount crash total()",
            root_cause="commit 'Apply discounts' indexes order['discount'] unconditionally",
            confidence=0.9,
            evidence=[EvidenceLine(path="app/cart.py", line=2)],
            edits=[Edit(path="app/cart.py", search=BUGGY_LINE, replace=FIXED_LINE)],
        ),
        backend="scripted",
    )


@pytest.fixture
def service_repo(tmp_path: Path) -> ServiceRepo:
    repo = make_service_repo(tmp_path, service="shop")
    repo.commit({"app/__init__.py": "", "app/cart.py": CART_GOOD}, "Add cart total", author=ALICE)
    repo.bug_commit = repo.commit(  # type: ignore[attr-defined]
        {"app/cart.py": CART_BUGGY}, "Apply discounts", author=BOB
    )
    repo.commit({"README.md": "# shop\n"}, "Add a README", author=CAROL)
    return repo


def crash(repo: ServiceRepo) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from app.cart import total; total({'price': 2, 'qty': 3})"],
        cwd=repo.work,
        capture_output=True,
        text=True,
    )
    assert "KeyError" in done.stderr
    return done.stderr


@pytest.fixture
def config(
    service_repo: ServiceRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RemedyConfig:
    monkeypatch.setenv("E2E_SHOP_TOKEN", TOKEN)
    config = service_repo.config(
        tmp_path / "home",
        intake_token_env="E2E_SHOP_TOKEN",
        approvers=[APPROVER],
        allowed_paths=["app/**"],
    )
    config.temporal.task_queue = f"e2e-{uuid.uuid4()}"
    config.limits.quiet_window_s = 0
    # After the push the incident follows the branch: merged, deployed, held, in seconds.
    config.limits.change_poll_s = 1
    config.limits.hold_window_s = 2
    return config


@pytest.fixture
async def intake(client: Client, config: RemedyConfig) -> AsyncIterator[httpx.AsyncClient]:
    store = ArtifactStore(config.artifacts_dir)
    real = [a for a in build_activities(config, store) if getattr(a, "__name__", "") != "diagnose"]
    reporter = TemporalReporter(
        client,
        task_queue=config.temporal.task_queue,
        coalesce_interval_s=0.05,
        ui_url="http://127.0.0.1:8233/namespaces/default",
    )
    app = create_app(config, reporter=reporter, client=client)
    async with build_worker(client, config, activities=[*real, scripted_diagnose]):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            yield http
        await reporter.close()


async def status_of(http: httpx.AsyncClient, incident_id: str) -> IncidentStatus | None:
    """The incident's status over HTTP; None while its worker is too busy to answer (503)."""
    response = await http.get(
        f"/v1/incidents/{incident_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    return IncidentStatus.model_validate(response.json())


async def test_error_to_evidence_to_approval_to_pushed_branch(
    client: Client, config: RemedyConfig, service_repo: ServiceRepo, intake: httpx.AsyncClient
) -> None:
    release = service_repo.head()
    event = {
        "service": "shop",
        "release": release,
        "error": {"type": "KeyError", "message": "'discount'"},
        "traceback": crash(service_repo),
    }
    reply = await intake.post(
        "/v1/errors", json=event, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert reply.status_code == 202, reply.text
    incident_id = reply.json()["incident_id"]
    handle = client.get_workflow_handle(reply.json()["workflow_id"])

    async def current() -> IncidentStatus | None:
        return await status_of(intake, incident_id)

    status = await until_phase(current, Phase.AWAITING_APPROVAL, handle=handle)
    assert status.worktree is not None and status.worktree.commit == release
    evidence = status.evidence
    assert evidence is not None
    innermost = (
        evidence.frames[-1] if evidence.frames[-1].path == "app/cart.py" else evidence.frames[0]
    )
    assert innermost.path == "app/cart.py" and innermost.function == "total"
    assert evidence.suspect_commits[0].sha == service_repo.bug_commit  # type: ignore[attr-defined]
    assert evidence.suspect_commits[0].author == BOB.name
    assert status.patch is not None and status.patch.files == ["app/cart.py"]
    assert status.verification is not None and status.verification.status == "skipped"
    assert service_repo.remote_branch(names.branch_for(incident_id)) is None

    result = await decide(client, incident_id, "approve", APPROVER, None)
    assert result.decision.approver == APPROVER

    final = await until_phase(current, Phase.PR_OPENED, handle=handle)
    assert final.proposal is not None
    branch_sha = service_repo.remote_branch(names.branch_for(incident_id))
    assert branch_sha == final.proposal.commit
    fixed = git(service_repo.origin, "show", f"{branch_sha}:app/cart.py")
    assert "order.get('discount', 0)" in fixed
    body = ArtifactStore(config.artifacts_dir).get_text(final.proposal.body)  # type: ignore[arg-type]
    assert "KeyError" in body and APPROVER in body

    # A person merges the branch (a merge commit on main); the forge's watch sees it.
    git(service_repo.work, "fetch", "-q", "origin", names.branch_for(incident_id))
    git(service_repo.work, "merge", "-q", "--no-ff", "--no-edit", "FETCH_HEAD")
    git(service_repo.work, "push", "-q", "origin", "HEAD:refs/heads/main")
    merged = await until_phase(current, Phase.FIX_MERGED, handle=handle)
    assert merged.fix is not None and merged.fix.merged_by == "poll"
    assert merged.fix.commit == branch_sha
    # The deploy pipeline says the merge runs; no report of the error comes from it.
    deployed = await intake.post(
        "/v1/deploys",
        json={"service": "shop", "release": service_repo.head()},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert deployed.status_code == 202, deployed.text
    assert deployed.json()["incidents"] == [incident_id]
    # The incident closes while its worker runs: a later test reporting the same error
    # must open its own incident, not join one whose worker is gone.
    held = IncidentStatus.model_validate(await asyncio.wait_for(handle.result(), 60))
    assert held.phase == Phase.FIX_HELD, held.reason
    assert held.fix is not None and held.fix.deployed_release == service_repo.head()
