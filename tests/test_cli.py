"""The `remedy` CLI as a user types it, against the real dev server and a real intake."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from remedy.models import Phase
from starter.app import create_app
from starter.cli import app as cli
from starter.cli_approval import APPROVER_TOKEN_ENV, hash_credential
from tests.conftest import free_port
from tests.test_intake import RecordingReporter
from tests.workflow_harness import (
    APPROVER,
    FakeActivities,
    eventually,
    finished,
    fix_diagnosis,
    make_start,
    start_incident,
    wait_for_phase,
)
from workflows.incident import IncidentWorkflow

runner = CliRunner()

APPROVER_CREDENTIAL = "cli-test-approver-credential"
# Holds a valid CLI credential but is not in the service's approvers: the workflow decides.
OUTSIDER = "U-outsider"
_APPROVER_LINES = (
    f'"{APPROVER}" = "{hash_credential(APPROVER_CREDENTIAL)}"\n'
    f'"{OUTSIDER}" = "{hash_credential(APPROVER_CREDENTIAL)}"\n'
)


async def remedy(*args: str) -> Result:
    """Run a CLI command in a thread: it owns its own event loop, as in a shell."""
    return await asyncio.to_thread(runner.invoke, cli, list(args))


@pytest.fixture
def queue() -> str:
    return f"cli-{uuid.uuid4()}"


@pytest.fixture
def config_file(tmp_path: Path, client: Client, queue: str) -> Path:
    target = client.service_client.config.target_host
    path = tmp_path / "remedy.toml"
    path.write_text(
        f'home = "{tmp_path / "state"}"\n'
        f'[temporal]\naddress = "{target}"\ntask_queue = "{queue}"\n'
        f'[services.shop]\nrepo = "{tmp_path / "shop.git"}"\n'
        f'intake_token_env = "CLI_SHOP_TOKEN"\napprovers = ["{APPROVER}"]\n'
        f"[services.shop.cli_approvers]\n{_APPROVER_LINES}"
    )
    return path


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(APPROVER_TOKEN_ENV, APPROVER_CREDENTIAL)


@pytest.fixture
async def fakes(client: Client, queue: str) -> AsyncIterator[FakeActivities]:
    fakes = FakeActivities(diagnosis=fix_diagnosis())
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        yield fakes


async def test_list_show_refuse_then_approve(
    client: Client, queue: str, config_file: Path, fakes: FakeActivities, credential: None
) -> None:
    handle = await start_incident(client, queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    config = ["--config", str(config_file)]

    async def listed() -> list[dict[str, object]]:
        result = await remedy("incidents", "list", "--service", "shop", "--json", *config)
        assert result.exit_code == 0, result.output
        return [
            i
            for i in json.loads(result.output)
            if i["incident_id"] == status.incident_id and i["phase"] == "awaiting_approval"
        ]

    assert await eventually(listed)

    shown = await remedy("incidents", "show", status.incident_id, "--json", *config)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["phase"] == "awaiting_approval"
    text = await remedy("incidents", "show", status.incident_id, *config)
    assert "awaiting one of" in text.output and "KeyError" in text.output

    # No credential for this name: the CLI refuses before anything reaches the workflow.
    stranger = await remedy("approve", status.incident_id, "--as", "U-stranger", *config)
    assert stranger.exit_code == 1
    assert "refused" in stranger.output and "is not 'U-stranger''s" in stranger.output
    assert APPROVER not in stranger.output
    # A proven identity that the service does not list: the workflow's validator refuses.
    refused = await remedy("approve", status.incident_id, "--as", OUTSIDER, *config)
    assert refused.exit_code == 1
    assert "refused" in refused.output and "is not an approver" in refused.output

    approved = await remedy("approve", status.incident_id, "--as", APPROVER, *config)
    assert approved.exit_code == 0, approved.output
    assert approved.output == f"approved {status.incident_id} as {APPROVER}\n"
    final = await finished(handle)
    assert final.phase == Phase.PR_OPENED
    assert fakes.calls["propose_change"] == 1


async def test_reject_needs_a_reason_and_records_it(
    client: Client, queue: str, config_file: Path, fakes: FakeActivities, credential: None
) -> None:
    handle = await start_incident(client, queue, make_start())
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    config = ["--config", str(config_file)]
    missing = await remedy("reject", status.incident_id, "--as", APPROVER, *config)
    assert missing.exit_code == 2 and "--reason" in missing.output
    rejected = await remedy(
        "reject", status.incident_id, "--as", APPROVER, "--reason", "fix belongs upstream", *config
    )
    assert rejected.exit_code == 0, rejected.output
    assert rejected.output == f"rejected {status.incident_id} as {APPROVER}\n"
    final = await finished(handle)
    assert final.phase == Phase.REJECTED and "fix belongs upstream" in (final.reason or "")


async def test_unknown_incident_and_bad_config_are_clear(config_file: Path, tmp_path: Path) -> None:
    unknown = await remedy(
        "incidents", "show", "shop-0123456789abcdef", "--config", str(config_file)
    )
    assert unknown.exit_code == 1 and "no incident" in unknown.output
    malformed = await remedy("incidents", "show", "not an id", "--config", str(config_file))
    assert malformed.exit_code == 1 and "is not of the form" in malformed.output
    missing = await remedy("incidents", "list", "--config", str(tmp_path / "absent.toml"))
    assert missing.exit_code == 2 and "absent.toml: no such config file" in missing.output


@pytest.fixture
def intake_url(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, RecordingReporter]]:
    from remedy.config import load_config

    monkeypatch.setenv("CLI_SHOP_TOKEN", "cli-token")
    reporter = RecordingReporter()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(load_config(config_file), reporter=reporter),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", reporter
    server.should_exit = True
    thread.join()


async def test_report_sends_a_traceback_from_a_file(
    config_file: Path,
    intake_url: tuple[str, RecordingReporter],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, reporter = intake_url
    trace = tmp_path / "trace.txt"
    trace.write_text(
        "Traceback (most recent call last):\n"
        '  File "/srv/shop/app/cart.py", line 2, in total\n'
        "    return order['sku']\n"
        "KeyError: 'sku'\n"
    )
    args = ["report", "--service", "shop", "--type", "KeyError", "--message", "'sku'"]
    result = await remedy(
        *args, "--traceback", str(trace), "--url", url, "--config", str(config_file)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["occurrences"] == 1
    assert reporter.starts[0].event.frames[-1].function == "total"

    monkeypatch.delenv("CLI_SHOP_TOKEN")
    no_token = await remedy(
        *args, "--traceback", str(trace), "--url", url, "--config", str(config_file)
    )
    assert no_token.exit_code == 1 and "CLI_SHOP_TOKEN" in no_token.output
