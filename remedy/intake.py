"""From an accepted error event to the input of an incident: redact, parse, fingerprint, route.

Pure: the HTTP intake, the log watcher and the benchmarks all call it, and it is tested
without a server.
"""

from __future__ import annotations

from remedy.config import RemedyConfig
from remedy.fingerprint import fingerprint
from remedy.models import ErrorEvent, IncidentStart
from remedy.policy import is_notify_only, severity_for
from remedy.redact import redact_event
from remedy.stacktrace import mark_in_app, parse_traceback

# Workflow history carries the event, so it is kept well under Temporal's payload limits:
# the innermost frames and both ends of the traceback text are what diagnosis uses.
MAX_FRAMES = 100
MAX_TRACEBACK_CHARS = 32_000


def clip_traceback(text: str | None) -> str | None:
    """Both ends of an oversized traceback, in at most MAX_TRACEBACK_CHARS: where it started
    and what finally failed. Clipping again changes nothing, so the watcher clips before
    sending and the intake after receiving."""
    if text is None or len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = (MAX_TRACEBACK_CHARS - 64) // 2  # room for the marker
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters clipped] ...\n{text[-half:]}"


def build_incident_start(event: ErrorEvent, config: RemedyConfig) -> IncidentStart:
    """Everything downstream sees only the redacted event."""
    service = config.service(event.service)
    event = redact_event(event)
    frames = event.frames or parse_traceback(event.traceback or "")
    frames = mark_in_app(frames, service.in_app_include)[-MAX_FRAMES:]
    event = event.model_copy(
        update={"frames": frames, "traceback": clip_traceback(event.traceback)}
    )
    severity = severity_for(event.error, config.policy.default_severity)
    return IncidentStart(
        service=event.service,
        fingerprint=fingerprint(event.error.type, event.error.message, frames),
        severity=severity,
        notify_only=is_notify_only(severity, config.policy.notify_only_below),
        event=event,
        policy=config.service_policy(event.service),
        forge="github" if service.github_repo else "local",
    )
