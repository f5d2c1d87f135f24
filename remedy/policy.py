"""The repository's policy, as plain functions: it can only narrow what a model proposes.

Nothing here does I/O, so the workflow calls these deterministically and the tests call them
without Temporal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from remedy.models import (
    ApprovalRequest,
    DecideRequest,
    Edit,
    ErrorInfo,
    Phase,
    ServicePolicy,
    Severity,
)

# ---------------------------------------------------------------------------- severity

# DOMAIN + SEVERITY + NN: AI5001, AUTH4003, DB5002 (DESIGN.md's examples carry three digits
# after the severity digit; two are accepted too).
_ERROR_CODE = re.compile(r"^[A-Z]+(?P<severity>[0-9])[0-9]{2,3}$")
_CODE_SEVERITY = {
    "5": Severity.CRITICAL,
    "4": Severity.HIGH,
    "3": Severity.MEDIUM,
    "2": Severity.LOW,
    "1": Severity.LOW,
    "0": Severity.LOW,
}
_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


def severity_for(error: ErrorInfo, default: Severity) -> Severity:
    """The severity an error code names: 5 critical, 4 high, 3 medium, 0-2 low.

    The code is DOMAIN letters, one severity digit, then two or three digits (DB5001); case
    and surrounding blanks are ignored. No code, or one not of that shape (or with severity
    digit 6-9), gives `default`.
    """
    if not error.code:
        return default
    match = _ERROR_CODE.match(error.code.strip().upper())
    return _CODE_SEVERITY.get(match["severity"], default) if match else default


def is_notify_only(severity: Severity, bar: Severity) -> bool:
    """True when `severity` is strictly less severe than `bar`: notify, do not investigate."""
    return _RANK[severity] < _RANK[bar]


# ---------------------------------------------------------------------------- edit scope


@lru_cache(maxsize=512)
def _glob(pattern: str) -> tuple[re.Pattern[str], bool]:
    """A gitignore-style pattern as a regex over repository-relative POSIX paths.

    `*` and `?` stay within one segment, `[...]` is a character class, `**` as a whole
    segment spans any number of directories. A pattern without a slash (other than a
    trailing one) matches at any depth (`*.pem`, `migrations/`); a trailing slash matches
    directories only. Returns (regex, directories only).
    """
    directory_only = pattern.endswith("/")
    anchored = "/" in pattern.rstrip("/")  # a leading or inner slash anchors to the root
    body = pattern.strip("/")
    if not anchored:
        body = f"**/{body}"
    segments = body.split("/")
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts)), directory_only


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            while index + 1 < len(segment) and segment[index + 1] == "*":
                index += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in segment[index + 2 :]:
            end = segment.index("]", index + 2)
            content = segment[index + 1 : end]
            negate = content[:1] in ("!", "^")
            body = content[1:] if negate else content
            out.append(f"[{'^' if negate else ''}{body.replace(chr(92), chr(92) * 2)}]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _matches(pattern: str, path: str) -> bool:
    """Whether `pattern` matches `path` or one of its directories (so `app` covers app/x.py)."""
    regex, directory_only = _glob(pattern)
    segments = path.split("/")
    candidates = ["/".join(segments[:end]) for end in range(1, len(segments) + 1)]
    if directory_only:
        candidates = candidates[:-1]
    return any(regex.fullmatch(candidate) for candidate in candidates)


def _unsafe_path(path: str) -> str | None:
    """Why `path` can never be edited, or None."""
    if not path.strip():
        return "is empty"
    if "\\" in path:
        return "contains a backslash (use a repository-relative path with forward slashes)"
    if path.startswith("/") or re.match(r"^[A-Za-z]:/", path):
        return "is absolute (use a path relative to the repository root)"
    if any(ord(char) < 32 for char in path):
        return "contains a control character"
    segments = path.split("/")
    if not _normalized(path):
        return "names no file"
    if ".." in segments:
        return "contains a '..' segment (edits must stay inside the repository)"
    if ".git" in segments:
        return "is inside .git/ (git metadata is never edited)"
    return None


def _normalized(path: str) -> str:
    return "/".join(segment for segment in path.split("/") if segment not in ("", "."))


def _scope_problem(path: str, allowed: Sequence[str], forbidden: Sequence[str]) -> str | None:
    unsafe = _unsafe_path(path)
    if unsafe:
        return f"edit to {path!r} {unsafe}"
    normalized = _normalized(path)
    for pattern in forbidden:
        if _matches(pattern, normalized):
            return f"edit to {path!r} is forbidden by forbidden_paths pattern {pattern!r}"
    if not any(_matches(pattern, normalized) for pattern in allowed):
        listed = ", ".join(repr(pattern) for pattern in allowed) or "none"
        return f"edit to {path!r} matches no allowed_paths pattern (allowed: {listed})"
    return None


def path_in_scope(path: str, allowed: Sequence[str], forbidden: Sequence[str]) -> bool:
    """Whether a repository-relative `path` may be edited under the allowed/forbidden globs.

    Patterns are gitignore-like (`app/**`, `**/migrations/**`, `*.pem`, `secrets/`); a
    pattern that matches a directory covers everything under it. Forbidden wins over
    allowed. Absolute paths, backslashes, `..` segments and anything inside `.git/` are
    never in scope.
    """
    return _scope_problem(path, allowed, forbidden) is None


def scope_violations(edits: Sequence[Edit], policy: ServicePolicy) -> list[str]:
    """One message per edit the service's policy does not allow, naming the path and rule."""
    problems = (
        _scope_problem(edit.path, policy.allowed_paths, policy.forbidden_paths) for edit in edits
    )
    return [problem for problem in problems if problem]


