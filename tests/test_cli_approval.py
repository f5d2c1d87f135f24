"""CLI approvals are authenticated: the approver's credential, checked before the Update.

The credential (REMEDY_APPROVER_TOKEN) is checked against the salted scrypt hash in
remedy.toml; a refusal names neither the approvers nor who holds a credential, nothing is sent
to the workflow, and the credential never reaches its history.
"""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from remedy.config import load_config
from remedy.models import Phase
from starter.cli import app as cli
from starter.cli_approval import (
    APPROVER_TOKEN_ENV,
    ApprovalRefused,
    check_cli_approver,
    credential_matches,
    hash_credential,
)
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    finished,
    fix_diagnosis,
    make_start,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow

runner = CliRunner()

CREDENTIAL = "approval-test-credential-of-the-approver"
SECOND = "U0SECOND"  # listed in approvers, holds no CLI credential


async def remedy(*args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, list(args))


# ---------------------------------------------------------------------------- the hash


def test_a_credential_hash_is_salted_scrypt_and_checks_only_its_credential() -> None:
    stored = hash_credential(CREDENTIAL)
    assert stored.startswith("$scrypt$ln=14,r=8,p=1$")
    assert CREDENTIAL not in stored
    assert hash_credential(CREDENTIAL) != stored  # a fresh salt each time
    assert credential_matches(CREDENTIAL, stored)
    assert not credential_matches(CREDENTIAL + "x", stored)
    assert not credential_matches("", stored)
    tampered = stored[:-2] + ("AA" if not stored.endswith("AA") else "BB")
    assert not credential_matches(CREDENTIAL, tampered)
    for malformed in ["sha256:abcd", "$scrypt$ln=40,r=8,p=1$AAAA$AAAA", stored + "$", ""]:
        with pytest.raises(ValueError, match="not a credential hash"):
            credential_matches(CREDENTIAL, malformed)


def test_approver_hash_prints_the_line_remedy_toml_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(APPROVER_TOKEN_ENV, CREDENTIAL)
    printed = runner.invoke(cli, ["approver-hash", "alice"])
    assert printed.exit_code == 0, printed.output
    line = printed.stdout.strip()
    assert line.startswith('alice = "$scrypt$') and CREDENTIAL not in printed.output
    assert "[services.<name>.cli_approvers]" in printed.stderr
    config = tmp_path / "remedy.toml"
    config.write_text(
        "[services.shop]\nrepo = 'x'\napprovers = ['alice']\n"
        f"[services.shop.cli_approvers]\n{line}\n"
    )
    stored = load_config(config).service("shop").cli_approvers["alice"]
    assert credential_matches(CREDENTIAL, stored)

    monkeypatch.delenv(APPROVER_TOKEN_ENV)
    generated = runner.invoke(cli, ["approver-hash", "bob", "--generate"])
    assert generated.exit_code == 0, generated.output
    token = generated.stderr.splitlines()[0].removeprefix(f"export {APPROVER_TOKEN_ENV}=")
    entry = tomllib.loads(generated.stdout)
    assert credential_matches(token, entry["bob"])

    monkeypatch.setenv(APPROVER_TOKEN_ENV, "short")
    weak = runner.invoke(cli, ["approver-hash", "carol"])
    assert weak.exit_code == 2 and "at least 12 characters" in weak.output


def test_the_check_refuses_without_naming_who_may_approve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "remedy.toml"
    path.write_text(
        f"[services.shop]\nrepo = 'x'\napprovers = ['{APPROVER}', '{SECOND}']\n"
        f"[services.shop.cli_approvers]\n{APPROVER} = '{hash_credential(CREDENTIAL)}'\n"
        "[services.locked]\nrepo = 'x'\ncli_approval = false\n"
        f"[services.locked.cli_approvers]\n{APPROVER} = '{hash_credential(CREDENTIAL)}'\n"
        "[services.broken]\nrepo = 'x'\n[services.broken.cli_approvers]\nmallory = 'sha256:00'\n"
    )
    config = load_config(path)
    refusals = []
    for service, approver, token in [
        ("shop", APPROVER, None),  # no credential at all
        ("shop", APPROVER, "wrong-credential-entirely"),
        ("shop", SECOND, CREDENTIAL),  # listed, but holds no CLI credential
        ("shop", "U-stranger", CREDENTIAL),
        ("locked", APPROVER, CREDENTIAL),
        ("broken", "mallory", CREDENTIAL),
    ]:
        monkeypatch.delenv(APPROVER_TOKEN_ENV, raising=False)
        with pytest.raises(ApprovalRefused) as refused:
            check_cli_approver(config, service, approver, token)
        refusals.append(str(refused.value))
    missing, wrong, second, stranger, locked, broken = refusals
    assert APPROVER_TOKEN_ENV in missing and "remedy approver-hash" in missing
    assert f"is not '{APPROVER}''s for service 'shop'" in wrong
    assert f"is not '{SECOND}''s" in second and "is not 'U-stranger''s" in stranger
    assert "cli_approval = false" in locked
    assert "services.broken.cli_approvers.mallory: not a credential hash" in broken
    for message in (missing, wrong, stranger, locked):
        assert SECOND not in message
    for message in (missing, stranger, second):
        assert APPROVER not in message

    monkeypatch.setenv(APPROVER_TOKEN_ENV, CREDENTIAL)
    check_cli_approver(config, "shop", APPROVER)  # the environment's credential: accepted


