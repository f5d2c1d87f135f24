"""OpenTelemetry ingestion: POST /v1/logs and /v1/traces (OTLP/HTTP, protobuf or JSON).

The exporter sends the service's intake token (`Authorization: Bearer`, through
OTEL_EXPORTER_OTLP_HEADERS); log records and span events with the exception conventions
become reports on the path of POST /v1/errors. All of a request's incidents are built before
any is reported, so a request refused for being busy has counted nothing and its retry
counts each error once; records of one error (a storm in one batch) are built once.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from remedy.config import RemedyConfig
from remedy.intake_formats.decoding import decode_body
from remedy.intake_formats.otlp import Kind, parse_json, parse_protobuf, read_export, response_body
from remedy.intake_formats.report import Rejected, refine_start
from remedy.models import IncidentStart
from starter.app import (
    ConfigDep,
    HTTPProblem,
    capped_body,
    get_reporter,
    incident_start,
    invalid_token,
    parse_json_object,
    presented_token,
    report_start,
    token_service,
)

router = APIRouter(tags=["opentelemetry"])

# Distinct errors one export may hold: each costs a build (redaction, parsing) on the event
# loop, while repeats of one error cost a counter. An exporter's batch (512 records by default)
# of different errors fits.
MAX_DISTINCT_ERRORS = 512

_PROTOBUF = ("application/x-protobuf", "application/protobuf")
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "string"}} for media in (*_PROTOBUF, "application/json")
        },
    }
}


async def _export(kind: Kind, request: Request, config: RemedyConfig) -> Response:
    service = token_service(config, presented_token(request))
    if service is None:
        raise invalid_token(config, None)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (*_PROTOBUF, "application/json"):
        raise HTTPProblem(
            415, "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)"
        )
    limit = config.intake.max_envelope_bytes
    body = await capped_body(request, limit)
    try:
        body = decode_body(body, request.headers.get("content-encoding"), limit)
        if media == "application/json":
            message = parse_json(kind, parse_json_object(body, config.intake.max_json_depth))
        else:
            message = parse_protobuf(kind, body)
    except Rejected as rejected:
        raise HTTPProblem(rejected.status, rejected.message) from None
    try:
        exported = read_export(message, service)
    except ValidationError as exc:  # the reader fits every field; a bug, said as a 422
        raise HTTPProblem(422, f"body: {exc.errors()[0]['msg']}") from None
    if exported.rejected and exported.rejected == exported.records:
        raise HTTPProblem(
            403, f"this token may not report for service.name {sorted(exported.foreign)}"
        )
    if exported.reports:
        reporter = get_reporter(request)
        built: dict[str, IncidentStart] = {}
        starts = []
        for report in exported.reports:
            error = report.event.model_dump_json(include={"error", "traceback", "frames"})
            if error not in built:
                if len(built) == MAX_DISTINCT_ERRORS:
                    raise HTTPProblem(
                        413, f"more than {MAX_DISTINCT_ERRORS} different errors in one export"
                    )
                start = await incident_start(request, report.event, report.size)
                built[error] = refine_start(start, report, config)
                await asyncio.sleep(0)  # other requests go on between builds
            starts.append(built[error])
        for start in starts:
            await report_start(reporter, start)
    as_json = media == "application/json"
    return Response(
        response_body(kind, exported, as_json=as_json),
        media_type="application/json" if as_json else "application/x-protobuf",
    )


@router.post(
    "/v1/logs", openapi_extra=_BODY, summary="OTLP logs: exception records become incidents"
)
async def otlp_logs(request: Request, config: ConfigDep) -> Response:
    return await _export("logs", request, config)


@router.post(
    "/v1/traces", openapi_extra=_BODY, summary="OTLP traces: exception span events become incidents"
)
async def otlp_traces(request: Request, config: ConfigDep) -> Response:
    return await _export("traces", request, config)