def diff_size_violation(lines_added: int, lines_removed: int, max_lines: int) -> str | None:
    """Why a patch is too large to propose (added + removed lines over `max_lines`), or None."""
    changed = lines_added + lines_removed
    if changed <= max_lines:
        return None
    return (
        f"patch changes {changed} lines ({lines_added} added, {lines_removed} removed), "
        f"more than max_diff_lines = {max_lines}; a change this large needs a human author"
    )


# ---------------------------------------------------------------------------- approval


def approval_refusal(
    phase: Phase, approval: ApprovalRequest | None, request: DecideRequest
) -> str | None:
    """Why a `decide` Update must be rejected, or None when it may be applied.

    Checked in order: a decision already taken (a double click hears who took it, even after
    the incident moved on), the incident awaits approval, has an approval request that is the
    one the decision answers, the approver is one of its approvers, and a rejection gives a
    reason.
    """
    if approval is not None and approval.decision is not None:
        done = "approved" if approval.decision.decision == "approve" else "rejected"
        return (
            f"approval request {approval.request_id!r} was already {done} "
            f"by {approval.decision.approver!r}"
        )
    if phase != Phase.AWAITING_APPROVAL:
        return (
            f"incident is not awaiting approval: it is in phase '{phase.value}', "
            "so there is nothing to approve or reject"
        )
    if approval is None:
        return "incident has no approval request: there is nothing to approve or reject"
    if request.request_id != approval.request_id:
        return (
            f"stale approval request id {request.request_id!r}: the incident now awaits "
            f"{approval.request_id!r} (look at the current proposal and decide again)"
        )
    if request.approver not in approval.approvers:
        allowed = ", ".join(repr(name) for name in approval.approvers)
        who = f"only {allowed} may decide" if allowed else "no approvers are configured"
        return (
            f"{request.approver!r} is not an approver of this incident: {who} "
            "(services.<name>.approvers in remedy.toml)"
        )
    if request.decision == "reject" and not (request.reason and request.reason.strip()):
        return "a rejection needs a reason: say why the proposed fix is rejected"
    return None
