"""What the intake hears of a fix after its pull request opened: GitHub's webhook (signed as
GitHub signs), POST /v1/deploys, `remedy deployed`, and the releases the reporter counts and
announces. Signals are checked where they arrive: a workflow registered as IncidentWorkflow on
the real dev server that records every signal it hears."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.client import (
    Client,
    Interceptor,
    ListWorkflowsInput,
    OutboundInterceptor,
    SignalWorkflowInput,
    WorkflowExecutionAsyncIterator,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from remedy import names
from remedy.config import RemedyConfig, ServiceConfig
from remedy.models import ChangeSignal, DeploySignal, IncidentStart, OccurrenceSignal, Phase
from starter.app import create_app
from starter.cli import app as cli
from starter.reporter import TemporalReporter
from tests.intake_harness import RecordingReporter
from tests.workflow_harness import eventually, make_start

# Service names of this module only: the deploy route tells every following incident of a
# service, and other modules' incidents on the session's server are "shop"'s.
SHOP = f"shop{uuid.uuid4().hex[:6]}"
BILLING = f"billing{uuid.uuid4().hex[:6]}"
LOCAL = f"local{uuid.uuid4().hex[:6]}"
SHOP_TOKEN = "fix-shop-token-0123456789"
BILLING_TOKEN = "fix-billing-token-0123456789"
WEBHOOK_SECRET = "It's a Secret to Everybody"
MERGE_SHA = "9f1c0e5d" * 5


# ---------------------------------------------------------------------------- a listening incident


class Heard(BaseModel):
    occurrences: int = 0
    changes: list[ChangeSignal] = Field(default_factory=list)
    deploys: list[DeploySignal] = Field(default_factory=list)
    batches: list[OccurrenceSignal] = Field(default_factory=list)


@workflow.defn(name="IncidentWorkflow", sandboxed=False)
class ListeningIncident:
    """IncidentWorkflow's signals, recorded; it ends on `finish` or after two minutes."""

    def __init__(self) -> None:
        self._heard = Heard()
        self._done = False

    @workflow.run
    async def run(self, start: IncidentStart) -> None:
        self._heard.occurrences = start.occurrences
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._done, timeout=timedelta(minutes=2))

    @workflow.signal(name="change")
    def change(self, signal: ChangeSignal) -> None:
        self._heard.changes.append(signal)

    @workflow.signal(name="deployed")
    def deployed(self, signal: DeploySignal) -> None:
        self._heard.deploys.append(signal)

    @workflow.signal(name="occurrence")
    def occurrence(self, signal: OccurrenceSignal) -> None:
        self._heard.batches.append(signal)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self._done = True

    @workflow.query(name="heard")
    def heard(self) -> Heard:
        return self._heard


@pytest.fixture(scope="module")
async def queue(client: Client) -> AsyncIterator[str]:
    name = f"fix-intake-{uuid.uuid4()}"
    async with Worker(client, task_queue=name, workflows=[ListeningIncident]):
        yield name


class Incident:
    def __init__(self, handle: WorkflowHandle[Any, Any], incident_id: str) -> None:
        self.handle = handle
        self.id = incident_id

    async def heard(self) -> Heard:
        return await self.handle.query(ListeningIncident.heard)


@pytest.fixture
async def incidents(client: Client, queue: str) -> AsyncIterator[Any]:
    """Start listening incidents at a phase; all end with the test."""
    started: list[Incident] = []

    async def start(service: str = SHOP, phase: Phase = Phase.PR_OPENED) -> Incident:
        begin = make_start(service=service)
        handle = await client.start_workflow(
            ListeningIncident.run,
            begin,
            id=names.workflow_id_for(service, begin.fingerprint),
            task_queue=queue,
            execution_timeout=timedelta(minutes=3),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.SA_SERVICE, service),
                    SearchAttributePair(names.SA_PHASE, phase.value),
                    SearchAttributePair(names.SA_FINGERPRINT, begin.fingerprint),
                ]
            ),
        )
        assert handle.result_run_id is not None
        incident = Incident(
            handle, names.incident_id_for(service, begin.fingerprint, handle.result_run_id)
        )
        started.append(incident)
        return incident

    yield start
    for incident in started:
        with contextlib.suppress(RPCError):
            await incident.handle.signal(ListeningIncident.finish)


