"""The HTTP intake: POST /v1/errors, GET /v1/incidents/{id}, health, OpenAPI at /docs.

Every rejection happens before anything starts: size, token, JSON, schema, service.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from temporalio.client import Client
from temporalio.service import RPCError

from remedy import names
from remedy.config import RemedyConfig, secret
from remedy.intake import build_incident_start
from remedy.models import ErrorEvent, IncidentStatus, IntakeResponse
from starter.incidents import IncidentNotFound, incident_status
from starter.reporter import Reporter, TemporalReporter
from starter.slack import mount_slack
from starter.temporal_client import connect_in_background

log = logging.getLogger(__name__)


class HTTPProblem(Exception):
    """A 4xx/5xx with a message that names what is wrong."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def _problem_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPProblem)
    return JSONResponse(
        {"error": exc.message, **exc.extra}, status_code=exc.status, headers=exc.headers
    )


# ---------------------------------------------------------------------------- dependencies


def get_config(request: Request) -> RemedyConfig:
    config: RemedyConfig = request.app.state.config
    return config


def get_reporter(request: Request) -> Reporter:
    reporter: Reporter | None = request.app.state.reporter
    if reporter is None:
        raise HTTPProblem(
            503, "intake is starting: not connected to Temporal yet", headers={"Retry-After": "1"}
        )
    return reporter


def get_client(request: Request) -> Client:
    client: Client | None = request.app.state.client
    if client is None:
        raise HTTPProblem(503, "not connected to Temporal", headers={"Retry-After": "1"})
    return client


ConfigDep = Annotated[RemedyConfig, Depends(get_config)]


def authenticated_service(request: Request, config: ConfigDep) -> str:
    """The service whose intake token the request carries (401 when none matches)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(
            401,
            "missing bearer token: send 'Authorization: Bearer <the service's intake token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    presented = token.strip().encode()
    matched = None
    for name, service in config.services.items():
        expected = secret(service.intake_token_env)
        # Compare against every service so timing does not reveal which one matched.
        if expected and hmac.compare_digest(presented, expected.encode()):
            matched = name
    if matched is None:
        raise HTTPProblem(
            401,
            "invalid intake token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return matched


# ---------------------------------------------------------------------------- body handling


async def _read_capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPProblem(400, "Content-Length is not a number") from None
        if size > limit:
            raise HTTPProblem(
                413, f"body of {size} bytes exceeds the {limit}-byte limit", limit=limit
            )
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise HTTPProblem(413, f"body exceeds the {limit}-byte limit", limit=limit)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; nothing was started.
        raise HTTPProblem(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


def _parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise HTTPProblem(400, "empty body: send a JSON error event (see /docs)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(400, f"body is not UTF-8 text (byte {exc.start} is invalid)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPProblem(
            400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, f"body must be a JSON object, not {type(data).__name__}")
    return data


def _validation_problem(exc: ValidationError) -> HTTPProblem:
    fields = [
        {"field": ".".join(str(p) for p in item["loc"]) or "(body)", "message": item["msg"]}
        for item in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return HTTPProblem(422, f"invalid error event: {summary}", fields=fields)


# ---------------------------------------------------------------------------- routes

router = APIRouter()


@router.post(
    "/v1/errors",
    status_code=202,
    response_model=IntakeResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ErrorEvent.model_json_schema()}},
        }
    },
    summary="Report an error; opens or joins the incident for its fingerprint",
)
async def report_error(request: Request, config: ConfigDep) -> JSONResponse:
    token_service = authenticated_service(request, config)
    body = await _read_capped_body(request, config.intake.max_body_bytes)
    data = _parse_json_object(body)
    try:
        event = ErrorEvent.model_validate(data)
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    if event.service not in config.services:
        raise HTTPProblem(
            404, f"unknown service {event.service!r}: add [services.{event.service}] to remedy.toml"
        )
    if event.service != token_service:
        raise HTTPProblem(
            403, f"this token belongs to service {token_service!r}, not {event.service!r}"
        )
    reporter = get_reporter(request)
    start = build_incident_start(event, config)
    try:
        response = await reporter.report(start)
    except Exception:
        log.exception("could not hand %s/%s to Temporal", start.service, start.fingerprint)
        raise HTTPProblem(
            503,
            "could not reach Temporal; the report was not recorded, retry",
            headers={"Retry-After": "2"},
        ) from None
    return JSONResponse(response.model_dump(mode="json"), status_code=202)


@router.get(
    "/v1/incidents/{incident_id}",
    response_model=IncidentStatus,
    summary="The incident's status (the workflow's `status` query)",
)
async def get_incident(incident_id: str, request: Request, config: ConfigDep) -> JSONResponse:
    token_service = authenticated_service(request, config)
    client = get_client(request)
    try:
        status = await incident_status(client, incident_id)
    except IncidentNotFound as exc:
        raise HTTPProblem(404, str(exc)) from None
    except RPCError as exc:
        # The status query needs a worker; a busy or absent one is a retry, not a crash.
        raise HTTPProblem(
            503,
            f"incident {incident_id} did not answer its status query ({exc.message}): "
            "is a worker running?",
            headers={"Retry-After": "2"},
        ) from None
    if status.service != token_service:
        raise HTTPProblem(
            403, f"this token belongs to service {token_service!r}, not {status.service!r}"
        )
    return JSONResponse(status.model_dump(mode="json"))


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Temporal reachable")
async def readyz(request: Request) -> JSONResponse:
    client: Client | None = request.app.state.client
    if request.app.state.reporter is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    if client is not None:
        try:
            await client.service_client.check_health()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "temporal": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})


# ---------------------------------------------------------------------------- the app


def create_app(
    config: RemedyConfig, reporter: Reporter | None = None, client: Client | None = None
) -> FastAPI:
    """The intake. Without a reporter it connects to Temporal in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: TemporalReporter | None = None

        def connected(client: Client) -> None:
            # Until now /readyz and every route that needs Temporal answered 503.
            nonlocal owned
            app.state.client = client
            owned = TemporalReporter(
                client,
                task_queue=config.temporal.task_queue,
                coalesce_interval_s=config.intake.coalesce_interval_s,
                ui_url=names.ui_namespace_url(config.temporal.ui_url, config.temporal.namespace),
                index_task_queue=config.temporal.index_task_queue,
            )
            app.state.reporter = owned

        # Temporal may be down or not up yet: the intake starts anyway and keeps trying.
        connecting = None
        if app.state.reporter is None:
            connecting = connect_in_background(config, connected)
        if slack is not None:
            await slack.start()
        try:
            yield
        finally:
            if connecting is not None:
                connecting.cancel()
            if slack is not None:
                await slack.stop()
            if owned is not None:
                await owned.close()

    app = FastAPI(
        title="Remedy intake",
        version="0.1.0",
        description="Errors in, incidents out. See DESIGN.md for the event schema.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.reporter = reporter
    app.state.client = client
    app.add_exception_handler(HTTPProblem, _problem_response)
    app.include_router(router)
    # Approve/Reject clicks arrive at POST /slack/events (or over Socket Mode).
    slack = mount_slack(app, config, lambda: app.state.client)
    return app
