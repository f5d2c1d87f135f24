"""The HTTP intake: every kind of bad input gets a clear 4xx and starts nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from remedy.config import RemedyConfig, ServiceConfig
from starter.app import create_app
from tests.intake_harness import RecordingReporter

SHOP_TOKEN = "shop-token-0123456789"
BILLING_TOKEN = "billing-token-9876543210"


def real_traceback(tmp_path: Path) -> str:
    script = tmp_path / "app" / "cart.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("def total(order):\n    return order['sku'] * 2\n\ntotal({'price': 3})\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert "Traceback" in done.stderr
    return done.stderr


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("TEST_SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("TEST_BILLING_TOKEN", BILLING_TOKEN)
    config = RemedyConfig(
        services={
            "shop": ServiceConfig(repo="/nonexistent/shop", intake_token_env="TEST_SHOP_TOKEN"),
            "billing": ServiceConfig(
                repo="/nonexistent/billing", intake_token_env="TEST_BILLING_TOKEN"
            ),
        }
    )
    config.intake.max_body_bytes = 4096
    return config


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
async def http(
    config: RemedyConfig, reporter: RecordingReporter
) -> AsyncIterator[httpx.AsyncClient]:
    async with intake_client(create_app(config, reporter=reporter)) as client:
        yield client


def intake_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")


def auth(token: str = SHOP_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "service": "shop",
        "release": "abc1234",
        "error": {"type": "KeyError", "message": "'sku'"},
        "frames": [{"file": "app/cart.py", "line": 2, "function": "total"}],
    }
    body.update(overrides)
    return body


async def test_accepts_a_valid_event_and_redacts_before_anything_else(
    http: httpx.AsyncClient, reporter: RecordingReporter, tmp_path: Path
) -> None:
    traceback_text = real_traceback(tmp_path)
    body = event(
        frames=[],
        traceback=traceback_text,
        error={
            "type": "KeyError",
            "message": "'sku' password=hunter2 for postgres://app:s3cret@db/x",
        },
    )
    response = await http.post("/v1/errors", json=body, headers=auth())
    assert response.status_code == 202, response.text
    reply = response.json()
    assert set(reply) == {"incident_id", "workflow_id", "deduplicated", "occurrences", "ui_url"}
    assert reply["deduplicated"] is False and reply["occurrences"] == 1
    [start] = reporter.starts
    assert "hunter2" not in start.model_dump_json() and "s3cret" not in start.model_dump_json()
    assert len(start.fingerprint) == 16
    functions = [frame.function for frame in start.event.frames]
    assert functions[-1] == "total"
    assert start.event.frames[-1].file.endswith("app/cart.py")
    assert start.event.frames[-1].line == 2


@pytest.mark.parametrize(
    ("headers", "status", "phrase"),
    [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Basic abc"}, 401, "missing bearer token"),
        (auth("not-a-token"), 401, "invalid intake token"),
        (auth(BILLING_TOKEN), 403, "this token may not report for service 'shop'"),
    ],
)
async def test_rejects_bad_credentials(
    http: httpx.AsyncClient,
    reporter: RecordingReporter,
    headers: dict[str, str],
    status: int,
    phrase: str,
) -> None:
    response = await http.post("/v1/errors", json=event(), headers=headers)
    assert response.status_code == status
    assert phrase in response.json()["error"]
    assert reporter.starts == []


@pytest.mark.parametrize(
    ("content", "status", "phrase"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage\x9c", 400, "not UTF-8"),
        (b"", 400, "empty body"),
        (b"[1, 2, 3]", 400, "must be a JSON object"),
        (json.dumps(event(service="Bad Name!")).encode(), 422, "service"),
        (json.dumps(event(error={"type": 5})).encode(), 422, "error.type"),
        (json.dumps(event(error={"message": "x"})).encode(), 422, "error.type: Field required"),
        (json.dumps(event(frames=[{"file": "a.py", "line": "x"}])).encode(), 422, "frames.0.line"),
        (json.dumps(event(frames=[])).encode(), 422, "one of 'traceback' or 'frames'"),
        # Unknown and foreign services get the same answer: a token holder learns nothing.
        (
            json.dumps(event(service="unknown")).encode(),
            403,
            "may not report for service 'unknown'",
        ),
        (
            json.dumps(event(service="billing")).encode(),
            403,
            "may not report for service 'billing'",
        ),
        (b"[" * 1000 + b"]" * 1000, 400, "body: JSON nested deeper than 64 levels"),
        (b'{"a": ' + b"[" * 3000, 400, "body: JSON nested deeper than 64 levels"),
        (json.dumps(event(tags={"\ud800": "x"})).encode(), 400, "half a UTF-16 surrogate"),
        (b"{" + b'"pad": "' + b"x" * 8000 + b'"}', 413, "exceeds the 4096-byte limit"),
    ],
)
async def test_rejects_bad_bodies_and_starts_nothing(
    http: httpx.AsyncClient,
    reporter: RecordingReporter,
    content: bytes,
    status: int,
    phrase: str,
) -> None:
    response = await http.post(
        "/v1/errors", content=content, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]
    assert reporter.starts == []


async def test_caps_a_streamed_body_without_content_length(
    http: httpx.AsyncClient, reporter: RecordingReporter
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = await http.post("/v1/errors", content=chunks(), headers=auth())
    assert response.status_code == 413
    assert reporter.starts == []


async def test_validation_error_lists_every_field(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/errors", json={"service": "shop", "error": {}, "frames": "x"}, headers=auth()
    )
    assert response.status_code == 422
    fields = {item["field"] for item in response.json()["fields"]}
    assert {"error.type", "frames"} <= fields


async def test_health_and_docs(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200
    schema = (await http.get("/openapi.json")).json()
    assert "/v1/errors" in schema["paths"] and "/v1/incidents/{incident_id}" in schema["paths"]
    assert (await http.get("/docs")).status_code == 200


async def test_nesting_within_the_budget_is_accepted(
    http: httpx.AsyncClient, reporter: RecordingReporter
) -> None:
    extra = json.dumps(event(context={"a": [[[[[[[[0, "]]]]]]]]]]"]]]]]]]]})).encode()
    response = await http.post("/v1/errors", content=extra, headers=auth())
    assert response.status_code == 202, response.text
    assert len(reporter.starts) == 1


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"traceback": "x" * 200_001}, "traceback: 200,001 characters, over the limit of 200,000"),
        ({"error": {"type": "E", "message": "m" * 20_000}}, "error.message: 20,000 characters"),
        ({"frames": [{"file": "a.py"}] * 501}, "frames: 501 frames, over the limit of 500"),
        ({"tags": {str(n): "v" for n in range(65)}}, "tags: 65 tags, over the limit of 64"),
        ({"tags": {"region": "x" * 2000}}, "tags.region: 2,000 characters"),
        ({"tags": {"k" * 2000: "x"}}, "tags: a key of 2,000 characters"),
    ],
)
async def test_a_field_over_its_budget_gets_413_naming_it(
    http: httpx.AsyncClient,
    config: RemedyConfig,
    reporter: RecordingReporter,
    overrides: dict[str, object],
    phrase: str,
) -> None:
    config.intake.max_body_bytes = 1_000_000
    response = await http.post("/v1/errors", json=event(**overrides), headers=auth())
    assert response.status_code == 413, response.text
    assert phrase in response.json()["error"]
    assert reporter.starts == []


async def test_a_service_without_token_is_the_intakes_fault_and_said_at_start(
    config: RemedyConfig,
    reporter: RecordingReporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("TEST_BILLING_TOKEN")
    app = create_app(config, reporter=reporter)
    with caplog.at_level(logging.WARNING, logger="starter.app"):
        async with app.router.lifespan_context(app), intake_client(app) as http:
            body = event(service="billing")
            reply = await http.post("/v1/errors", json=body, headers=auth("some-token"))
            assert reply.status_code == 401
            assert reply.json()["error"] == (
                "the intake has no token for service 'billing': "
                "set TEST_BILLING_TOKEN where `remedy serve` runs"
            )
            incident = "billing-0123456789abcdef-01234567"
            reply = await http.get(f"/v1/incidents/{incident}", headers=auth("some-token"))
            assert reply.status_code == 401 and "no token for service 'billing'" in reply.text
            # A service that has its token: the client's token is wrong, nothing more is said.
            reply = await http.post("/v1/errors", json=event(), headers=auth("some-token"))
            assert reply.json()["error"] == "invalid intake token"
    warnings = [r.getMessage() for r in caplog.records if "no token" in r.getMessage()]
    assert warnings == [
        "the intake has no token for service 'billing': its reports get 401 until "
        "$TEST_BILLING_TOKEN is set where `remedy serve` runs"
    ]
    assert reporter.starts == []


@pytest.mark.parametrize(
    ("incident", "status", "phrase"),
    [
        ("billing-0123456789abcdef-01234567", 403, "may not read incident"),
        ("nosuch-0123456789abcdef", 403, "may not read incident"),
        ("not an id", 404, "is not of the form"),
        ("shop-0123456789abcdef", 503, "not connected to Temporal"),
    ],
)
async def test_incident_ids_of_other_services_are_refused_alike(
    http: httpx.AsyncClient, incident: str, status: int, phrase: str
) -> None:
    reply = await http.get(f"/v1/incidents/{incident}", headers=auth())
    assert reply.status_code == status, reply.text
    assert phrase in reply.json()["error"]
    assert "shop" not in reply.json()["error"].replace(incident, "")


async def test_large_reports_are_built_by_the_parse_workers(
    config: RemedyConfig, reporter: RecordingReporter, tmp_path: Path
) -> None:
    config.intake.max_body_bytes = 1_000_000
    config.intake.inline_parse_bytes = 1_024
    app = create_app(config, reporter=reporter)
    padding = "\n".join(f"  log line {n} password=hunter{n}" for n in range(2000))
    body = event(frames=[], traceback=padding + "\n" + real_traceback(tmp_path))
    async with app.router.lifespan_context(app), intake_client(app) as http:
        replies = await asyncio.gather(
            *(http.post("/v1/errors", json=body, headers=auth()) for _ in range(3))
        )
    assert [r.status_code for r in replies] == [202, 202, 202]
    assert app.state.builder is None  # the pool was shut down with the app
    for start in reporter.starts:
        assert "hunter1" not in start.model_dump_json()
        assert start.event.frames[-1].function == "total"
