"""A phase as people read it, in one place for Slack, forge text and the CLI.

Phase values are identifiers (`opening_pr`); people read words. Where the change goes
depends on the forge: GitHub opens a pull request, the local forge pushes a branch to the
repository's own remote (no pull request exists), so the words say which.
"""

from __future__ import annotations

from typing import Literal

from remedy.models import Phase

Forge = Literal["local", "github"]

_LABELS: dict[Phase, str] = {
    Phase.RECEIVED: "Received",
    Phase.SYNCING: "Syncing the repository",
    Phase.INDEXING: "Indexing the code",
    Phase.INVESTIGATING: "Investigating",
    Phase.DIAGNOSING: "Diagnosing",
    Phase.PATCHING: "Patching",
    Phase.VERIFYING: "Verifying",
    Phase.AWAITING_APPROVAL: "Awaiting approval",
    Phase.REJECTED: "Rejected",
    Phase.EXPIRED: "Expired",
    Phase.TRIAGED: "Triaged",
    Phase.NOTIFIED: "Notified",
    Phase.RATE_LIMITED: "Rate limited",
    Phase.FAILED: "Failed",
    Phase.FIX_MERGED: "Fix merged",
    Phase.FIX_DEPLOYED: "Fix deployed",
    Phase.FIX_HELD: "Fix held",
    Phase.FIX_FAILED: "Fix failed",
    Phase.FIX_ABANDONED: "Change closed unmerged",
}
_PUBLISHING: dict[Forge, dict[Phase, str]] = {
    "github": {Phase.OPENING_PR: "Opening pull request", Phase.PR_OPENED: "Pull request opened"},
    "local": {Phase.OPENING_PR: "Pushing a branch", Phase.PR_OPENED: "Branch pushed"},
}


def phase_label(phase: Phase, forge: Forge) -> str:
    """`phase` in words, capitalized: "Awaiting approval", "Branch pushed"."""
    return _PUBLISHING[forge].get(phase) or _LABELS[phase]
