"""Intakes for the reporting side's tests (remedy_client and `remedy watch`).

`RealIntake` is Remedy's own intake app (starter.app.create_app) served by uvicorn on a
loopback port in a thread, with a reporter that records the IncidentStart it is handed:
what the intake saw after its own validation, parsing and redaction.

`IntakeReceiver` is a bare POST /v1/errors that records bodies and can answer 429, 5xx,
hang or drop the connection on demand (tests/fakes/loopback_thread.py faults), for the
retry and back-pressure paths the real app has no reason to produce.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from aiohttp import web

from remedy.config import RemedyConfig
from remedy.models import IncidentStart, IntakeResponse
from tests.fakes.loopback_thread import LoopbackServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RecordingReporter:
    """A Reporter (starter.reporter) that keeps what it is given instead of starting workflows."""

    def __init__(self) -> None:
        self.starts: list[IncidentStart] = []
        self._lock = threading.Lock()

    async def report(self, start: IncidentStart) -> IntakeResponse:
        with self._lock:
            self.starts.append(start)
            count = len(self.starts)
        return IntakeResponse(
            incident_id=f"{start.service}-{start.fingerprint}-00000000",
            workflow_id=f"incident-{start.service}-{start.fingerprint}",
            deduplicated=count > 1,
            occurrences=count,
            ui_url="http://ui.invalid",
        )

    def wait_for(self, count: int, timeout: float = 15.0) -> list[IncidentStart]:
        deadline = time.monotonic() + timeout
        while len(self.starts) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the intake received {len(self.starts)} report(s) in {timeout}s, "
                    f"expected {count}"
                )
            time.sleep(0.02)
        return list(self.starts)


class RealIntake:
    """starter.app's FastAPI intake on 127.0.0.1:<port>, in a thread.

    `raw` keeps the request bodies exactly as they arrived, before the intake's own
    redaction, so a test can tell what the client itself sent.
    """

    def __init__(self, config: RemedyConfig) -> None:
        from starter.app import create_app

        self.reporter = RecordingReporter()
        self.raw: list[bytes] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(config, reporter=self.reporter)

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != "/v1/errors":
                await app(scope, receive, send)
                return
            chunks: list[bytes] = []

            async def receive_and_keep() -> Any:
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                return message

            await app(scope, receive_and_keep, send)
            self.raw.append(b"".join(chunks))

        server_config = uvicorn.Config(
            recording, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(server_config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> RealIntake:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("the intake did not start within 10s")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@dataclass
class Received:
    body: dict[str, Any]
    authorization: str
    at: float


class IntakeReceiver(LoopbackServer):
    """POST /v1/errors that answers 202 and records, unless a fault says otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.attempts: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/errors", self._errors)

    async def _errors(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        fault = self.take_fault("errors")
        if fault is not None and fault.mode == "respond":
            return web.json_response(
                fault.body or {"error": "injected"}, status=fault.status, headers=fault.headers
            )
        body = json.loads(await request.read())
        with self._lock:
            self.received.append(
                Received(body, request.headers.get("Authorization", ""), time.monotonic())
            )
        await self.after_write(request, fault)
        return web.json_response(
            {
                "incident_id": f"{body.get('service')}-0000000000000000-00000000",
                "workflow_id": f"incident-{body.get('service')}-0000000000000000",
                "deduplicated": False,
                "occurrences": 1,
                "ui_url": "http://ui.invalid",
            },
            status=202,
        )

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.body for item in self.received]
