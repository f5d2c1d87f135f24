"""What the Temporal UI shows of an incident: its summary, details and each step's summary.

The UI's workflow list and detail page read user metadata: a static summary and details set
when the incident starts, the workflow's current details (refreshed at each phase) and a
summary on each activity and timer. The UI renders details as Markdown, so untrusted text
(an error message, a reason a model wrote) goes through `sanitize.inline` and can neither
link nor format; summaries are plain text on one line. The payload codec encrypts all of it
with the rest of the history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from remedy import names
from remedy.models import IncidentStart, IncidentStatus, Phase
from remedy.render.phases import phase_label
from remedy.render.sanitize import inline, one_line, own_link, visible

# The UI shows a summary on one line of the list and event history: keep it short.
SUMMARY_CHARS = 120
_MESSAGE_CHARS = 80
_REASON_CHARS = 300


def _short(text: str, limit: int) -> str:
    text = one_line(visible(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def incident_summary(start: IncidentStart) -> str:
    """ "KeyError in checkout: 'sku'": what the list shows for the incident."""
    error = start.event.error
    head = f"{error.type} in {start.service}"
    if start.recurrence_of is not None:
        return _short(f"{head}: recurring after {start.recurrence_of.phase}", SUMMARY_CHARS)
    message = _short(error.message, _MESSAGE_CHARS)
    return _short(f"{head}: {message}" if message else head, SUMMARY_CHARS)


def incident_details(start: IncidentStart) -> str:
    """The incident's fixed facts, as Markdown: service, severity, release, failing frame."""
    event = start.event
    rows = [
        f"**{inline(event.error.type)}** in service **{inline(start.service)}**",
        f"- severity: {start.severity.value}",
        f"- fingerprint: `{start.fingerprint}`",
    ]
    if event.release:
        rows.append(f"- release: `{inline(event.release[:40])}`")
    if event.frames:
        frame = event.frames[-1]
        where = f"{frame.file}:{frame.line}" + (f" in {frame.function}" if frame.function else "")
        rows.append(f"- failing frame: {inline(where)}")
    if event.error.message:
        rows.append(f"- message: {inline(_short(event.error.message, _REASON_CHARS))}")
    return "\n".join(rows)


def current_details(status: IncidentStatus, start: IncidentStart) -> str:
    """Where the incident stands, as Markdown: "**Awaiting approval** · 3 occurrences"; the
    outcome and its reason once it has one."""
    label = phase_label(status.phase, start.forge)
    count = "1 occurrence" if status.occurrences == 1 else f"{status.occurrences} occurrences"
    rows = [f"**{label}** · {count} · severity {status.severity.value}"]
    if status.recurrence_of:
        rows.append(f"- recurring after incident `{status.recurrence_of}` reached its outcome")
    if status.reason:
        rows.append(f"- why: {inline(_short(status.reason, _REASON_CHARS))}")
    if status.diagnosis and status.diagnosis.diagnosis:
        rows.append(f"- diagnosis: {inline(_short(status.diagnosis.diagnosis.summary, 200))}")
    if status.patch and status.patch.applied:
        rows.append(f"- patch: +{status.patch.lines_added} -{status.patch.lines_removed}")
    if status.verification:
        rows.append(f"- verification: {status.verification.status}")
    if status.approval and status.phase == Phase.AWAITING_APPROVAL:
        rows.append(f"- expires: {status.approval.expires_at:%Y-%m-%d %H:%M} UTC")
    if status.proposal:
        proposal = status.proposal
        where = own_link(proposal.pr_url, "pull request") if proposal.pr_url else ""
        where = where or f"branch `{inline(proposal.branch)}`"
        rows.append(f"- change: {where}")
    return "\n".join(rows)


def step_summary(step: str, status: IncidentStatus) -> str:
    """One activity call as the event history lists it: "diagnose · KeyError in checkout"."""
    return _short(f"{step} · {status.error_type} in {status.service}", SUMMARY_CHARS)


def wait_summary(what: str, after: timedelta) -> str:
    """A timer as the event history lists it: "approval reminder after 0:30:00"."""
    return f"{what} after {after}"


def initial_search_attributes(start: IncidentStart) -> TypedSearchAttributes:
    """What the UI's incident list filters on, set when a run starts (by the intake, or by a
    fix_failed incident continuing as the next one), before its first workflow task."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(names.SA_SERVICE, start.service),
            SearchAttributePair(
                names.SA_PHASE,
                start.recurrence_of.phase.value if start.recurrence_of else Phase.RECEIVED.value,
            ),
            SearchAttributePair(names.SA_SEVERITY, start.severity.value),
            SearchAttributePair(names.SA_ERROR_TYPE, start.event.error.type),
            SearchAttributePair(names.SA_FINGERPRINT, start.fingerprint),
            SearchAttributePair(names.SA_OCCURRENCES, start.occurrences),
        ]
    )