async def listed(client: Client, *expected: Incident) -> None:
    """Visibility has caught up with the incidents (it trails a start by a moment)."""
    ids = {incident.handle.id for incident in expected}

    async def seen() -> bool:
        query = f"ExecutionStatus = 'Running' AND {names.SA_SERVICE.name} IN ("
        query += ", ".join(f"'{s}'" for s in (SHOP, BILLING, LOCAL)) + ")"
        found = {execution.id async for execution in client.list_workflows(query)}
        return ids <= found

    await eventually(seen, timeout_s=10)


# ---------------------------------------------------------------------------- the intake


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("FIX_SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("FIX_BILLING_TOKEN", BILLING_TOKEN)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
    config = RemedyConfig(
        services={
            SHOP: ServiceConfig(
                repo="/nonexistent/shop", intake_token_env="FIX_SHOP_TOKEN", github_repo="acme/shop"
            ),
            BILLING: ServiceConfig(
                repo="/nonexistent/billing",
                intake_token_env="FIX_BILLING_TOKEN",
                github_repo="acme/billing",
            ),
            LOCAL: ServiceConfig(repo="/nonexistent/local"),
        }
    )
    config.intake.max_body_bytes = 4096
    config.github.webhook_max_bytes = 64 * 1024
    return config


@pytest.fixture
async def http(config: RemedyConfig, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, reporter=RecordingReporter(), client=client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        yield http


def pull_request_closed(
    incident_id: str, *, merged: bool = True, repo: str = "acme/shop", head_repo: str | None = None
) -> dict[str, Any]:
    """The parts of GitHub's pull_request event that matter, as GitHub sends them."""
    return {
        "action": "closed",
        "number": 7,
        "pull_request": {
            "number": 7,
            "state": "closed",
            "merged": merged,
            # GitHub fills it before a merge too (its test merge); only a merge's counts.
            "merge_commit_sha": MERGE_SHA,
            "head": {
                "ref": names.branch_for(incident_id),
                "repo": {"full_name": head_repo or repo},
            },
            "base": {"ref": "main", "repo": {"full_name": repo}},
            "title": "Fix KeyError\n\x1b[31m in total",
        },
        "repository": {"full_name": repo},
        "sender": {"login": "octocat"},
    }


def delivery(
    payload: dict[str, Any] | bytes,
    *,
    event: str = "pull_request",
    secret: str = WEBHOOK_SECRET,
    signature: str | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """httpx arguments for a delivery signed as GitHub signs it: HMAC-SHA256 of the raw body."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}" if signature is None else signature,
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/abc123",
    }
    if signature == "":
        del headers["X-Hub-Signature-256"]
    return {"content": body, "headers": headers}


# ---------------------------------------------------------------------------- the webhook


async def test_a_merged_pull_request_tells_its_incident_with_the_merge_commit(
    http: httpx.AsyncClient, incidents: Any
) -> None:
    incident = await incidents()
    reply = await http.post("/github/webhook", **delivery(pull_request_closed(incident.id)))
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "incident_id": incident.id,
        "signal": "change",
        "state": "merged",
        "merge_commit": MERGE_SHA,
    }
    heard = await incident.heard()
    assert heard.changes == [ChangeSignal(state="merged", merge_commit=MERGE_SHA, source="webhook")]


async def test_a_pull_request_closed_unmerged_tells_closed_without_a_commit(
    http: httpx.AsyncClient, incidents: Any
) -> None:
    incident = await incidents()
    payload = pull_request_closed(incident.id, merged=False)
    reply = await http.post("/github/webhook", **delivery(payload))
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "closed" and reply.json()["merge_commit"] is None
    assert (await incident.heard()).changes == [ChangeSignal(state="closed", source="webhook")]


async def test_ping_is_answered(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/github/webhook",
        **delivery({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping"),
    )
    assert reply.status_code == 200 and reply.json() == {"pong": True}


@pytest.mark.parametrize(
    ("signature", "phrase"),
    [
        ("", "missing X-Hub-Signature-256"),
        ("sha1=0123", "missing X-Hub-Signature-256"),
        ("sha256=" + "0" * 64, "X-Hub-Signature-256 does not match the body"),
    ],
)
async def test_an_unsigned_or_badly_signed_delivery_is_401_and_moves_nothing(
    http: httpx.AsyncClient, incidents: Any, signature: str, phrase: str
) -> None:
    incident = await incidents()
    reply = await http.post(
        "/github/webhook", **delivery(pull_request_closed(incident.id), signature=signature)
    )
    assert reply.status_code == 401, reply.text
    assert phrase in reply.json()["error"] and WEBHOOK_SECRET not in reply.text
    assert (await incident.heard()).changes == []


async def test_another_secret_is_401_and_an_unset_one_503_naming_the_key(
    http: httpx.AsyncClient, incidents: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident = await incidents()
    payload = pull_request_closed(incident.id)
    wrong = await http.post("/github/webhook", **delivery(payload, secret="not the secret"))
    assert wrong.status_code == 401, wrong.text
    assert "GITHUB_WEBHOOK_SECRET" in wrong.json()["error"]

    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET")
    unset = await http.post("/github/webhook", **delivery(payload))
    assert unset.status_code == 503, unset.text
    message = unset.json()["error"]
    assert "GITHUB_WEBHOOK_SECRET" in message and "webhook_secret_env" in message
    assert (await incident.heard()).changes == []


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("another repository", "is not services."),
        ("a fork's branch", "the branch of this pull request is not in acme/shop"),
        ("another service's repository", "is not services."),
        ("a branch of people", "is not a remedy/<incident> branch"),
        ("opened, not closed", "only a closed one moves an incident"),
        ("a push event", "pull_request events only"),
        ("no such incident", "no incident"),
        ("a service without github_repo", "is not services."),
    ],
)
async def test_what_is_not_remedys_is_202_ignored_and_moves_nothing(
    http: httpx.AsyncClient, incidents: Any, case: str, phrase: str
) -> None:
    incident = await incidents()
    payload = pull_request_closed(incident.id)
    event = "pull_request"
    if case == "another repository":
        payload = pull_request_closed(incident.id, repo="mallory/shop")
    elif case == "a fork's branch":
        payload = pull_request_closed(incident.id, head_repo="mallory/shop")
    elif case == "another service's repository":
        payload = pull_request_closed(incident.id, repo="acme/billing")
    elif case == "a branch of people":
        payload["pull_request"]["head"]["ref"] = "feature/fix-total"
    elif case == "opened, not closed":
        payload["action"] = "opened"
    elif case == "a push event":
        event = "push"
    elif case == "no such incident":
        payload = pull_request_closed(f"{SHOP}-{'0' * 16}-{'0' * 8}")
    elif case == "a service without github_repo":
        local = await incidents(service=LOCAL)
        payload = pull_request_closed(local.id, repo="acme/shop")
    reply = await http.post("/github/webhook", **delivery(payload, event=event))
    assert reply.status_code == 202, reply.text
    assert phrase in reply.json()["ignored"], reply.json()
    assert (await incident.heard()).changes == []


async def test_bad_bodies_get_4xx(
    http: httpx.AsyncClient, incidents: Any, config: RemedyConfig
) -> None:
    incident = await incidents()
    not_json = await http.post("/github/webhook", **delivery(b'{"action": "closed",'))
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    form = await http.post(
        "/github/webhook",
        **delivery(b"payload=%7B%7D", content_type="application/x-www-form-urlencoded"),
    )
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    no_head = pull_request_closed(incident.id)
    del no_head["pull_request"]["head"]
    missing = await http.post("/github/webhook", **delivery(no_head))
    assert missing.status_code == 400 and "pull_request.head.ref" in missing.json()["error"]
    big = pull_request_closed(incident.id)
    big["pull_request"]["body"] = "x" * config.github.webhook_max_bytes
    too_big = await http.post("/github/webhook", **delivery(big))
    assert too_big.status_code == 413, too_big.text
    assert (await incident.heard()).changes == []


async def test_an_ended_incident_is_ignored(http: httpx.AsyncClient, incidents: Any) -> None:
    incident = await incidents()
    await incident.handle.signal(ListeningIncident.finish)
    await incident.handle.result()
    reply = await http.post("/github/webhook", **delivery(pull_request_closed(incident.id)))
    assert reply.status_code == 202, reply.text
    assert reply.json() == {
        "ignored": f"incident {incident.id} has ended",
        "incident_id": incident.id,
    }


async def test_payload_text_reaches_the_log_escaped_and_clipped(
    http: httpx.AsyncClient, incidents: Any, caplog: pytest.LogCaptureFixture
) -> None:
    incident = await incidents()
    repo = "mallory/shop\nINFO forged line " + "y" * 300
    caplog.set_level(logging.INFO, logger="starter.fix_intake")
    reply = await http.post(
        "/github/webhook", **delivery(pull_request_closed(incident.id, repo=repo))
    )
    assert reply.status_code == 202
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "mallory/shop\\nINFO forged line" in logged and "\nINFO forged" not in logged
    assert "y" * 130 not in logged


# ---------------------------------------------------------------------------- deploys


async def remedy(*args: str) -> Result:
    """Run a CLI command in a thread: it owns its own event loop, as in a shell."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


def bearer(token: str = SHOP_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_deploy_tells_the_services_incidents_that_follow_a_change(
    http: httpx.AsyncClient, client: Client, incidents: Any
) -> None:
    opened = await incidents()
    merged = await incidents(phase=Phase.FIX_MERGED)
    waiting = await incidents(phase=Phase.AWAITING_APPROVAL)
    deployed = await incidents(phase=Phase.FIX_DEPLOYED)
    other_service = await incidents(service=BILLING)
    await listed(client, opened, merged, waiting, deployed, other_service)

    reply = await http.post(
        "/v1/deploys", json={"service": SHOP, "release": "v1.4.2"}, headers=bearer()
    )
    assert reply.status_code == 202, reply.text
    assert reply.json() == {
        "service": SHOP,
        "release": "v1.4.2",
        "incidents": sorted([opened.id, merged.id]),
    }
    for told in (opened, merged):
        assert (await told.heard()).deploys == [DeploySignal(release="v1.4.2", source="deploy")]
    for untold in (waiting, deployed, other_service):
        assert (await untold.heard()).deploys == []


@pytest.mark.parametrize(
    ("headers", "body", "status", "phrase"),
    [
        ({}, {"service": SHOP, "release": "v1"}, 401, "missing bearer token"),
        (bearer("not-a-token"), {"service": SHOP, "release": "v1"}, 401, "invalid intake token"),
        (bearer(BILLING_TOKEN), {"service": SHOP, "release": "v1"}, 403, "may not announce"),
        (bearer(), {"service": SHOP}, 422, "release: Field required"),
        (bearer(), {"service": SHOP, "release": "--upload-pack=x"}, 422, "release: String"),
        (bearer(), {"service": SHOP, "release": "v" * 201}, 422, "release: String"),
        (bearer(), {"service": "Not A Service", "release": "v1"}, 422, "service: String"),
        (bearer(), b'{"service": ', 400, "not valid JSON"),
        (bearer(), b"x" * 5000, 413, "exceeds the 4096-byte limit"),
    ],
)
async def test_a_bad_deploy_is_4xx_naming_the_problem_and_tells_nobody(
    http: httpx.AsyncClient,
    client: Client,
    incidents: Any,
    headers: dict[str, str],
    body: dict[str, Any] | bytes,
    status: int,
    phrase: str,
) -> None:
    incident = await incidents()
    await listed(client, incident)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await http.post(
        "/v1/deploys", content=content, headers={**headers, "Content-Type": "application/json"}
    )
    assert reply.status_code == status, reply.text
    assert phrase in reply.json()["error"], reply.json()
    assert (await incident.heard()).deploys == []


async def test_remedy_deployed_tells_the_incidents_and_names_them(
    client: Client, incidents: Any, tmp_path: Path
) -> None:
    incident = await incidents()
    await listed(client, incident)
    config = tmp_path / "remedy.toml"
    config.write_text(
        f'home = "{tmp_path / "state"}"\n'
        f'[temporal]\naddress = "{client.service_client.config.target_host}"\n'
        f'[services.{SHOP}]\nrepo = "{tmp_path / "shop.git"}"\n'
        f'[services.{BILLING}]\nrepo = "{tmp_path / "billing.git"}"\n'
    )
    sha = "a" * 40
    as_json = await remedy("deployed", SHOP, sha, "--json", "--config", str(config))
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == {
        "service": SHOP,
        "release": sha,
        "incidents": [incident.id],
    }
    text = await remedy("deployed", SHOP, "v2", "--config", str(config))
    assert text.exit_code == 0, text.output
    assert text.output == f"told 1 incident(s) of {SHOP} that v2 runs:\n  {incident.id}\n"
    assert (await incident.heard()).deploys == [
        DeploySignal(release=sha, source="deploy"),
        DeploySignal(release="v2", source="deploy"),
    ]

    nobody = await remedy("deployed", BILLING, "v2", "--config", str(config))
    assert nobody.exit_code == 0 and "no incident of" in nobody.output
    unknown = await remedy("deployed", "nosuch", "v2", "--config", str(config))
    assert unknown.exit_code == 2 and "no service 'nosuch' in [services]" in unknown.output
    bad = await remedy("deployed", SHOP, "--config", str(config), "--", "-rf")
    assert bad.exit_code == 2 and "RELEASE '-rf'" in bad.output, bad.output


# ---------------------------------------------------------------------------- the reporter


def reporter_for(client: Client, queue: str) -> TemporalReporter:
    return TemporalReporter(
        client, task_queue=queue, coalesce_interval_s=0.05, ui_url="http://ui/namespaces/default"
    )


def report_of(start: IncidentStart, release: str | None) -> IncidentStart:
    return start.model_copy(update={"event": start.event.model_copy(update={"release": release})})


async def heard_of(client: Client, workflow_id: str) -> Heard:
    handle = client.get_workflow_handle(workflow_id)
    return await handle.query(ListeningIncident.heard)


def counted(heard: Heard) -> tuple[int, dict[str, int]]:
    """Reports and per-release counts over all the batches an incident heard."""
    releases: dict[str, int] = {}
    for batch in heard.batches:
        for release, count in batch.releases.items():
            releases[release] = releases.get(release, 0) + count
    return sum(batch.count for batch in heard.batches), releases


async def test_batches_count_their_reports_per_release(client: Client, queue: str) -> None:
    reporter = reporter_for(client, queue)
    start = make_start(service=SHOP)
    workflow_id = names.workflow_id_for(SHOP, start.fingerprint)
    await reporter.report(report_of(start, "r1"))
    for release in ("r1", "r2", "r2", None, "r2"):
        await reporter.report(report_of(start, release))
    await reporter.close()
    heard = await heard_of(client, workflow_id)
    assert heard.occurrences == 1
    assert counted(heard) == (5, {"r1": 1, "r2": 3})
    await client.get_workflow_handle(workflow_id).signal(ListeningIncident.finish)


class _FirstOccurrenceFails(Interceptor):
    """Temporal refuses the first `occurrence` signal (an outage), then takes them."""

    def __init__(self) -> None:
        self.refused = 0

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        interceptor = self

        class Refusing(OutboundInterceptor):
            async def signal_workflow(self, input: SignalWorkflowInput) -> None:
                if input.signal == "occurrence" and not interceptor.refused:
                    interceptor.refused += 1
                    raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
                await super().signal_workflow(input)

        return Refusing(next)


async def test_a_failed_batch_keeps_its_release_counts(client: Client, queue: str) -> None:
    refusing = _FirstOccurrenceFails()
    options = client.config()
    options["interceptors"] = [refusing]
    reporter = reporter_for(Client(**options), queue)
    start = make_start(service=SHOP)
    workflow_id = names.workflow_id_for(SHOP, start.fingerprint)
    await reporter.report(report_of(start, "r1"))
    for release in ("r1", "r2"):
        await reporter.report(report_of(start, release))

    async def delivered() -> bool:
        return bool((await heard_of(client, workflow_id)).batches)

    await eventually(delivered, timeout_s=10)
    await reporter.report(report_of(start, "r3"))
    await reporter.close()
    assert refusing.refused == 1
    assert counted(await heard_of(client, workflow_id)) == (3, {"r1": 1, "r2": 1, "r3": 1})
    await client.get_workflow_handle(workflow_id).signal(ListeningIncident.finish)


async def test_a_batch_that_opens_the_next_incident_takes_its_release_counts_along(
    client: Client, queue: str
) -> None:
    reporter = reporter_for(client, queue)
    start = make_start(service=SHOP)
    workflow_id = names.workflow_id_for(SHOP, start.fingerprint)
    await reporter.report(report_of(start, "r1"))
    handle = client.get_workflow_handle(workflow_id)
    first_run = (await handle.describe()).run_id
    await handle.signal(ListeningIncident.finish)
    await handle.result()
    # These find the incident closed: their batch starts the next one with their count.
    for release in ("r1", "r2", "r2"):
        await reporter.report(report_of(start, release))

    async def reopened() -> bool:
        return (await handle.describe()).run_id != first_run

    await eventually(reopened, timeout_s=10)
    await reporter.report(report_of(start, "r3"))
    await reporter.close()
    heard = await heard_of(client, workflow_id)
    assert heard.occurrences == 3
    assert counted(heard) == (1, {"r3": 1})
    await client.get_workflow_handle(workflow_id).signal(ListeningIncident.finish)


async def test_the_first_report_of_a_release_announces_it_once(
    client: Client, queue: str, incidents: Any
) -> None:
    following = await incidents()
    await listed(client, following)
    reporter = reporter_for(client, queue)
    start = make_start(service=SHOP)
    for _ in range(3):
        await reporter.report(report_of(start, "r-new"))

    async def told() -> list[DeploySignal]:
        return (await following.heard()).deploys

    assert await eventually(told, timeout_s=10) == [DeploySignal(release="r-new", source="report")]
    await reporter.report(report_of(start, "r-new"))
    await reporter.close()
    assert reporter.releases_announced == 1
    assert (await following.heard()).deploys == [DeploySignal(release="r-new", source="report")]
    await client.get_workflow_handle(names.workflow_id_for(SHOP, start.fingerprint)).signal(
        ListeningIncident.finish
    )


class _NoVisibility(Interceptor):
    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        class Failing(OutboundInterceptor):
            def list_workflows(self, input: ListWorkflowsInput) -> WorkflowExecutionAsyncIterator:
                raise RPCError("visibility is down", RPCStatusCode.UNAVAILABLE, b"")

        return Failing(next)


async def test_an_announcement_that_fails_neither_delays_nor_fails_the_report(
    client: Client, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = client.config()
    options["interceptors"] = [_NoVisibility()]
    reporter = reporter_for(Client(**options), queue)
    start = make_start(service=SHOP)
    reply = await reporter.report(report_of(start, "r-down"))
    assert not reply.deduplicated

    async def logged() -> bool:
        return "could not announce release 'r-down'" in caplog.text

    await eventually(logged, timeout_s=10)
    assert reporter.releases_announced == 0
    await reporter.close()
    await asyncio.sleep(0)
    await client.get_workflow_handle(names.workflow_id_for(SHOP, start.fingerprint)).signal(
        ListeningIncident.finish
    )
