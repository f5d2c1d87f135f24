"""A service's policy as the incident pins it, and the severities it routes on.

Its own module, not remedy/models.py, because the configuration needs these and every
command loads the configuration: a `remedy search` or `remedy --help` then does not build
the ninety models of the workflow boundary it never uses.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


DEFAULT_TEST_PATHS = ("tests/**", "test/**", "**/tests/**")


class IncidentLimits(BaseModel):
    """The limits an incident pins with its policy; remedy.toml sets them in [limits]
    (config.LimitsConfig, which adds the worker's own)."""

    approval_timeout_s: int = Field(
        default=86_400, ge=1, description="The approval buttons expire; a reminder at half of it"
    )
    max_diff_lines: int = Field(default=200, ge=1)
    max_fix_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries at a fix: a patch that does not apply or fails verification goes "
        "back to the model with the failure, until this many",
    )
    quiet_window_s: int = Field(
        default=3_600,
        ge=0,
        description="After a terminal phase the incident keeps absorbing occurrences until it has "
        "been quiet this long; only then can the same fingerprint open a new incident",
    )
    hold_window_s: int = Field(
        default=7 * 86_400,
        ge=1,
        description="A deployed fix holds when no report of the fingerprint comes from a release "
        "with the fix for this long",
    )
    follow_fix_s: int = Field(
        default=30 * 86_400,
        ge=0,
        description="How long an opened change is followed to its merge, and a merged one to its "
        "deploy, before the incident stops following it; 0: it ends at pr_opened",
    )
    change_poll_s: int = Field(
        default=900,
        ge=1,
        description="How often the forge is asked whether the change was merged or closed (the "
        "GitHub webhook tells at once; the local forge has none)",
    )


class ServicePolicy(IncidentLimits):
    """A service's non-secret policy, pinned when the incident starts (auditable in history)."""

    approvers: list[str] = Field(default_factory=list)
    allowed_paths: list[str] = Field(default_factory=lambda: ["**"])
    forbidden_paths: list[str] = Field(default_factory=list)
    allow_execution_sensitive_paths: list[str] = Field(
        default_factory=list,
        description="Patterns of execution-sensitive files (CI, build hooks, keys: "
        "remedy.policy.EXECUTION_SENSITIVE_PATHS) the model may edit anyway; shown to approvers",
    )
    test_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TEST_PATHS),
        description="Where the model's regression test may be written",
    )
