"""OTLP/HTTP exports (`/v1/logs`, `/v1/traces`, protobuf or JSON) read into ErrorEvents.

A log record or a span event is an error when it carries the exception semantic conventions
(`exception.type`, `exception.message`, `exception.stacktrace`); every other record is
accepted and left alone. The stacktrace is the language's own text, which Remedy's traceback
parsers read; without one, the record's `code.*` attributes give the one frame there is.
Resources name the service (`service.name`, which must be the token's service; an SDK's
`unknown_service` default counts as the token's) and the release: a VCS revision
(`vcs.ref.head.revision`) first, `service.version` after it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from remedy.intake_formats.report import (
    ENVIRONMENT_CHARS,
    FILE_CHARS,
    FUNCTION_CHARS,
    MESSAGE_CHARS,
    TRACEBACK_CHARS,
    TYPE_CHARS,
    ForeignReport,
    Rejected,
    release_of,
    tags_within,
    text,
)
from remedy.models import ErrorEvent, ErrorInfo, Frame
from remedy.service_policy import Severity
from remedy.stacktrace import parse_exception_line

Kind = Literal["logs", "traces"]

_EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")
_RELEASE_KEYS = (
    "vcs.ref.head.revision",
    "vcs.repository.ref.revision",
    "vcs.revision",
    "service.version",
)
_ENVIRONMENT_KEYS = ("deployment.environment.name", "deployment.environment")
# Attributes already read into the event's fields; the others become tags (service.version
# among them: the release may be the VCS revision instead).
_READ_KEYS = frozenset(
    {*_EXCEPTION_KEYS, "service.name"}
    | {"code.filepath", "code.file.path", "code.lineno", "code.line.number"}
    | {"code.function", "code.function.name", "code.namespace"}
)
# OTLP JSON spells trace and span ids in hex where protobuf's JSON mapping expects base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id"})
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}){1,32}$")


@dataclass
class Exported:
    """What one export request holds for the token's service."""

    reports: list[ForeignReport] = field(default_factory=list)
    records: int = 0  # log records, or spans
    rejected: int = 0  # of another service
    foreign: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------- decoding


def _request_type(kind: Kind) -> type[Message]:
    return ExportLogsServiceRequest if kind == "logs" else ExportTraceServiceRequest


def parse_protobuf(kind: Kind, body: bytes) -> Message:
    try:
        return _request_type(kind).FromString(body)
    except (DecodeError, RecursionError, ValueError):
        raise Rejected(400, f"body is not an OTLP {kind} request (protobuf)") from None


def _hex_ids_as_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64encode(binascii.unhexlify(item)).decode()
            if key in _HEX_ID_KEYS and isinstance(item, str) and _HEX.match(item)
            else _hex_ids_as_base64(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids_as_base64(item) for item in value]
    return value


def parse_json(kind: Kind, data: dict[str, Any]) -> Message:
    """An OTLP JSON request (already parsed, depth-checked JSON)."""
    try:
        return json_format.ParseDict(
            _hex_ids_as_base64(data), _request_type(kind)(), ignore_unknown_fields=True
        )
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise Rejected(400, f"body is not an OTLP {kind} request (JSON): {first}") from None


def response_body(kind: Kind, exported: Exported, *, as_json: bool) -> bytes:
    """The export response: empty, or a partial success naming the rejected records."""
    why = f"service.name {sorted(exported.foreign)} is not this token's service"
    rejected = exported.rejected
    response: Message
    if kind == "logs":
        response = ExportLogsServiceResponse(
            partial_success=ExportLogsPartialSuccess(
                rejected_log_records=rejected, error_message=why
            )
            if rejected
            else None
        )
    else:
        response = ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=why)
            if rejected
            else None
        )
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


# ---------------------------------------------------------------------------- attributes


def _scalar(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, kind)
    if kind == "array_value":  # one level: lists of scalars, as attributes usually are
        items = [_scalar_item(item) for item in value.array_value.values]
        return ", ".join(item for item in items if item is not None)
    return None


def _scalar_item(value: AnyValue) -> str | None:
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind in ("string_value", "int_value") else None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _scalar(pair.value) for pair in pairs}


def _first(attributes: dict[str, Any], keys: Iterable[str]) -> Any:
    return next((attributes[k] for k in keys if attributes.get(k) not in (None, "")), None)


