"""Forge text: the pull request's title and body, the commit message, the GitHub issue, and
the comment that tells a change's reviewers its fix did not hold.

Functions from an incident to Markdown or plain text, shared by both forges (the local push
stores the body and the comments beside the incident; GitHub posts them). Every untrusted
string (error text, tracebacks, paths, commit subjects and authors, test output, model output,
release names) goes through remedy.render.sanitize: code or fenced in Markdown, defused in
plain text, redacted in both.
"""

from __future__ import annotations

import hashlib
import textwrap

from remedy.assurance import FIX_FAILURE_TEXT, headline
from remedy.models import FixFollowUp, IncidentStatus
from remedy.redact import redact_diff, redact_markdown
from remedy.render.sanitize import code, fenced, inline, own_link, plain

INCIDENT_TRAILER = "Remedy-Incident"
FINGERPRINT_MARKER = "remedy-fingerprint"
FIX_FAILED_MARKER = "remedy:fix-failed"
MAX_TITLE_CHARS = 72
MAX_ISSUE_TITLE_CHARS = 120
MAX_BODY_DIFF_LINES = 200
MAX_RAW_ERROR_CHARS = 6000


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _prose(text: str) -> str:
    """Model prose as a fenced block, wrapped so it reads without scrolling."""
    paragraphs = [textwrap.fill(p, 100) for p in text.strip().split("\n")]
    return fenced("\n".join(paragraphs))


def _failing_file(incident: IncidentStatus) -> str | None:
    if incident.evidence:
        for frame in incident.evidence.frames:
            if frame.found:
                return frame.path
    if incident.patch and incident.patch.files:
        return incident.patch.files[0]
    return None


# ---------------------------------------------------------------------------- the change


def pull_request_title(incident: IncidentStatus) -> str:
    """`fix(<service>): <diagnosis summary>`, or `<error type> in <file>` without one."""
    prefix = f"fix({incident.service}): "
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    if diagnosis and diagnosis.summary.strip():
        subject = _one_line(diagnosis.summary.strip().splitlines()[0]).rstrip(".")
    else:
        where = _failing_file(incident)
        subject = f"{incident.error_type} in {where}" if where else incident.error_type
    return _clip(prefix + _one_line(plain(subject)), MAX_TITLE_CHARS)


def commit_message(incident: IncidentStatus, title: str) -> str:
    """Title, the diagnosis in a paragraph, and the trailer that marks the branch as ours."""
    diagnosis = incident.diagnosis.diagnosis if incident.diagnosis else None
    if diagnosis:
        about = diagnosis.root_cause or diagnosis.summary
    else:
        about = f"{incident.error_type}: {incident.error_message}"
    paragraphs = [
        _one_line(plain(title)),
        _clip(_one_line(plain(about)), 1000),
        f"{INCIDENT_TRAILER}: {incident.incident_id}",
    ]
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def pull_request_body(incident: IncidentStatus, diff: str) -> str:
    """The Markdown a reviewer reads: error, cause, evidence, suspects, change, checks, approval."""
    out = [f"Remedy prepared this change for incident `{incident.incident_id}` "
           f"of service `{incident.service}`."]  # fmt: skip
    if incident.assurance is not None:
        # What a reviewer must know before reading on: how far the change was checked.
        strong = incident.assurance.level == "unverified"
        line = inline(headline(incident.assurance))
        out += ["", f"**{line}**" if strong else line]

    out += ["", "## Error", "", fenced(f"{incident.error_type}: {incident.error_message}")]
    out.append(
        f"\n{incident.occurrences} occurrence(s), first seen {incident.first_seen.isoformat()}"
        + (f", release {code(incident.release)}." if incident.release else ".")
    )
    evidence = incident.evidence
    if evidence and evidence.frames:
        stack = [
            f"{f.path}:{f.line or '?'} in {f.function or '?'}"
            + ("" if f.found else " (not found in the repository)")
            for f in evidence.frames[:10]
        ]
        out += ["", "Stack, innermost first:", "", fenced("\n".join(stack))]

    result = incident.diagnosis
    diagnosis = result.diagnosis if result else None
    if result and diagnosis:
        cause = diagnosis.root_cause.strip() or diagnosis.summary.strip()
        out += ["", "## Root cause", "", "As the model wrote it:", "", _prose(cause)]
        model = f"the model ({result.backend})" if result.backend else "the model"
        confidence = (
            f"Confidence from checks: {incident.assurance.confidence:.0%}; "
            f"{model} said {diagnosis.confidence:.0%}"
            if incident.assurance is not None
            else f"Confidence: {diagnosis.confidence:.0%}"
            + (f" ({result.backend})" if result.backend else "")
        )
        if result.backend:
            # What the model spent on this fix: reviewers see the running cost of Remedy.
            confidence += (
                f". Diagnosis: {result.tokens:,} tokens, estimated cost ${result.cost_usd:.4f}"
            )
        out.append(f"\n{confidence}.")
        if incident.llm_tokens > result.tokens:
            # The regression test (and any later call) spends beyond the diagnosis itself.
            out.append(
                f"All model calls of this incident: {incident.llm_tokens:,} tokens, "
                f"estimated cost ${incident.llm_cost_usd:.4f}."
            )
        if diagnosis.evidence:
            out += ["", "Evidence:"]
            out += [f"- {code(f'{line.path}:{line.line}')}" for line in diagnosis.evidence]
    if evidence and evidence.summary:
        out += ["", "## Investigation", "", fenced(evidence.summary)]
    if evidence and evidence.suspect_commits:
        out += ["", "Suspect commits:", "", "| Commit | Author | Date | Subject | Why |",
                "|---|---|---|---|---|"]  # fmt: skip
        out += [
            f"| {code(s.sha[:12])} | {inline(s.author)} | {inline(s.date[:10])} "
            f"| {inline(s.subject)} | {inline(s.reason)} |"
            for s in evidence.suspect_commits
        ]

    patch = incident.patch
    if patch:
        out += ["", "## Change", ""]
        out.append(
            f"{len(patch.files)} file(s), +{patch.lines_added} -{patch.lines_removed}: "
            + ", ".join(code(path) for path in patch.files)
        )
        if patch.execution_sensitive:
            out.append(
                f"\n**Edits execution-sensitive files**, allowed by "
                f"`services.{incident.service}.allow_execution_sensitive_paths`: "
                + ", ".join(code(path) for path in patch.execution_sensitive)
            )
        lines = diff.splitlines()
        shown = "\n".join(lines[:MAX_BODY_DIFF_LINES])
        if len(lines) > MAX_BODY_DIFF_LINES:
            shown += f"\n… {len(lines) - MAX_BODY_DIFF_LINES} more lines in the branch"
        out += ["", "<details><summary>Diff</summary>", "",
                fenced(shown, "diff", redact=redact_diff), "", "</details>"]  # fmt: skip

    if incident.fix_attempts:
        out += ["", "## Earlier tries", ""]
        for attempt in incident.fix_attempts:
            out.append(f"Try {attempt.attempt}: the patch {FIX_FAILURE_TEXT[attempt.failure]}:")
            out += ["", fenced(_clip(attempt.detail.strip(), 1500)), ""]
    verification = incident.verification
    out += ["", "## Verification", ""]
    if verification:
        ran = f", {verification.tests_run} tests" if verification.tests_run is not None else ""
        out.append(f"**{verification.status}**{ran}. {inline(verification.summary)}".rstrip())
        if verification.new_failures:
            out += [f"- new failure: {code(name)}" for name in verification.new_failures[:10]]
    else:
        out.append("Not run.")

    decision = incident.approval.decision if incident.approval else None
    if decision:
        out += [
            "",
            "## Approval",
            "",
            f"Approved by {inline(decision.approver)} at {decision.at.isoformat()}.",
        ]
    if incident.ui_url:
        out += ["", own_link(incident.ui_url, "The incident in the Temporal UI")]
    out += ["", "---", f"{INCIDENT_TRAILER}: {incident.incident_id}"]
    # Every piece is redacted already; this pass is the artifact store's own, so the body
    # posted and the body stored are the same text.
    return redact_markdown("\n".join(out) + "\n")


