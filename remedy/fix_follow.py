"""The rules by which an incident that follows its fix reads the releases it hears of
(issue 13): plain functions over `FixFollowUp`, which workflows/incident.py calls from its
signal handlers and after each `release_contains` check.

A release is checked once for the fix commit. Reports of the error from a release with the
fix fail the fix; reports from one without it are stale (old pods still running, a canary
of an earlier build) and never do.
"""

from __future__ import annotations

from remedy.models import FixFollowUp

# Distinct releases one incident checks for its fix; beyond it, reports only count (an
# authenticated service could still name a new release in every report).
MAX_RELEASES_CHECKED = 200


def hear_of_release(fix: FixFollowUp, release: str, reports: int) -> None:
    """A release the service runs, with `reports` of the error from it: counted at once
    when the release was checked already, else queued for a check (with its reports)."""
    if release in fix.releases_seen:
        if fix.releases_seen[release]:
            _recurred(fix, release, reports)
        else:
            fix.stale_reports += reports
    elif release in fix.releases_to_check:
        fix.releases_to_check[release] += reports
    elif len(fix.releases_seen) + len(fix.releases_to_check) < MAX_RELEASES_CHECKED:
        fix.releases_to_check[release] = reports
    else:
        fix.stale_reports += reports


def settle_check(fix: FixFollowUp, release: str, contains: bool | None) -> bool:
    """Take a queued release off the queue once checked: its reports (those heard while git
    looked too) count as recurrences or as stale. `contains` None: the check could not run,
    so the release is not remembered and a later report queues it again. True when the
    release holds the fix."""
    reports = fix.releases_to_check.pop(release, 0)
    if contains is not None:
        fix.releases_seen[release] = contains
    if not contains:
        fix.stale_reports += reports
        return False
    _recurred(fix, release, reports)
    return True


def _recurred(fix: FixFollowUp, release: str, reports: int) -> None:
    fix.recurrences += reports
    if reports and fix.failed_release is None:
        fix.failed_release = release


def duration_text(seconds: int) -> str:
    """A window as a reason names it: "7 d", "6 h", "90 s"."""
    days, rest = divmod(seconds, 86_400)
    if days and not rest:
        return f"{days} d"
    hours, rest = divmod(seconds, 3600)
    if hours and not rest:
        return f"{hours} h"
    return f"{seconds} s"