def _time(nanos: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None
    except (ValueError, OverflowError, OSError):
        return None


def _severity(number: int) -> Severity | None:
    """OTLP severity numbers: 21-24 FATAL, 17-20 ERROR (the policy decides), 13-16 WARN."""
    if number >= 21:
        return Severity.CRITICAL
    if 17 <= number <= 20 or number == 0:
        return None
    return Severity.MEDIUM if number >= 13 else Severity.LOW


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class _Resource:
    service: str
    release: str | None
    environment: str | None
    attributes: dict[str, Any]


def _code_frame(attributes: dict[str, Any]) -> list[Frame]:
    path = text(_first(attributes, ("code.file.path", "code.filepath")), FILE_CHARS)
    if path is None:
        return []
    line = _first(attributes, ("code.line.number", "code.lineno"))
    function = text(_first(attributes, ("code.function.name", "code.function")), FUNCTION_CHARS)
    return [
        Frame(
            file=path,
            line=line if isinstance(line, int) and line >= 0 else None,
            function=function,
            module=text(attributes.get("code.namespace"), FUNCTION_CHARS),
        )
    ]


def _report(
    attributes: dict[str, Any],
    resource: _Resource,
    *,
    body: str | None,
    nanos: int,
    severity: Severity | None,
    tags: list[tuple[str, Any]],
) -> ForeignReport | None:
    if not any(text(attributes.get(key), 1) for key in _EXCEPTION_KEYS):
        return None
    stacktrace = text(attributes.get("exception.stacktrace"), TRACEBACK_CHARS)
    parsed = parse_exception_line(stacktrace) if stacktrace else None
    error_type = text(attributes.get("exception.type"), TYPE_CHARS) or (
        parsed[0] if parsed else None
    )
    message = text(attributes.get("exception.message"), MESSAGE_CHARS)
    message = message or (parsed[1] if parsed else None) or body or ""
    error_type = (error_type or "Error")[:TYPE_CHARS]
    frames = [] if stacktrace else _code_frame(attributes)
    own = [(k, v) for k, v in attributes.items() if k not in _READ_KEYS]
    around = [(k, v) for k, v in resource.attributes.items() if k not in _READ_KEYS]
    event = ErrorEvent(
        service=resource.service,
        environment=text(resource.environment, ENVIRONMENT_CHARS),
        release=resource.release,
        error=ErrorInfo(type=error_type, message=message[:MESSAGE_CHARS]),
        traceback=stacktrace or f"{error_type}: {message}",
        frames=frames,
        timestamp=_time(nanos),
        tags=tags_within([*tags, *own, *around]),
    )
    return ForeignReport(event=event, size=len(stacktrace or "") + len(message), severity=severity)


def _resource(attributes: dict[str, Any], token_service: str) -> _Resource | str:
    """The resource's service, release and environment, or the foreign service.name."""
    name = attributes.get("service.name")
    named = isinstance(name, str) and name and not name.startswith("unknown_service")
    if named and name != token_service:
        return str(name)[:64]
    releases = (release_of(attributes.get(key)) for key in _RELEASE_KEYS)
    return _Resource(
        service=token_service,
        release=next((r for r in releases if r), None),
        environment=_first(attributes, _ENVIRONMENT_KEYS),
        attributes=attributes,
    )


def _hex(value: bytes) -> str | None:
    return value.hex() if value else None


def _accepted_items(
    blocks: Iterable[Any], scopes_of: str, items_of: str, service: str, out: Exported
) -> Iterator[tuple[_Resource, Any, Any]]:
    """(resource, scope block, record) of the resources of `service`; the records of other
    services' resources are counted as rejected."""
    for block in blocks:
        resource = _resource(_attributes(block.resource.attributes), service)
        scopes = getattr(block, scopes_of)
        count = sum(len(getattr(scope, items_of)) for scope in scopes)
        out.records += count
        if isinstance(resource, str):
            out.rejected += count
            out.foreign.add(resource)
            continue
        for scope in scopes:
            for item in getattr(scope, items_of):
                yield resource, scope, item


def _log_reports(request: ExportLogsServiceRequest, service: str, out: Exported) -> None:
    items = _accepted_items(request.resource_logs, "scope_logs", "log_records", service, out)
    for resource, scope_logs, record in items:
        body = _scalar(record.body)
        report = _report(
            _attributes(record.attributes),
            resource,
            body=str(body) if body is not None else None,
            nanos=record.time_unix_nano or record.observed_time_unix_nano,
            severity=_severity(record.severity_number),
            tags=[
                ("otel.source", "log"),
                ("otel.scope", scope_logs.scope.name),
                ("log.severity", record.severity_text),
                ("otel.trace_id", _hex(record.trace_id)),
                ("otel.span_id", _hex(record.span_id)),
            ],
        )
        if report is not None:
            out.reports.append(report)


def _span_reports(request: ExportTraceServiceRequest, service: str, out: Exported) -> None:
    items = _accepted_items(request.resource_spans, "scope_spans", "spans", service, out)
    for resource, scope_spans, span in items:
        span_attributes = list(_attributes(span.attributes).items())
        for span_event in span.events:
            report = _report(
                _attributes(span_event.attributes),
                resource,
                body=None,
                nanos=span_event.time_unix_nano,
                severity=None,
                tags=[
                    ("otel.source", "span_event"),
                    ("otel.scope", scope_spans.scope.name),
                    ("otel.span", span.name),
                    ("otel.trace_id", _hex(span.trace_id)),
                    ("otel.span_id", _hex(span.span_id)),
                    *span_attributes,
                ],
            )
            if report is not None:
                out.reports.append(report)


def read_export(request: Message, service: str) -> Exported:
    """The errors in an export for the token's `service`, and the records of others."""
    out = Exported()
    if isinstance(request, ExportLogsServiceRequest):
        _log_reports(request, service, out)
    elif isinstance(request, ExportTraceServiceRequest):
        _span_reports(request, service, out)
    return out