# ---------------------------------------------------------------------------- the issue


def issue_marker(incident: IncidentStatus) -> str:
    """The hidden line that finds the issue of this (service, fingerprint) again."""
    return f"<!-- {FINGERPRINT_MARKER}: {incident.service}/{incident.fingerprint} -->"


def issue_title(incident: IncidentStatus) -> str:
    message = _one_line(plain(incident.error_message))
    kind = _one_line(plain(incident.error_type))
    title = f"[{incident.severity.value}] {kind} in {incident.service}: {message}"
    return _clip(title, MAX_ISSUE_TITLE_CHARS)


def issue_body(incident: IncidentStatus, raw_error: str) -> str:
    """The error as it arrived, the evidence summary, the UI link and the marker."""
    raw = raw_error.strip() or f"{incident.error_type}: {incident.error_message}"
    if len(raw) > MAX_RAW_ERROR_CHARS:
        raw = "…" + raw[-MAX_RAW_ERROR_CHARS:]
    lines = [
        f"Remedy saw this {incident.severity.value} error in `{incident.service}` "
        f"({incident.occurrences} occurrence(s), first {incident.first_seen.isoformat()}"
        + (f", release {code(incident.release)}" if incident.release else "")
        + ").",
        "",
        fenced(raw),
    ]
    if incident.evidence is not None and incident.evidence.summary:
        lines += ["", "## Evidence", "", fenced(incident.evidence.summary)]
    if incident.ui_url:
        label = f"Incident {incident.incident_id} in the Temporal UI"
        lines += ["", own_link(incident.ui_url, label)]
    lines += ["", issue_marker(incident)]
    return redact_markdown("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- the fix that failed


def _failed_fix(incident: IncidentStatus) -> tuple[FixFollowUp, str]:
    fix = incident.fix
    if fix is None or fix.failed_release is None:
        raise ValueError(f"incident {incident.incident_id} has no failed fix to tell about")
    return fix, fix.failed_release


def fix_failed_marker(incident: IncidentStatus) -> str:
    """The hidden line that finds the comment on this incident's failed release again.

    The release is named by a hash: it is untrusted text, which inside an HTML comment could
    end the comment early, and which redaction could change between posting and looking."""
    release = _failed_fix(incident)[1]
    digest = hashlib.sha256(release.encode("utf-8")).hexdigest()[:16]
    return f"<!-- {FIX_FAILED_MARKER} {incident.incident_id} {digest} -->"


def fix_failed_comment(incident: IncidentStatus) -> str:
    """The comment on the change once its fix did not hold: the release the error came back
    in, the fix that release contains, how many reports, and that a new incident opened."""
    fix, release = _failed_fix(incident)
    lines = [
        "**This fix did not hold.**",
        "",
        f"The error came back in release {code(release)}, which contains fix "
        f"{code(fix.commit[:12])}: {fix.recurrences} report(s) from releases with the fix.",
        "",
        fenced(f"{incident.error_type}: {incident.error_message}"),
        "",
        "Remedy opened a new incident for the error; its evidence opens with this fix and "
        "the release it failed in.",
    ]
    if incident.ui_url:
        lines += ["", own_link(incident.ui_url, "This incident in the Temporal UI")]
    lines += ["", fix_failed_marker(incident)]
    return redact_markdown("\n".join(lines) + "\n")
