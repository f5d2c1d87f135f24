"""The HTTP intake: POST /v1/errors, GET /v1/incidents/{id}, health, OpenAPI at /docs; the
Sentry and OTLP routes (starter/sentry.py, starter/otlp.py) share its checks and its pool.

Every rejection happens before anything starts and before the costly part: token, size,
nesting depth, JSON, per-field sizes, schema, service. Only then are the report's redaction
and traceback parsing done, in worker processes for large reports (`IncidentBuilder`); a
body the service sent before skips all of it after the token and size checks
(starter/recent_reports.py), so a storm costs about what a bare endpoint does.
About 450 lines: the routes, the checks they share and the pool stay on one screen each.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from remedy import metrics, names
from remedy.config import RemedyConfig, secret
from remedy.intake import (
    build_incident_start,
    has_lone_surrogate,
    nested_deeper_than,
    oversized_field,
)
from remedy.models import ErrorEvent, IncidentStart, IncidentStatus, IntakeResponse
from starter.incidents import IncidentNotFound, incident_status
from starter.metrics import mount_metrics
from starter.recent_reports import RecentReports
from starter.reporter import Reporter, TemporalReporter
from starter.request_body import BodyRefused, read_capped_body
from starter.slack import mount_slack
from starter.temporal_client import connect_in_background

log = logging.getLogger(__name__)
# How long a report may wait for Temporal before the sender is told to retry.
REPORT_DEADLINE_S = 5.0


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


def _problem_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPProblem)
    if request.method == "POST":  # a report refused (errors, Sentry, OTLP, deploys)
        metrics.count_rejected_report(exc.status)
    return JSONResponse(
        {"error": exc.message, **exc.extra}, status_code=exc.status, headers=exc.headers
    )


# ---------------------------------------------------------------------------- dependencies


async def get_config(request: Request) -> RemedyConfig:
    # async: FastAPI runs a plain `def` dependency on a thread, a hop per request that cost
    # the intake more than everything else it does for a repeated report (bench/intake_storm.py).
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


def presented_token(request: Request) -> bytes:
    """The bearer token of the request (401 when there is none)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(
            401,
            "missing bearer token: send 'Authorization: Bearer <the service's intake token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip().encode()


def token_service(config: RemedyConfig, presented: bytes) -> str | None:
    """The service whose intake token this is, or None."""
    matched = None
    for name, service in config.services.items():
        expected = secret(service.intake_token_env)
        # Compare against every service so timing does not reveal which one matched.
        if expected and hmac.compare_digest(presented, expected.encode()):
            matched = name
    return matched


def services_without_token(config: RemedyConfig) -> list[str]:
    return [name for name, s in config.services.items() if not secret(s.intake_token_env)]


def invalid_token(config: RemedyConfig, claimed: str | None) -> HTTPProblem:
    """The 401 for a token that matches no service. When the request is for a service the
    intake holds no token for, the fault is the intake's, and the answer says how to fix it."""
    if claimed in services_without_token(config):
        env = config.services[claimed].intake_token_env
        where = (
            f"set {env}"
            if env
            else f"set services.{claimed}.intake_token_env in remedy.toml and export it"
        )
        return HTTPProblem(
            401,
            f"the intake has no token for service {claimed!r}: {where} where `remedy serve` runs",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return HTTPProblem(
        401, "invalid intake token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def foreign(what: str) -> HTTPProblem:
    # One answer whether the other service exists or not: a token holder learns nothing
    # about the services it cannot report for, nor which service its token is for.
    return HTTPProblem(403, f"this token may not {what}")


# ---------------------------------------------------------------------------- body handling


async def capped_body(request: Request, limit: int) -> bytes:
    try:
        return await read_capped_body(request, limit)
    except BodyRefused as refused:
        if refused.status == 413:
            raise HTTPProblem(413, refused.message, limit=limit) from None
        raise HTTPProblem(refused.status, refused.message) from None


def parse_json_object(body: bytes, max_depth: int, what: str = "body") -> dict[str, Any]:
    if not body:
        raise HTTPProblem(400, f"empty {what}: send a JSON error event (see /docs)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(400, f"{what} is not UTF-8 text (byte {exc.start} is invalid)") from None
    too_deep = HTTPProblem(400, f"{what}: JSON nested deeper than {max_depth} levels")
    if nested_deeper_than(body, max_depth):
        raise too_deep
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPProblem(
            400, f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # the scan above should have caught it; never a 500
        raise too_deep from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise HTTPProblem(400, f"{what} is not usable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, f"{what} must be a JSON object, not {type(data).__name__}")
    if has_lone_surrogate(body, data):
        raise HTTPProblem(400, f"{what}: a string escapes half a UTF-16 surrogate pair (\\ud800)")
    return data


def validation_problem(exc: ValidationError, what: str) -> HTTPProblem:
    """The 422 naming each field of `what` (an error event, a deploy) that is wrong."""
    fields = [
        {"field": ".".join(str(p) for p in item["loc"]) or "(body)", "message": item["msg"]}
        for item in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return HTTPProblem(422, f"invalid {what}: {summary}", fields=fields)


def service_of(config: RemedyConfig, workflow_id: str) -> str | None:
    """The configured service an incident's workflow id belongs to (it ends in the
    fingerprint; what comes before it names the service), or None."""
    fingerprint = workflow_id[-16:]
    return next(
        (
            name
            for name in config.services
            if names.workflow_id_for(name, fingerprint) == workflow_id
        ),
        None,
    )


# ---------------------------------------------------------------------------- the costly part

# Large reports waiting for a parse worker, per worker; beyond it the intake answers 429 with
# Retry-After (the client retries), so a flood of them queues neither memory nor latency.
WAITING_PER_PARSE_WORKER = 16
PARSE_NICENESS = 10


class IncidentBuilder:
    """`build_incident_start` for the intake: redaction and traceback parsing hold the GIL
    (0.2-0.8 s for a 200 KB traceback), so on the event loop one large report would delay
    every other request. Large reports go to a bounded pool of processes; small ones, the
    usual case, are built inline, cheaper than the hand-off (bench/intake_fuzz.py)."""

    def __init__(self, config: RemedyConfig) -> None:
        self._config = config
        self._inline_bytes = config.intake.inline_parse_bytes
        self._workers = config.intake.parse_workers
        self._max_waiting = self._workers * WAITING_PER_PARSE_WORKER
        self._waiting = 0
        self._pool = self._new_pool()
        self.built = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        # Forked from a clean server process, never from this one: the Temporal client's
        # threads make forking the intake itself unsafe. Processes start on first use.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["remedy.intake"])
        # At a lower priority: where cores are few, the event loop that answers normal
        # reports gets the CPU first, and large reports wait.
        return ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=os.nice, initargs=(PARSE_NICENESS,)
        )

    async def build(self, event: ErrorEvent, size: int) -> IncidentStart:
        """The incident start of an accepted event whose request body had `size` bytes."""
        self.built += 1
        if size <= self._inline_bytes:
            return build_incident_start(event, self._config)
        if self._waiting >= self._max_waiting:
            raise HTTPProblem(
                429,
                f"the intake is busy with {self._waiting} large reports; retry",
                headers={"Retry-After": "1"},
            )
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, build_incident_start, event, self._config)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): every queued report fails once, the
            # next ones get a fresh pool.
            log.warning("a parse worker died; starting a new pool")
            self._pool = self._new_pool()
            raise HTTPProblem(
                503, "the intake lost a parse worker; retry", headers={"Retry-After": "1"}
            ) from None
        finally:
            self._waiting -= 1

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


async def incident_start(request: Request, event: ErrorEvent, size: int) -> IncidentStart:
    builder: IncidentBuilder | None = request.app.state.builder
    if builder is None:  # an app whose lifespan did not run (tests on an ASGI transport)
        return build_incident_start(event, request.app.state.config)
    return await builder.build(event, size)


async def report_start(reporter: Reporter, start: IncidentStart) -> IntakeResponse:
    """Open or join the incident; Temporal out of reach is a 503 the sender retries, within
    REPORT_DEADLINE_S (the client library would retry an unreachable server for longer than
    a sender waits)."""
    try:
        # A deadline, not wait_for: no task per report (a storm's reports return at once).
        async with asyncio.timeout(REPORT_DEADLINE_S):
            response = await reporter.report(start)
        metrics.count_report(deduplicated=response.deduplicated)
        return response
    except TimeoutError:
        log.warning("Temporal did not take %s/%s in time", start.service, start.fingerprint)
        raise HTTPProblem(
            503,
            f"Temporal did not answer within {REPORT_DEADLINE_S:.0f}s; the report was not "
            "recorded, retry",
            headers={"Retry-After": "2"},
        ) from None
    except Exception:
        log.exception("could not hand %s/%s to Temporal", start.service, start.fingerprint)
        raise HTTPProblem(
            503,
            "could not reach Temporal; the report was not recorded, retry",
            headers={"Retry-After": "2"},
        ) from None


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
async def report_error(request: Request) -> JSONResponse:
    # The config without a dependency: resolving one costs a storm's report more than the rest.
    config: RemedyConfig = request.app.state.config
    service = token_service(config, presented_token(request))
    if service is None and not services_without_token(config):
        raise invalid_token(config, None)
    body = await capped_body(request, config.intake.max_body_bytes)
    recent: RecentReports = request.app.state.recent_reports
    # A body this service sent before passed every check then and builds the same start.
    start = recent.get(service, body) if service is not None else None
    if start is None:
        start = await _built_start(request, config, service, body)
        recent.put(start.service, body, start)
    response = await report_start(get_reporter(request), start)
    return JSONResponse(response.model_dump(mode="json"), status_code=202)


async def _built_start(
    request: Request, config: RemedyConfig, service: str | None, body: bytes
) -> IncidentStart:
    """The checks of a body not seen before, then the costly part."""
    data = parse_json_object(body, config.intake.max_json_depth)
    if service is None:
        claimed = data.get("service")
        raise invalid_token(config, claimed if isinstance(claimed, str) else None)
    oversized = oversized_field(data)
    if oversized is not None:
        raise HTTPProblem(413, oversized)
    try:
        event = ErrorEvent.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "error event") from None
    if event.service != service:
        raise foreign(f"report for service {event.service!r}")
    get_reporter(request)  # not connected: a 503 before the costly part
    return await incident_start(request, event, len(body))


@router.get(
    "/v1/incidents/{incident_id}",
    response_model=IncidentStatus,
    summary="The incident's status (the workflow's `status` query)",
)
async def get_incident(incident_id: str, request: Request, config: ConfigDep) -> JSONResponse:
    service = token_service(config, presented_token(request))
    try:
        workflow_id, _ = names.parse_incident_id(incident_id)
    except ValueError as exc:
        if service is None:
            raise invalid_token(config, None) from None
        raise HTTPProblem(404, str(exc)) from None
    if service is None:
        raise invalid_token(config, service_of(config, workflow_id))
    if service_of(config, workflow_id) != service:
        raise foreign(f"read incident {incident_id!r}")
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
    if status.service != service:
        raise foreign(f"read incident {incident_id!r}")
    from remedy.artifacts import ArtifactStore
    from remedy.review import incident_json

    # The same JSON as `remedy incidents show --json`: the status and the change it proposes.
    store = ArtifactStore(config.artifacts_dir)
    return JSONResponse(await asyncio.to_thread(incident_json, status, store))


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

        for name in services_without_token(config):
            env = config.services[name].intake_token_env
            log.warning(
                "the intake has no token for service %r: its reports get 401 until %s",
                name,
                f"${env} is set where `remedy serve` runs"
                if env
                else f"services.{name}.intake_token_env names a variable that is set",
            )
        app.state.builder = IncidentBuilder(config)
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
            await app.state.builder.close()
            app.state.builder = None

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts and styles from the
    # installed package under /static-offline-docs, so the docs work with no internet.
    app = FastAPIOffline(
        title="Remedy intake",
        version="0.1.0",
        description="Errors in, incidents out. See DESIGN.md for the event schema.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.reporter = reporter
    app.state.client = client
    app.state.builder = None
    app.state.recent_reports = RecentReports()
    app.add_exception_handler(HTTPProblem, _problem_response)
    app.include_router(router)
    mount_metrics(app)
    # These build on this module's checks.
    from starter.fix_intake import router as fix_router
    from starter.otlp import router as otlp_router
    from starter.sentry import router as sentry_router

    app.include_router(sentry_router)
    app.include_router(otlp_router)
    # A fix's way to production: POST /github/webhook, POST /v1/deploys.
    app.include_router(fix_router)
    # Approve/Reject clicks arrive at POST /slack/events (or over Socket Mode).
    slack = mount_slack(app, config, lambda: app.state.client)
    return app
