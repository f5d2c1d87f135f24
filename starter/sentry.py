"""Sentry-compatible ingestion: POST /api/<project_id>/envelope/ and the legacy /store/.

A service keeps its Sentry SDK and changes only the DSN (`remedy dsn SERVICE`). The key is
checked before the body is read when the request carries it (`X-Sentry-Auth`, or the
`sentry_key` query parameter); an envelope whose only key is its `dsn` header is read within
the envelope budget first. Events then take the path of POST /v1/errors (redaction, pool,
fingerprint, coalescing); everything else an SDK sends is answered 200 and dropped.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from remedy.config import RemedyConfig
from remedy.intake_formats.decoding import decode_body
from remedy.intake_formats.report import Rejected, refine_start
from remedy.intake_formats.sentry_auth import auth_header_key, dsn_key, service_for_key
from remedy.intake_formats.sentry_envelope import parse_envelope
from remedy.intake_formats.sentry_event import read_event
from starter.app import (
    ConfigDep,
    HTTPProblem,
    capped_body,
    get_reporter,
    incident_start,
    parse_json_object,
    report_start,
)

router = APIRouter(tags=["sentry"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/x-sentry-envelope": {"schema": {"type": "string"}}},
    }
}


def _problem(rejected: Rejected) -> HTTPProblem:
    return HTTPProblem(rejected.status, rejected.message)


def _service(config: RemedyConfig, key: str, project_id: str) -> str:
    try:
        return service_for_key(config, key, project_id)
    except Rejected as rejected:
        raise _problem(rejected) from None


def _presented_key(request: Request) -> str | None:
    return (
        auth_header_key(request.headers.get("x-sentry-auth"))
        or auth_header_key(request.headers.get("authorization"))
        or request.query_params.get("sentry_key")
        or None
    )


async def _decoded_body(request: Request, limit: int) -> bytes:
    body = await capped_body(request, limit)
    try:
        return decode_body(body, request.headers.get("content-encoding"), limit)
    except Rejected as rejected:
        raise _problem(rejected) from None


def _backing_off(problem: HTTPProblem) -> HTTPProblem:
    """Remedy's own "come back later" (busy, starting, Temporal away), as the 429 with
    X-Sentry-Rate-Limits that makes Sentry SDKs hold off instead of dropping blindly."""
    retry = (problem.headers or {}).get("Retry-After")
    if problem.status not in (429, 503) or retry is None:
        return problem
    return HTTPProblem(
        429,
        problem.message,
        headers={"Retry-After": retry, "X-Sentry-Rate-Limits": f"{retry}::organization"},
    )


async def _report(
    request: Request,
    config: RemedyConfig,
    payload: bytes,
    service: str,
    *,
    what: str,
    event_id: str | None = None,
) -> dict[str, Any]:
    data = parse_json_object(payload, config.intake.max_json_depth, what)
    try:
        report = read_event(data, service, len(payload))
    except ValidationError as exc:  # the reader fits every field; a bug, said as a 422
        raise HTTPProblem(422, f"{what}: {exc.errors()[0]['msg']}") from None
    if isinstance(data.get("event_id"), str):
        event_id = data["event_id"]
    if report is None:  # neither an exception nor a message: nothing to investigate
        return {"id": event_id}
    try:
        reporter = get_reporter(request)
        start = await incident_start(request, report.event, report.size)
        response = await report_start(reporter, refine_start(start, report, config))
    except HTTPProblem as problem:
        raise _backing_off(problem) from None
    return {"id": event_id, **response.model_dump(mode="json")}


@router.post(
    "/api/{project_id}/envelope/",
    openapi_extra=_BODY,
    summary="Sentry envelope: events become incidents; other items are accepted and dropped",
)
async def sentry_envelope(project_id: str, request: Request, config: ConfigDep) -> JSONResponse:
    presented = _presented_key(request)
    service = _service(config, presented, project_id) if presented else None
    body = await _decoded_body(request, config.intake.max_envelope_bytes)
    try:
        envelope = parse_envelope(
            body,
            max_event_bytes=config.intake.max_event_bytes,
            max_depth=config.intake.max_json_depth,
        )
    except Rejected as rejected:
        raise _problem(rejected) from None
    if service is None:
        key = dsn_key(envelope.header.get("dsn"))
        if key is None:
            raise HTTPProblem(
                401, "missing sentry_key: send X-Sentry-Auth, ?sentry_key= or a dsn header"
            )
        service = _service(config, key, project_id)
    if not envelope.events:
        return JSONResponse({"id": envelope.event_id})
    answer = await _report(
        request, config, envelope.events[0], service, what="event item", event_id=envelope.event_id
    )
    return JSONResponse(answer)


@router.post(
    "/api/{project_id}/store/",
    summary="Sentry's legacy store endpoint: one event as JSON",
)
async def sentry_store(project_id: str, request: Request, config: ConfigDep) -> JSONResponse:
    presented = _presented_key(request)
    if not presented:
        raise HTTPProblem(401, "missing sentry_key: send X-Sentry-Auth or ?sentry_key=")
    service = _service(config, presented, project_id)
    body = await _decoded_body(request, config.intake.max_event_bytes)
    return JSONResponse(await _report(request, config, body, service, what="body"))
