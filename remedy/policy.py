"""The repository's policy, as plain functions: it can only narrow what a model proposes.

Nothing here does I/O, so the workflow calls these deterministically and the tests call them
without Temporal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import pathspec

from remedy.models import ApprovalRequest, DecideRequest, Edit, ErrorInfo, Phase
from remedy.service_policy import ServicePolicy, Severity

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

# Files whose change runs code on someone's machine before, or without, a review of what it
# does: CI definitions, build and test hooks the test command loads, container builds, git's
# own behaviour, and key and environment files. They are refused whatever allowed_paths says,
# unless services.<name>.allow_execution_sensitive_paths names them, and matched ignoring case
# (a case-insensitive checkout reads `MAKEFILE` as `Makefile`).
EXECUTION_SENSITIVE_PATHS: tuple[str, ...] = (
    ".github/**",
    ".gitlab-ci.yml",
    ".gitlab/**",
    ".circleci/**",
    "Jenkinsfile",
    ".buildkite/**",
    "azure-pipelines.yml",
    "Makefile",
    "GNUmakefile",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "tox.ini",
    "noxfile.py",
    "conftest.py",
    "pytest.ini",
    "sitecustomize.py",
    "usercustomize.py",
    "package.json",
    ".pre-commit-config.yaml",
    "pom.xml",
    "build.gradle*",
    "settings.gradle*",
    "Rakefile",
    "Cargo.toml",
    "build.rs",
    "Dockerfile*",
    "docker-compose*.yml",
    "docker-compose*.yaml",
    ".git/**",
    ".gitattributes",
    ".gitmodules",
    ".env*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".npmrc",
    ".pypirc",
    ".netrc",
)


@lru_cache(maxsize=1024)
def _spec(pattern: str) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines([pattern])


def _matches(pattern: str, path: str, *, ignore_case: bool = False) -> bool:
    """Whether the gitignore-style `pattern` matches `path` or one of its directories (so
    `app` and `app/*` cover app/sub/x.py). A negated pattern (`!x`) matches nothing, so a
    list of patterns is read one rule at a time and each refusal can name its rule."""
    if ignore_case:
        pattern, path = pattern.lower(), path.lower()
    spec = _spec(pattern)
    segments = path.split("/")
    directories = ("/".join(segments[:end]) + "/" for end in range(1, len(segments)))
    return any(spec.match_file(candidate) for candidate in (path, *directories))


def _first_match(patterns: Sequence[str], path: str, *, ignore_case: bool = False) -> str | None:
    return next((p for p in patterns if _matches(p, path, ignore_case=ignore_case)), None)


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
    if ".git" in (segment.lower() for segment in segments):
        return "is inside .git/ (git metadata is never edited)"
    return None


def _normalized(path: str) -> str:
    return "/".join(segment for segment in path.split("/") if segment not in ("", "."))


def _execution_sensitive_rule(path: str, lifted: Sequence[str]) -> str | None:
    """The built-in rule that refuses `path`, or None (none matches, or the opt-in lifts it).

    The opt-in matches case-sensitively: it lifts exactly the files it names."""
    rule = _first_match(EXECUTION_SENSITIVE_PATHS, path, ignore_case=True)
    return None if rule is None or _first_match(lifted, path) else rule


def _scope_problem(
    subject: str,
    path: str,
    policy: ServicePolicy,
    service: str,
    allowed: tuple[str, Sequence[str]],
    *,
    built_in_rules: bool = True,
) -> str | None:
    """Why `subject` (the edit or the test file at `path`) is out of scope, or None.

    `allowed` is the setting that lists where it may go and its patterns: allowed_paths for
    an edit, test_paths for the model's regression test. Without `built_in_rules` (incidents
    that started before them, see scope_violations) forbidden_paths match case-sensitively
    and the execution-sensitive list does not apply."""
    unsafe = _unsafe_path(path)
    if unsafe:
        return f"{subject} {unsafe}"
    normalized = _normalized(path)
    forbidden = _first_match(policy.forbidden_paths, normalized, ignore_case=built_in_rules)
    if forbidden:
        return f"{subject} is forbidden by forbidden_paths pattern {forbidden!r}"
    key, patterns = allowed
    if not _first_match(patterns, normalized):
        listed = ", ".join(repr(pattern) for pattern in patterns) or "none"
        return f"{subject} matches no {key} pattern (allowed: {listed})"
    rule = built_in_rules and _execution_sensitive_rule(
        normalized, policy.allow_execution_sensitive_paths
    )
    if rule:
        return (
            f"{subject} touches an execution-sensitive file (built-in rule {rule!r}); "
            f"lift it with services.{service}.allow_execution_sensitive_paths"
        )
    return None


def path_in_scope(
    path: str,
    allowed: Sequence[str],
    forbidden: Sequence[str],
    allow_execution_sensitive: Sequence[str] = (),
) -> bool:
    """Whether a repository-relative `path` may be edited under the allowed/forbidden globs.

    Patterns are gitignore-like (`app/**`, `**/migrations/**`, `*.pem`, `secrets/`) and
    matched with pathspec; a pattern that matches a directory covers everything under it.
    Forbidden wins over allowed and, like the built-in EXECUTION_SENSITIVE_PATHS, ignores
    case; allowed patterns match case-sensitively. Absolute paths, backslashes, `..`
    segments and anything inside `.git/` are never in scope.
    """
    policy = ServicePolicy(
        allowed_paths=list(allowed),
        forbidden_paths=list(forbidden),
        allow_execution_sensitive_paths=list(allow_execution_sensitive),
    )
    return _scope_problem("path", path, policy, "<name>", ("allowed_paths", allowed)) is None


def scope_violations(
    edits: Sequence[Edit],
    policy: ServicePolicy,
    service: str = "<name>",
    *,
    built_in_rules: bool = True,
) -> list[str]:
    """One message per edit the service's policy does not allow, naming the path and rule.

    `built_in_rules=False` is the rule set incidents started with before the
    execution-sensitive list and case-insensitive forbidden paths: the workflow uses it when
    it replays such an incident, so its history stays valid."""
    problems = (
        _scope_problem(
            f"edit to {edit.path!r}",
            edit.path,
            policy,
            service,
            ("allowed_paths", policy.allowed_paths),
            built_in_rules=built_in_rules,
        )
        for edit in edits
    )
    return [problem for problem in problems if problem]


def regression_test_violation(
    path: str, policy: ServicePolicy, service: str = "<name>"
) -> str | None:
    """Why the model's regression test may not be written at `path`, or None.

    The edit rules hold (forbidden_paths, execution-sensitive files such as conftest.py),
    and the file goes only into the service's test directories (test_paths), whatever
    allowed_paths says: the test runs before anyone approves, it is not part of the change.
    """
    return _scope_problem(
        f"regression test {path!r}", path, policy, service, ("test_paths", policy.test_paths)
    )


def lifted_execution_sensitive(paths: Sequence[str], policy: ServicePolicy) -> list[str]:
    """The paths a built-in execution-sensitive rule covers that the service's opt-in lets
    through: the approval message names them, so nobody approves one unawares."""
    lifted = policy.allow_execution_sensitive_paths
    return [
        path
        for path in paths
        if _first_match(EXECUTION_SENSITIVE_PATHS, _normalized(path), ignore_case=True)
        and _first_match(lifted, _normalized(path))
    ]


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
        # The refusal names nobody: whoever clicks learns they may not, not whom to imitate.
        if not approval.approvers:
            return (
                f"{request.approver!r} is not an approver of this incident: no approvers are "
                "configured (services.<name>.approvers in remedy.toml)"
            )
        return (
            f"{request.approver!r} is not an approver of this incident "
            "(an operator adds approvers in services.<name>.approvers in remedy.toml)"
        )
    if request.decision == "reject" and not (request.reason and request.reason.strip()):
        return "a rejection needs a reason: say why the proposed fix is rejected"
    return None
