"""The HTTP intake: every kind of bad input gets a clear 4xx and starts nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from remedy.config import RemedyConfig, ServiceConfig
from remedy.models import IncidentStart, IntakeResponse
from starter.app import create_app

SHOP_TOKEN = "shop-token-0123456789"
BILLING_TOKEN = "billing-token-9876543210"


class RecordingReporter:
    def __init__(self) -> None:
        self.starts: list[IncidentStart] = []

    async def report(self, start: IncidentStart) -> IntakeResponse:
        self.starts.append(start)
        return IntakeResponse(
            incident_id=f"{start.service}-{start.fingerprint}-00000000",
            workflow_id=f"incident-{start.service}-{start.fingerprint}",
            deduplicated=len(self.starts) > 1,
            occurrences=len(self.starts),
            ui_url="http://ui",
        )


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
    app = create_app(config, reporter=reporter)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


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
        (auth(BILLING_TOKEN), 403, "belongs to service 'billing'"),
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
        (json.dumps(event(service="unknown")).encode(), 404, "unknown service 'unknown'"),
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
