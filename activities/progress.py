"""The one heartbeat of every activity: long work reports progress so a hang surfaces."""

from __future__ import annotations

from temporalio import activity


def heartbeat(note: str) -> None:
    """Heartbeat `note` when running inside an activity; a no-op anywhere else (CLI, tests)."""
    if activity.in_activity():
        activity.heartbeat(note)
