"""What a CLI approver reads: `incidents show`, `incidents diff` and `incidents list` on a
real incident, filters, `--version` and help text.

The incident is real up to the approval: the intake app, the workflow, and the worker's git,
diagnosis (a loopback Ollama), regression-test and sandbox activities on a real repository.
Only the code index is a double (its activities are tested in test_index.py).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from temporalio.client import Client
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from remedy.artifacts import ArtifactStore
from remedy.config import load_config
from remedy.models import IncidentStatus, PatchResult, Phase, VerificationResult
from remedy.render.terminal import render_incident_list, render_status
from remedy.review import review_of
from remedy.service_policy import Severity
from starter.app import create_app
from starter.cli import app as cli
from starter.cli_approval import APPROVER_TOKEN_ENV, hash_credential
from starter.incidents import IncidentSummary
from starter.reporter import TemporalReporter
from tests.fakes.llm_double import instant_llm
from tests.fakes.ollama_server import OllamaServer
from tests.repos import ALICE, BOB, ServiceRepo, make_service_repo
from tests.workflow_harness import APPROVER, FakeActivities, until_phase
from worker import build_activities, build_worker

runner = CliRunner()

TOKEN = "review-intake-token"
CREDENTIAL = "review-test-approver-credential"
CART_BUGGY = (
    "def total(order):\n"
    "    discount = order['discount']\n"
    "    return order['price'] * order['qty'] - discount\n"
)
BUGGY_LINE = "    discount = order['discount']\n"
FIXED_LINE = "    discount = order.get('discount', 0)\n"
SUITE = (
    "from app.cart import total\n\n\n"
    "def test_discounted_total():\n"
    "    assert total({'price': 2, 'qty': 3, 'discount': 1}) == 5\n"
)
REGRESSION_TEST = (
    "from app.cart import total\n\n\n"
    "def test_order_without_discount():\n"
    "    assert total({'price': 2, 'qty': 3}) == 6\n"
)
DIAGNOSIS = {
    "summary": "orders without a discount crash total()",
    "root_cause": "total() indexes order['discount'], which plain orders lack",
    "confidence": 0.9,
    "evidence": [{"path": "app/cart.py", "line": 2}],
    "edits": [{"path": "app/cart.py", "search": BUGGY_LINE, "replace": FIXED_LINE}],
}
# Stands in for the code index: these activities write no artifact a review shows.
INDEX_ACTIVITIES = {"index_repo", "find_related", "record_incident"}


async def remedy(*args: str, columns: int = 200) -> Result:
    """Run a CLI command in a thread: it owns its own event loop, as in a shell."""
    return await asyncio.to_thread(runner.invoke, cli, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture
def shop(tmp_path: Path) -> ServiceRepo:
    repo = make_service_repo(tmp_path, service="shop")
    repo.commit(
        {"app/__init__.py": "", "app/cart.py": CART_BUGGY, "tests/test_cart.py": SUITE},
        "Apply discounts",
        author=BOB,
    )
    repo.commit({"README.md": "# shop\n"}, "Add a README", author=ALICE)
    return repo


@pytest.fixture
def ollama() -> Iterator[OllamaServer]:
    regression = {"path": "tests/test_no_discount.py", "content": REGRESSION_TEST,
                  "explanation": "a plain order must not crash"}  # fmt: skip
    with instant_llm(diagnosis=DIAGNOSIS, regression_test=regression) as server:
        yield server


@pytest.fixture
def config_file(
    tmp_path: Path, client: Client, shop: ServiceRepo, ollama: OllamaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:  # fmt: skip
    monkeypatch.setenv("REVIEW_SHOP_TOKEN", TOKEN)
    monkeypatch.setenv(APPROVER_TOKEN_ENV, CREDENTIAL)
    path = tmp_path / "remedy.toml"
    path.write_text(
        f'home = "{tmp_path / "home"}"\n'
        f'[temporal]\naddress = "{client.service_client.config.target_host}"\n'
        f'task_queue = "review-{uuid.uuid4()}"\n'
        f"[limits]\nquiet_window_s = 0\n"
        f'[llm]\nmode = "local"\nollama_host = "{ollama.url}"\n'
        f'[services.shop]\nrepo = "{shop.origin}"\nbranch = "{shop.branch}"\n'
        f'intake_token_env = "REVIEW_SHOP_TOKEN"\napprovers = ["{APPROVER}"]\n'
        f'allowed_paths = ["app/**"]\n'
        f'test_command = "{sys.executable} -m pytest -q -p no:cacheprovider"\n'
        f'[services.shop.cli_approvers]\n"{APPROVER}" = "{hash_credential(CREDENTIAL)}"\n'
    )
    return path


@dataclass
class Incident:
    id: str
    status: IncidentStatus
    http: httpx.AsyncClient
    store: ArtifactStore


@pytest.fixture
async def incident(client: Client, config_file: Path, shop: ServiceRepo) -> AsyncIterator[Incident]:
    """A real incident of `shop`, verified and awaiting approval."""
    config = load_config(config_file)
    store = ArtifactStore(config.artifacts_dir)
    doubles = [a for a in FakeActivities().all() if a.__name__ in INDEX_ACTIVITIES]
    real = [a for a in build_activities(config, store) if a.__name__ not in INDEX_ACTIVITIES]
    reporter = TemporalReporter(
        client, task_queue=config.temporal.task_queue, coalesce_interval_s=0.05, ui_url=""
    )
    app = create_app(config, reporter=reporter, client=client)
    crash = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from app.cart import total; total({'price': 2, 'qty': 3})"],
        cwd=shop.work, capture_output=True, text=True, check=False,
    )  # fmt: skip
    event = {
        "service": "shop",
        "release": shop.head(),
        "error": {"type": "KeyError", "message": "'discount'"},
        "traceback": crash.stderr,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with build_worker(client, config, activities=[*real, *doubles]):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            reply = await http.post("/v1/errors", json=event, headers=auth)
            assert reply.status_code == 202, reply.text
            incident_id = reply.json()["incident_id"]
            handle = client.get_workflow_handle(reply.json()["workflow_id"])

            async def current() -> IncidentStatus | None:
                got = await http.get(f"/v1/incidents/{incident_id}", headers=auth)
                return None if got.status_code == 503 else IncidentStatus(**got.json())

            status = await until_phase(current, Phase.AWAITING_APPROVAL, handle=handle)
            yield Incident(incident_id, status, http, store)
            rejected = await remedy(
                "reject", incident_id, "--as", APPROVER, "--reason", "test over",
                "--config", str(config_file),
            )  # fmt: skip
            assert rejected.exit_code == 0, rejected.output
            assert rejected.output.startswith(f"rejected {incident_id} as {APPROVER}")
            await asyncio.wait_for(handle.result(), 60)
        await reporter.close()


async def test_show_prints_the_change_an_approver_approves(
    incident: Incident, config_file: Path, shop: ServiceRepo
) -> None:
    assert incident.status.verification is not None
    assert incident.status.verification.status == "passed", incident.status.verification
    config = ["--config", str(config_file)]

    shown = await remedy("incidents", "show", incident.id, *config)
    assert shown.exit_code == 0, shown.output
    text = shown.output
    # The code around the failing frame, the failing line marked.
    assert "--- code around app/cart.py:2 in total" in text
    assert "> 2 |     discount = order['discount']" in text
    assert "  1 | def total(order):" in text
    # The diff itself, not a count of lines.
    assert f"-{BUGGY_LINE}+{FIXED_LINE}" in text
    assert "--- regression test tests/test_no_discount.py" in text
    assert "def test_order_without_discount():" in text
    assert "--- verification output: after, exit 0 (tail)" in text
    assert re.search(r"1 passed", text)

    as_json = await remedy("incidents", "show", incident.id, "--json", *config)
    assert as_json.exit_code == 0, as_json.output
    shown_json = json.loads(as_json.output)
    review = shown_json["review"]
    assert FIXED_LINE in review["diff"]["text"] and review["diff"]["missing"] is None
    assert review["regression_test"]["text"] == REGRESSION_TEST
    assert review["regression_test"]["path"] == "tests/test_no_discount.py"
    # The regression test ran inside the suite's run after the patch: one output, both counted.
    assert [run["label"] for run in review["verification_output"]] == ["after"]
    assert "2 passed" in review["verification_output"][0]["text"]
    assert all("passed" in run["text"] for run in review["verification_output"])
    assert review["source"]["line"] == 2
    assert {"line": 2, "text": BUGGY_LINE.rstrip("\n")} in review["source"]["lines"]
    # GET /v1/incidents/{id} is the same JSON.
    over_http = await incident.http.get(
        f"/v1/incidents/{incident.id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert over_http.json() == shown_json

    diff = await remedy("incidents", "diff", incident.id, *config)
    assert diff.exit_code == 0, diff.output
    assert diff.output.startswith("diff --git a/app/cart.py b/app/cart.py")
    applied = await asyncio.to_thread(
        subprocess.run,
        ["git", "apply", "--check", "-"], input=diff.output, cwd=shop.work,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr

    # Artifacts gone (another machine, a cleaned home): said, not a traceback.
    assert incident.status.patch is not None and incident.status.patch.diff is not None
    incident.store.path_of(incident.status.patch.diff).unlink()
    shown = await remedy("incidents", "show", incident.id, *config)
    assert shown.exit_code == 0, shown.output
    assert "--- diff (what approving pushes): artifact" in shown.output
    assert "is not in the artifact store" in shown.output
    missing = await remedy("incidents", "diff", incident.id, *config)
    assert missing.exit_code == 1
    assert missing.output.count("\n") == 1 and "is not in the artifact store" in missing.output

    # The list at 80 columns: the id whole at the start of its line, the rest wrapped.
    listed = await remedy("incidents", "list", *config, columns=80)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    at = next(i for i, line in enumerate(lines) if line.startswith(incident.id))
    assert lines[at].split() == [incident.id, "awaiting_approval"]
    assert lines[at + 1].strip() == "KeyError: 'discount'"
    assert lines[at + 2].split()[:3] == ["shop", "high", "1x"], lines[at + 2]
    assert "at app/cart.py:2 in total" in " ".join(lines[at + 2 : at + 4])


async def test_list_says_no_incidents_and_refuses_unknown_filters(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "remedy.toml"
    service = f"quiet-{uuid.uuid4().hex[:8]}"
    path.write_text(
        f'[temporal]\naddress = "{client.service_client.config.target_host}"\n'
        f'[services.{service}]\nrepo = "{tmp_path}"\n'
    )
    config = ["--config", str(path)]
    empty = await remedy("incidents", "list", "--service", service, *config)
    assert empty.exit_code == 0, empty.output
    assert empty.output == "no incidents\n"
    for option, value, accepted in [
        ("--phase", "awaiting", "awaiting_approval"),
        ("--severity", "urgent", "critical"),
        ("--service", "checkout", service),
    ]:
        refused = await remedy("incidents", "list", option, value, *config)
        assert refused.exit_code == 2, refused.output
        assert f"{option} '{value}'" in refused.output and accepted in refused.output


def test_version_is_the_installed_distribution() -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"remedy {importlib.metadata.version('remedy')}\n"


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under `command` (typer's own click types are private), with its path."""
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_help_shows_every_bracketed_word() -> None:
    checked = 0
    for path, command in _commands(typer.main.get_command(cli)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        brackets = {b for text in texts for b in re.findall(r"\[[^\]\n]+\]", text)}
        result = runner.invoke(cli, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.split())
        for bracket in brackets:
            assert " ".join(bracket.split()) in shown, (path, bracket)
            checked += 1
        # Each command's first sentence whole in its group's list, never cut to "...".
        if isinstance(command, TyperGroup):
            for sub in command.commands.values():
                assert " ".join(sub.get_short_help_str(sys.maxsize).split()) in shown, sub.name
    assert checked >= 2  # [temporal] in `worker`, [services.<name>...] in `approver-hash`


def _status(**fields: Any) -> IncidentStatus:
    seen = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    base: dict[str, Any] = {
        "incident_id": "shop-0123456789abcdef-01234567",
        "workflow_id": "incident-shop-0123456789abcdef",
        "service": "shop",
        "fingerprint": "0123456789abcdef",
        "phase": Phase.AWAITING_APPROVAL,
        "severity": Severity.HIGH,
        "error_type": "KeyError",
        "error_message": "'sku'",
        "occurrences": 1,
        "first_seen": seen,
        "last_seen": seen,
    }
    return IncidentStatus(**(base | fields))


def test_review_text_cannot_drive_the_terminal(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    hostile = "+x = 1  # \x1b[2J\x1b]0;owned\x07 \u202eevil [bold]kept[/bold]\r-hidden\n"
    diff = store.put_text("shop-0123456789abcdef-01234567/patch.diff", hostile)
    status = _status(
        error_message="'sku' \x1b[31mred\x1b[0m",
        patch=PatchResult(applied=True, files=["app/cart.py"], diff=diff),
    )
    text = render_status(status, review_of(status, store))
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text and "\x07" not in text
    assert "[U+001B][2J" in text and "[U+202E]evil" in text and "[U+000D]-hidden" in text
    assert "[bold]kept[/bold]" in text
    assert "'sku' [U+001B][31mred" in text

    listed = IncidentSummary(
        incident_id="a-very-long-service-name-for-sure-0123456789abcdef-01234567",
        workflow_id="incident-x",
        service="a-very-long-service-name-for-sure",
        phase="awaiting_approval",
        severity="high",
        error_type="KeyError",
        error_message="\x1b[2J" + "x" * 200,
        occurrences=3,
        started=None,
        running=True,
    )
    lines = render_incident_list([listed], width=60).splitlines()
    assert lines[0] == listed.incident_id  # too long for the phase beside it; never cut
    assert lines[1].startswith("  KeyError: [U+001B][2Jxxx") and lines[1].endswith("…")
    assert all(len(line) <= 60 for line in lines[1:]) and "awaiting_approval" in lines[2]


def test_review_says_what_is_missing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert review_of(_status(), store).diff.missing == "no patch (phase awaiting_approval)"
    refused = _status(patch=PatchResult(applied=False, reason="search text not found"))
    assert review_of(refused, store).diff.missing == "no patch: search text not found"
    diff = store.put_text("shop-0123456789abcdef-01234567/patch.diff", "+fixed\n")
    store.path_of(diff).write_text("+something else\n")
    changed = review_of(_status(patch=PatchResult(applied=True, diff=diff)), store)
    assert changed.diff.text is None and "changed after the incident stored it" in (
        changed.diff.missing or ""
    )
    review = review_of(_status(verification=VerificationResult(status="skipped")), store)
    assert review.regression_test.missing == "no regression test ran with the verification"
    assert review.verification_output == [] and review.source.missing == "no evidence yet"