# ---------------------------------------------------------------------------- end to end


@pytest.fixture
def queue() -> str:
    return f"cli-approval-{uuid.uuid4()}"


@pytest.fixture
async def fakes(client: Client, queue: str) -> AsyncIterator[FakeActivities]:
    fakes = FakeActivities(diagnosis=fix_diagnosis())
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        yield fakes


def _config(tmp_path: Path, client: Client, queue: str, *, cli_approval: bool = True) -> Path:
    path = tmp_path / f"remedy-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f'home = "{tmp_path / "state"}"\n'
        f'[temporal]\naddress = "{client.service_client.config.target_host}"\n'
        f'task_queue = "{queue}"\n'
        f'[services.shop]\nrepo = "{tmp_path / "shop.git"}"\n'
        f'approvers = ["{APPROVER}", "{SECOND}"]\n'
        f"cli_approval = {str(cli_approval).lower()}\n"
        f"[services.shop.cli_approvers]\n{APPROVER} = '{hash_credential(CREDENTIAL)}'\n"
    )
    return path


async def test_only_the_approvers_credential_sends_the_decision(
    client: Client,
    queue: str,
    fakes: FakeActivities,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = await start_incident(client, queue, make_start(approvers=[APPROVER, SECOND]))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    config = ["--config", str(_config(tmp_path, client, queue))]
    approve = ["approve", status.incident_id]

    monkeypatch.delenv(APPROVER_TOKEN_ENV, raising=False)
    missing = await remedy(*approve, "--as", APPROVER, *config)
    monkeypatch.setenv(APPROVER_TOKEN_ENV, "a-guess-at-the-credential")
    wrong = await remedy(*approve, "--as", APPROVER, *config)
    monkeypatch.setenv(APPROVER_TOKEN_ENV, CREDENTIAL)
    unproven = await remedy(*approve, "--as", SECOND, *config)
    for refused in (missing, wrong, unproven):
        assert refused.exit_code == 1, refused.output
        assert refused.output.startswith("error: refused: ")
        assert "only" not in refused.output and "may decide" not in refused.output
    assert APPROVER_TOKEN_ENV in missing.output
    assert SECOND not in wrong.output and APPROVER not in unproven.output
    # Nothing reached the workflow.
    waiting = await handle.query(IncidentWorkflow.status)
    assert waiting.phase == Phase.AWAITING_APPROVAL
    assert waiting.approval is not None and waiting.approval.decision is None

    approved = await remedy(*approve, "--as", APPROVER, *config)
    assert approved.exit_code == 0, approved.output
    final = await finished(handle)
    assert final.phase == Phase.PR_OPENED and final.approval is not None
    assert final.approval.decision is not None and final.approval.decision.approver == APPROVER
    history = await handle.fetch_history()
    recorded = b"".join(event.SerializeToString() for event in history.events)
    assert APPROVER.encode() in recorded  # payloads are searchable here: the name is recorded
    assert CREDENTIAL.encode() not in recorded
    updates = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(updates) == 1


async def test_a_service_can_turn_cli_approval_off(
    client: Client,
    queue: str,
    fakes: FakeActivities,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = await start_incident(client, queue, make_start(approvers=[APPROVER, SECOND]))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    config = _config(tmp_path, client, queue, cli_approval=False)
    monkeypatch.setenv(APPROVER_TOKEN_ENV, CREDENTIAL)
    for command in (["approve"], ["reject"]):
        extra = ["--reason", "no"] if command == ["reject"] else []
        refused = await remedy(
            *command, status.incident_id, "--as", APPROVER, *extra, "--config", str(config)
        )
        assert refused.exit_code == 1, refused.output
        assert "cli_approval = false" in refused.output and "Slack" in refused.output
    still = await handle.query(IncidentWorkflow.status)
    assert still.phase == Phase.AWAITING_APPROVAL
    await handle.terminate("test done")
