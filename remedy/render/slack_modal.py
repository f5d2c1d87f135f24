"""The modal a Reject click opens in Slack, and the reason it brings back.

A view, not a message: starter/slack.py opens it on a Reject click and reads it on submit;
the click's message (channel and ts) rides along in `private_metadata` so the listener can
mark that message as decided afterwards. Pure, like remedy.render.slack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

REJECT_VIEW_ID = "remedy_reject_reason"
REASON_INPUT_ID = "reason"


@dataclass(frozen=True)
class Rejection:
    """A submitted reason modal: which decision it answers, on which message, and why."""

    incident_id: str
    request_id: str
    channel: str
    message_ts: str
    reason: str


def reason_modal(
    incident_id: str, request_id: str, channel: str, message_ts: str
) -> dict[str, Any]:
    """The modal a Reject click opens; it remembers the click's message to update it after."""
    origin = {"incident_id": incident_id, "request_id": request_id, "channel": channel}
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW_ID,
        "private_metadata": json.dumps({**origin, "ts": message_ts}),
        "title": {"type": "plain_text", "text": "Reject the fix"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_INPUT_ID,
                "label": {"type": "plain_text", "text": "Why? (kept with the incident)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT_ID,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


def parse_reason_modal(view: dict[str, Any]) -> Rejection:
    """The Rejection a submitted `reason_modal` view carries."""
    origin = json.loads(view["private_metadata"])
    return Rejection(
        incident_id=origin["incident_id"],
        request_id=origin["request_id"],
        channel=origin["channel"],
        message_ts=origin["ts"],
        reason=view["state"]["values"][REASON_INPUT_ID][REASON_INPUT_ID]["value"],
    )
