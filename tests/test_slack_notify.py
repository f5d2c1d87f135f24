"""The `notify` activity against a loopback Slack, through the real slack_sdk client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import SlackActivities
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, ServiceConfig, SlackConfig
from remedy.models import NotifyRequest, NotifyResult, Phase
from remedy.render.slack import (
    APPROVE_ACTION_ID,
    DECISION_BLOCK_ID,
    REASON_INPUT_ID,
    REJECT_ACTION_ID,
    decided_blocks,
    detail_text,
    parse_button_value,
    parse_reason_modal,
    reason_modal,
    render_message,
)
from tests.fakes.incident_factory import APPROVER, INCIDENT_ID, TRACEBACK, make_incident
from tests.fakes.slack_server import BOT_TOKEN, SlackServer

CHANNEL = "C0INCIDENTS"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture
def activities(
    slack: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SlackActivities:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    config = RemedyConfig(
        slack=SlackConfig(api_url=slack.api_url),
        services={
            "checkout": ServiceConfig(
                repo=str(tmp_path), slack_channel="#checkout-incidents", approvers=[APPROVER]
            )
        },
    )
    return SlackActivities(config, ArtifactStore(tmp_path / "artifacts"))


async def notify(activities: SlackActivities, request: NotifyRequest) -> NotifyResult:
    result: NotifyResult = await ActivityEnvironment().run(activities.notify, request)
    return result


def block_texts(message: dict) -> str:
    texts = []
    for block in message["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(field["text"] for field in block.get("fields", []))
        texts.extend(
            e.get("text", "") for e in block.get("elements", []) if block["type"] == "context"
        )
    return "\n".join(texts)


async def test_first_notify_posts_one_message_raw_error_first_with_buttons(
    slack: SlackServer, activities: SlackActivities, tmp_path: Path
) -> None:
    incident = make_incident()
    assert incident.patch is not None
    incident.patch.diff = ArtifactStore(tmp_path / "artifacts").put_text(
        f"{INCIDENT_ID}/patch.diff", "--- a/app/cart.py\n+++ b/app/cart.py\n-old <line>\n+new\n"
    )
    result = await notify(activities, NotifyRequest(incident=incident, raw_error=TRACEBACK))

    assert result.delivered and result.posted and result.channel == CHANNEL
    [message] = slack.top_level()
    assert message["ts"] == result.ts
    first = message["blocks"][0]["text"]["text"]
    assert first.startswith("```Traceback") and "KeyError: 'sku'" in first
    text = block_texts(message)
    for expected in (
        "checkout",
        "high",
        "*Occurrences*\n3",
        "82% confidence",
        "app/cart.py:2",
        "dddddddddd",
        "+1 -1",
        "-old &lt;line&gt;\n+new",
        "passed (12 tests)",
        "$0.0123",
        "Workflow in Temporal UI",
        f"<@{APPROVER}>",
    ):
        assert expected in text, expected
    buttons = [
        e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == [APPROVE_ACTION_ID, REJECT_ACTION_ID]
    assert message["metadata"]["event_payload"] == {"incident_id": INCIDENT_ID}
    remembered = ArtifactStore(tmp_path / "artifacts").get_json(f"{INCIDENT_ID}/slack.json")
    assert remembered["ts"] == result.ts
    assert slack.replies(message["ts"]) == []


async def test_later_phases_edit_the_message_and_reply_once_per_phase(
    slack: SlackServer, activities: SlackActivities
) -> None:
    first = await notify(activities, NotifyRequest(incident=make_incident()))
    approved = make_incident(Phase.OPENING_PR, decision="approve")
    second = await notify(activities, NotifyRequest(incident=approved))
    again = await notify(activities, NotifyRequest(incident=approved))
    done = make_incident(Phase.PR_OPENED, decision="approve", pr_url="http://x/pull/7")
    third = await notify(activities, NotifyRequest(incident=done))

    assert (first.posted, second.posted, again.posted, third.posted) == (True, False, False, False)
    assert (second.replied, again.replied, third.replied) == (True, False, True)
    [message] = slack.top_level()
    assert f"Approved by <@{APPROVER}>" in block_texts(message)
    assert "<http://x/pull/7|pull request opened>" in block_texts(message)
    assert not any(b["type"] == "actions" for b in message["blocks"]), (
        "buttons stay after a decision"
    )
    replies = slack.replies(message["ts"])
    assert [r["metadata"]["event_payload"]["key"] for r in replies] == [
        "phase:opening_pr",
        "phase:pr_opened",
    ]


async def test_crash_between_post_and_remembering_it_yields_one_message(
    slack: SlackServer, activities: SlackActivities
) -> None:
    slack.fail("chat.postMessage", "drop")
    with pytest.raises(Exception, match="disconnected"):
        await notify(activities, NotifyRequest(incident=make_incident()))
    assert len(slack.top_level()) == 1, "the post happened; the worker never learned its ts"

    retried = await notify(activities, NotifyRequest(incident=make_incident()))

    [message] = slack.top_level()
    assert retried.delivered and not retried.posted and retried.ts == message["ts"]


async def test_crash_after_a_thread_reply_does_not_reply_twice(
    slack: SlackServer, activities: SlackActivities
) -> None:
    await notify(activities, NotifyRequest(incident=make_incident()))
    slack.fail("chat.postMessage", "drop")
    expired = make_incident(Phase.EXPIRED)
    with pytest.raises(Exception, match="disconnected"):
        await notify(activities, NotifyRequest(incident=expired))

    await notify(activities, NotifyRequest(incident=expired))

    [message] = slack.top_level()
    [reply] = slack.replies(message["ts"])
    assert "Expired: no decision by" in reply["text"]
    assert "Expired: no decision by" in block_texts(message)


async def test_reminder_mentions_the_approvers_once_per_request(
    slack: SlackServer, activities: SlackActivities
) -> None:
    await notify(activities, NotifyRequest(incident=make_incident()))
    reminder = NotifyRequest(incident=make_incident(), kind="reminder")
    assert (await notify(activities, reminder)).replied
    assert not (await notify(activities, reminder)).replied

    [message] = slack.top_level()
    [reply] = slack.replies(message["ts"])
    assert reply["text"].startswith(f"<@{APPROVER}>: reminder")


async def test_a_deleted_message_is_posted_again(
    slack: SlackServer, activities: SlackActivities
) -> None:
    await notify(activities, NotifyRequest(incident=make_incident()))
    slack.messages.clear()

    result = await notify(activities, NotifyRequest(incident=make_incident(Phase.EXPIRED)))

    assert result.posted and len(slack.top_level()) == 1


async def test_rate_limit_retries_after_the_delay_slack_asks_for(
    slack: SlackServer, activities: SlackActivities
) -> None:
    slack.fail(
        "chat.postMessage", "respond", status=429, body="ratelimited", headers={"Retry-After": "7"}
    )
    with pytest.raises(ApplicationError) as caught:
        await notify(activities, NotifyRequest(incident=make_incident()))
    assert not caught.value.non_retryable and "chat.postMessage" in str(caught.value)
    assert caught.value.next_retry_delay is not None
    assert caught.value.next_retry_delay.total_seconds() == 7
    assert slack.top_level() == []


async def test_bad_token_is_not_retried_and_names_the_fix(
    slack: SlackServer, activities: SlackActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    with pytest.raises(ApplicationError) as caught:
        await notify(activities, NotifyRequest(incident=make_incident()))
    assert caught.value.non_retryable
    assert "invalid_auth" in str(caught.value) and "bot token" in str(caught.value)
    assert "xoxb-wrong" not in str(caught.value)


async def test_unknown_channel_names_the_config_key(
    slack: SlackServer, activities: SlackActivities
) -> None:
    slack.channels.clear()
    with pytest.raises(ApplicationError) as caught:
        await notify(activities, NotifyRequest(incident=make_incident()))
    assert caught.value.non_retryable
    assert "services.checkout.slack_channel" in str(caught.value)


async def test_without_a_token_nothing_is_sent(
    slack: SlackServer, activities: SlackActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    result = await notify(activities, NotifyRequest(incident=make_incident()))
    assert not result.delivered and "SLACK_BOT_TOKEN" in (result.reason or "")
    assert slack.calls == []


async def test_secrets_in_a_diff_or_model_text_never_reach_slack(
    slack: SlackServer, activities: SlackActivities, tmp_path: Path
) -> None:
    incident = make_incident()
    assert incident.patch is not None and incident.diagnosis and incident.diagnosis.diagnosis
    incident.diagnosis.diagnosis.root_cause = (
        "the client sends api_key=sk-ant-api03-abcdefghijklmnop"
    )
    incident.patch.diff = ArtifactStore(tmp_path / "artifacts").put_text(
        f"{INCIDENT_ID}/patch.diff",
        "--- a/app/db.py\n+++ b/app/db.py\n-URL = 'postgres://app:hunter2@db/shop'\n+URL = env()\n",
    )
    await notify(activities, NotifyRequest(incident=incident, raw_error=TRACEBACK))
    await notify(
        activities,
        NotifyRequest(incident=incident.model_copy(update={"phase": Phase.TRIAGED})),
    )
    sent = repr(slack.top_level()) + repr(slack.requests if hasattr(slack, "requests") else "")
    assert "hunter2" not in sent and "abcdefghijklmnop" not in sent
    assert "[REDACTED]" in block_texts(slack.top_level()[0])


# ---------------------------------------------------------------------------- rendering alone


def test_rendering_escapes_untrusted_text_and_keeps_slack_syntax_its_own() -> None:
    incident = make_incident(Phase.REJECTED, decision="reject", reason="<!channel> & <b>no</b>")
    incident.error_message = "<@U0EVIL> & <https://evil.example|click>"
    assert incident.diagnosis and incident.diagnosis.diagnosis
    incident.diagnosis.diagnosis.root_cause = "a `<script>` & friends"

    _, blocks = render_message(incident)

    text = block_texts({"blocks": blocks})
    assert "&lt;@U0EVIL&gt; &amp; &lt;https://evil.example|click&gt;" in text
    assert "a `&lt;script&gt;` &amp; friends" in text
    assert f"Rejected by <@{APPROVER}>: &lt;!channel&gt; &amp; &lt;b&gt;no&lt;/b&gt;" in text
    assert "<@U0EVIL>" not in repr(blocks) and "<!channel>" not in repr(blocks)
    assert "<http://127.0.0.1:8233/" in text, "Remedy's own links stay links"
    assert not any(b.get("block_id") == DECISION_BLOCK_ID for b in blocks)


def test_thread_text_per_phase_and_reminder() -> None:
    assert detail_text(make_incident(Phase.DIAGNOSING)) == (
        "*Diagnosing*\ntotal() reads item['price'] without a default"
    )
    waiting = detail_text(make_incident())
    assert waiting.startswith("*Awaiting approval*\nVerification passed.\nApproval requested")
    assert f"<@{APPROVER}>" in waiting
    reminder = detail_text(make_incident(), "reminder")
    assert reminder.startswith(f"<@{APPROVER}>: reminder")


def test_buttons_and_the_reason_modal_carry_what_the_listener_needs() -> None:
    _, blocks = render_message(make_incident())
    [actions] = [b for b in blocks if b.get("block_id") == DECISION_BLOCK_ID]
    values = {parse_button_value(e["value"]) for e in actions["elements"]}
    assert values == {(INCIDENT_ID, "req-1")}
    with pytest.raises(ValueError, match="not a Remedy decision button"):
        parse_button_value('{"incident": 1}')
    decided = decided_blocks(blocks, "Approved by <@U1>")
    assert decided[:-1] == [b for b in blocks if b is not actions]
    assert decided[-1]["text"]["text"] == "Approved by <@U1>"

    view = reason_modal(INCIDENT_ID, "req-1", CHANNEL, "123.456")
    submitted = {**view, "state": {"values": {REASON_INPUT_ID: {REASON_INPUT_ID: {"value": "no"}}}}}
    rejection = parse_reason_modal(submitted)
    assert (rejection.incident_id, rejection.request_id, rejection.reason) == (
        INCIDENT_ID,
        "req-1",
        "no",
    )
    assert (rejection.channel, rejection.message_ts) == (CHANNEL, "123.456")
