"""Policy narrows what a model proposes; every branch, without Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remedy.models import ApprovalRequest, DecideRequest, Decision, Edit, ErrorInfo, Phase
from remedy.policy import (
    EXECUTION_SENSITIVE_PATHS,
    approval_refusal,
    diff_size_violation,
    is_notify_only,
    lifted_execution_sensitive,
    path_in_scope,
    regression_test_violation,
    scope_violations,
    severity_for,
)
from remedy.service_policy import ServicePolicy, Severity

# ---------------------------------------------------------------------------- severity


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        ("AI5001", Severity.CRITICAL),
        ("AUTH4003", Severity.HIGH),
        ("DB3002", Severity.MEDIUM),
        ("PAY2010", Severity.LOW),
        ("X1000", Severity.LOW),
        ("Q0099", Severity.LOW),
        ("DB301", Severity.MEDIUM),
        (" db5002 ", Severity.CRITICAL),
    ],
)
def test_severity_from_error_code(code: str, severity: Severity) -> None:
    assert severity_for(ErrorInfo(type="E", code=code), Severity.MEDIUM) == severity


@pytest.mark.parametrize(
    "code", [None, "", "5001", "DB50", "DB50012", "DB6001", "DB9001", "D-5001", "DB5O01", "DB 5001"]
)
def test_missing_or_invalid_code_gives_the_default(code: str | None) -> None:
    assert severity_for(ErrorInfo(type="E", code=code), Severity.HIGH) == Severity.HIGH
    assert severity_for(ErrorInfo(type="E", code=code), Severity.LOW) == Severity.LOW


@pytest.mark.parametrize(
    ("severity", "bar", "notify_only"),
    [
        (Severity.LOW, Severity.MEDIUM, True),
        (Severity.MEDIUM, Severity.MEDIUM, False),
        (Severity.HIGH, Severity.MEDIUM, False),
        (Severity.HIGH, Severity.CRITICAL, True),
        (Severity.CRITICAL, Severity.CRITICAL, False),
        (Severity.LOW, Severity.LOW, False),
    ],
)
def test_notify_only_below_the_bar(severity: Severity, bar: Severity, notify_only: bool) -> None:
    assert is_notify_only(severity, bar) is notify_only


# ---------------------------------------------------------------------------- scope

ALLOWED = ["app/**", "lib/*.py", "scripts/"]
FORBIDDEN = ["**/migrations/**", "**/auth/**", "*.pem", "app/settings.py"]


@pytest.mark.parametrize(
    ("path", "in_scope"),
    [
        ("app/cart.py", True),
        ("app/orders/views.py", True),
        ("./app/cart.py", True),
        ("lib/util.py", True),
        ("lib/deep/util.py", False),
        ("scripts/deploy.sh", True),
        ("scripts", False),
        ("tests/test_cart.py", False),
        ("README.md", False),
        ("app/migrations/0001_initial.py", False),
        ("migrations/0002.py", False),
        ("app/auth/login.py", False),
        ("app/keys/server.pem", False),
        ("app/settings.py", False),
        ("app/settings.pyc", True),
        ("/etc/passwd", False),
        ("/srv/app/app/cart.py", False),
        ("C:/app/cart.py", False),
        ("app/../etc/passwd", False),
        ("../outside.py", False),
        ("app\\cart.py", False),
        (".git/config", False),
        ("app/.git/hooks/pre-commit", False),
        ("app/.gitignore", True),
        ("", False),
        (".", False),
        ("app/\ncart.py", False),
    ],
)
def test_path_in_scope(path: str, in_scope: bool) -> None:
    assert path_in_scope(path, ALLOWED, FORBIDDEN) is in_scope


def test_forbidden_wins_and_defaults() -> None:
    assert path_in_scope("app/x.py", ["**"], []) is True
    assert path_in_scope("app/x.py", ["app/**"], ["app/**"]) is False
    assert path_in_scope("app/x.py", [], []) is False
    assert path_in_scope(".git/config", ["**"], []) is False


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("app", "app/x.py", True),
        ("app", "lib/app/x.py", True),
        ("/app", "lib/app/x.py", False),
        ("app/*", "app/sub/x.py", True),
        ("app/*.py", "app/sub/x.py", False),
        ("app/**/test_*.py", "app/test_a.py", True),
        ("app/**/test_*.py", "app/a/b/test_a.py", True),
        ("app/**/test_*.py", "app/a/b/a_test.py", False),
        ("app/?.py", "app/a.py", True),
        ("app/?.py", "app/ab.py", False),
        ("app/[ab].py", "app/b.py", True),
        ("app/[!ab].py", "app/b.py", False),
        ("app/v1.2/x.py", "app/v1x2/x.py", False),
        ("**", "anything/at/all.txt", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    assert path_in_scope(path, [pattern], []) is matches


def test_scope_violations_name_path_and_rule() -> None:
    policy = ServicePolicy(allowed_paths=["app/**"], forbidden_paths=["**/auth/**"])
    edits = [
        Edit(path="app/cart.py", search="a", replace="b"),
        Edit(path="app/auth/login.py", search="a", replace="b"),
        Edit(path="deploy/k8s.yaml", search="a", replace="b"),
        Edit(path="/etc/hosts", search="a", replace="b"),
        Edit(path="app/../../x.py", search="a", replace="b"),
        Edit(path="app\\x.py", search="a", replace="b"),
        Edit(path=".git/HEAD", search="a", replace="b"),
    ]

    assert scope_violations(edits, policy) == [
        "edit to 'app/auth/login.py' is forbidden by forbidden_paths pattern '**/auth/**'",
        "edit to 'deploy/k8s.yaml' matches no allowed_paths pattern (allowed: 'app/**')",
        "edit to '/etc/hosts' is absolute (use a path relative to the repository root)",
        "edit to 'app/../../x.py' contains a '..' segment (edits must stay inside the repository)",
        "edit to 'app\\\\x.py' contains a backslash "
        "(use a repository-relative path with forward slashes)",
        "edit to '.git/HEAD' is inside .git/ (git metadata is never edited)",
    ]
    assert scope_violations(edits[:1], policy) == []


def test_scope_violation_with_no_allowed_paths() -> None:
    policy = ServicePolicy(allowed_paths=[])
    assert scope_violations([Edit(path="app/x.py", search="a", replace="b")], policy) == [
        "edit to 'app/x.py' matches no allowed_paths pattern (allowed: none)"
    ]


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        (".github/workflows/ci.yml", ".github/**"),
        (".GitHub/Workflows/CI.yml", ".github/**"),
        (".gitlab-ci.yml", ".gitlab-ci.yml"),
        (".circleci/config.yml", ".circleci/**"),
        ("Jenkinsfile", "Jenkinsfile"),
        (".buildkite/pipeline.yml", ".buildkite/**"),
        ("azure-pipelines.yml", "azure-pipelines.yml"),
        ("Makefile", "Makefile"),
        ("MAKEFILE", "Makefile"),
        ("sub/GNUmakefile", "GNUmakefile"),
        ("setup.py", "setup.py"),
        ("setup.cfg", "setup.cfg"),
        ("pyproject.toml", "pyproject.toml"),
        ("tox.ini", "tox.ini"),
        ("noxfile.py", "noxfile.py"),
        ("conftest.py", "conftest.py"),
        ("tests/unit/ConfTest.py", "conftest.py"),
        ("pytest.ini", "pytest.ini"),
        ("web/package.json", "package.json"),
        (".pre-commit-config.yaml", ".pre-commit-config.yaml"),
        ("Dockerfile", "Dockerfile*"),
        ("deploy/Dockerfile.prod", "Dockerfile*"),
        ("docker-compose.override.yml", "docker-compose*.yml"),
        (".env", ".env*"),
        ("app/.env.production", ".env*"),
        ("certs/server.PEM", "*.pem"),
        ("app/tls.key", "*.key"),
        ("ops/id_rsa.pub", "id_rsa*"),
        (".npmrc", ".npmrc"),
        (".pypirc", ".pypirc"),
        (".netrc", ".netrc"),
    ],
)
def test_execution_sensitive_files_are_refused_whatever_allowed_paths_says(
    path: str, rule: str
) -> None:
    assert not path_in_scope(path, ["**"], [])
    [problem] = scope_violations(
        [Edit(path=path, search="a", replace="b")], ServicePolicy(), "shop"
    )
    assert problem == (
        f"edit to {path!r} touches an execution-sensitive file (built-in rule {rule!r}); "
        "lift it with services.shop.allow_execution_sensitive_paths"
    )


@pytest.mark.parametrize(
    "path",
    ["app/make.py", "app/environment.py", "docs/github.md", "app/keys.py", "tests/test_x.py"],
)
def test_ordinary_files_next_to_the_rules_stay_in_scope(path: str) -> None:
    assert path_in_scope(path, ["**"], [])


def test_every_built_in_rule_refuses_a_file_it_names() -> None:
    for rule in EXECUTION_SENSITIVE_PATHS:
        path = rule.replace("**", "x").replace("*", "x")
        assert not path_in_scope(path, ["**"], []), rule


def test_the_opt_in_lifts_only_what_it_names_and_is_shown() -> None:
    policy = ServicePolicy(
        allow_execution_sensitive_paths=["pyproject.toml", ".github/dependabot.yml"]
    )
    edits = [
        Edit(path=path, search="a", replace="b")
        for path in ("pyproject.toml", ".github/dependabot.yml", ".github/workflows/ci.yml",
                     "PyProject.toml", ".git/config", "app/x.py")
    ]  # fmt: skip

    problems = scope_violations(edits, policy, "shop")

    assert [p.split(" ")[2] for p in problems] == [
        "'.github/workflows/ci.yml'",
        "'PyProject.toml'",
        "'.git/config'",
    ]
    assert "is inside .git/" in problems[2], "git metadata is never lifted"
    assert lifted_execution_sensitive([e.path for e in edits], policy) == [
        "pyproject.toml",
        ".github/dependabot.yml",
    ]
    assert lifted_execution_sensitive(["app/x.py", "Makefile"], policy) == []


def test_forbidden_patterns_ignore_case_allowed_patterns_do_not() -> None:
    assert not path_in_scope("shop/Auth/users.py", ["**"], ["**/auth/**"])
    assert not path_in_scope("APP/SETTINGS.PY", ["**"], ["app/settings.py"])
    assert not path_in_scope("App/cart.py", ["app/**"], [])
    assert path_in_scope("app/cart.py", ["app/**"], [])
    assert not path_in_scope(".GIT/config", ["**"], [])
    assert not path_in_scope("app/.Git/hooks/pre-commit", ["**"], [])


def test_a_negated_pattern_never_widens_the_scope() -> None:
    assert not path_in_scope("app/auth/x.py", ["**"], ["**/auth/**", "!app/auth/x.py"])
    assert not path_in_scope("app/x.py", ["!app/x.py"], [])


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tests/test_qty.py", None),
        ("tests/unit/test_qty.py", None),
        ("test/test_qty.py", None),
        ("shop/tests/test_qty.py", None),
        ("app/test_qty.py", "matches no test_paths pattern"),
        ("test_qty.py", "matches no test_paths pattern"),
        ("tests/conftest.py", "built-in rule 'conftest.py'"),
        ("tests/auth/test_login.py", "forbidden by forbidden_paths pattern '**/auth/**'"),
        ("tests/../app/test_x.py", "contains a '..' segment"),
    ],
)
def test_the_regression_test_goes_only_into_the_test_directories(
    path: str, problem: str | None
) -> None:
    policy = ServicePolicy(allowed_paths=["app/**"], forbidden_paths=["**/auth/**"])
    found = regression_test_violation(path, policy, "shop")
    if problem is None:
        assert found is None
    else:
        assert (
            found is not None and problem in found and found.startswith(f"regression test {path!r}")
        )


def test_test_paths_are_configurable() -> None:
    policy = ServicePolicy(test_paths=["spec/**"])
    assert regression_test_violation("spec/test_x.py", policy) is None
    assert regression_test_violation("tests/test_x.py", policy) == (
        "regression test 'tests/test_x.py' matches no test_paths pattern (allowed: 'spec/**')"
    )


def test_diff_size() -> None:
    assert diff_size_violation(100, 100, 200) is None
    assert diff_size_violation(0, 0, 1) is None
    assert diff_size_violation(150, 51, 200) == (
        "patch changes 201 lines (150 added, 51 removed), more than max_diff_lines = 200; "
        "a change this large needs a human author"
    )


# ---------------------------------------------------------------------------- approval

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def approval(
    decision: Decision | None = None, approvers: list[str] | None = None
) -> ApprovalRequest:
    return ApprovalRequest(
        request_id="req-2",
        approvers=["U024BE7LH", "U0ALICE"] if approvers is None else approvers,
        requested_at=NOW,
        expires_at=NOW + timedelta(days=1),
        decision=decision,
    )


def decide(
    decision: str = "approve",
    approver: str = "U024BE7LH",
    request_id: str = "req-2",
    reason: str | None = None,
) -> DecideRequest:
    return DecideRequest.model_validate(
        {"decision": decision, "approver": approver, "request_id": request_id, "reason": reason}
    )


def test_acceptable_decisions() -> None:
    assert approval_refusal(Phase.AWAITING_APPROVAL, approval(), decide()) is None
    assert (
        approval_refusal(
            Phase.AWAITING_APPROVAL,
            approval(),
            decide("reject", "U0ALICE", reason="breaks refunds"),
        )
        is None
    )


@pytest.mark.parametrize("phase", [phase for phase in Phase if phase != Phase.AWAITING_APPROVAL])
def test_refused_when_not_awaiting_approval(phase: Phase) -> None:
    refusal = approval_refusal(phase, approval(), decide())
    assert refusal == (
        f"incident is not awaiting approval: it is in phase '{phase.value}', "
        "so there is nothing to approve or reject"
    )


def test_refused_without_approval_request() -> None:
    assert approval_refusal(Phase.AWAITING_APPROVAL, None, decide()) == (
        "incident has no approval request: there is nothing to approve or reject"
    )


@pytest.mark.parametrize(("earlier", "done"), [("approve", "approved"), ("reject", "rejected")])
def test_refused_when_already_decided(earlier: str, done: str) -> None:
    decided = approval(
        Decision.model_validate({"decision": earlier, "approver": "U0ALICE", "at": NOW})
    )
    assert approval_refusal(Phase.AWAITING_APPROVAL, decided, decide()) == (
        f"approval request 'req-2' was already {done} by 'U0ALICE'"
    )


def test_refused_for_stale_request_id() -> None:
    assert approval_refusal(Phase.AWAITING_APPROVAL, approval(), decide(request_id="req-1")) == (
        "stale approval request id 'req-1': the incident now awaits 'req-2' "
        "(look at the current proposal and decide again)"
    )


def test_refused_for_non_approver() -> None:
    assert approval_refusal(Phase.AWAITING_APPROVAL, approval(), decide(approver="U0MALLORY")) == (
        "'U0MALLORY' is not an approver of this incident "
        "(an operator adds approvers in services.<name>.approvers in remedy.toml)"
    )
    refused = approval_refusal(Phase.AWAITING_APPROVAL, approval(), decide(approver="U0MALLORY"))
    assert refused is not None and "U0ALICE" not in refused and "U024BE7LH" not in refused
    assert approval_refusal(Phase.AWAITING_APPROVAL, approval(approvers=[]), decide()) == (
        "'U024BE7LH' is not an approver of this incident: no approvers are configured "
        "(services.<name>.approvers in remedy.toml)"
    )


@pytest.mark.parametrize("reason", [None, "", "   \n"])
def test_rejection_needs_a_reason(reason: str | None) -> None:
    assert approval_refusal(
        Phase.AWAITING_APPROVAL, approval(), decide("reject", reason=reason)
    ) == ("a rejection needs a reason: say why the proposed fix is rejected")
    assert (
        approval_refusal(Phase.AWAITING_APPROVAL, approval(), decide("approve", reason=reason))
        is None
    )


def refusal(phase: Phase, request: ApprovalRequest | None, decision: DecideRequest) -> str:
    reason = approval_refusal(phase, request, decision)
    assert reason is not None
    return reason


def test_checks_run_in_order() -> None:
    decided = approval(
        Decision.model_validate({"decision": "approve", "approver": "U0ALICE", "at": NOW})
    )
    everything_wrong = decide("reject", approver="U0MALLORY", request_id="req-1")

    # A decision already taken is reported first: a second click learns who decided, even
    # after the incident has moved on to opening the pull request.
    assert "already approved by 'U0ALICE'" in refusal(Phase.OPENING_PR, decided, everything_wrong)
    assert refusal(Phase.PR_OPENED, approval(), everything_wrong).startswith("incident is not")
    assert refusal(Phase.AWAITING_APPROVAL, None, everything_wrong).startswith("incident has no")
    assert refusal(Phase.AWAITING_APPROVAL, approval(), everything_wrong).startswith("stale")
    not_approver = decide("reject", approver="U0MALLORY")
    assert "is not an approver" in refusal(Phase.AWAITING_APPROVAL, approval(), not_approver)
