"""The `notify` activity against a loopback Slack, through the real slack_sdk client."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import SlackActivities
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, ServiceConfig, SlackConfig
from remedy.models import NotifyRequest, NotifyResult, Phase, Proposal
from remedy.render.phases import phase_label
from remedy.render.slack import (
    APPROVE_ACTION_ID,
    DECISION_BLOCK_ID,
    REJECT_ACTION_ID,
    decided_blocks,
    detail_text,
    mention,
    parse_button_value,
    render_message,
    status_line,
)
from remedy.render.slack_modal import REASON_INPUT_ID, parse_reason_modal, reason_modal
from tests.fakes.incident_factory import APPROVER, INCIDENT_ID, TRACEBACK, make_incident
from tests.fakes.slack_server import BOT_TOKEN, SlackServer

CHANNEL = "C0INCIDENTS"
PUBLISHING = (Phase.OPENING_PR, Phase.PR_OPENED)


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


async def test_first_notify_posts_one_message_header_first_with_buttons(
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
    header, facts, raw = message["blocks"][:3]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "HIGH · KeyError in checkout · Awaiting approval",
            "emoji": False,
        },
    }
    assert facts["fields"][0]["text"] == "*Service*\ncheckout"
    assert (
        raw["text"]["text"].startswith("```Traceback") and "KeyError: 'sku'" in raw["text"]["text"]
    )
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
    [approve] = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]][:1]
    assert "push this change as a branch" in approve["confirm"]["text"]["text"], "no github_repo"
    assert message["text"] == "[high] KeyError in checkout: awaiting approval"
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


async def test_with_github_the_message_speaks_of_a_pull_request(
    slack: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    service = ServiceConfig(
        repo=str(tmp_path),
        slack_channel="#checkout-incidents",
        approvers=[APPROVER],
        github_repo="acme/checkout",
    )
    github = SlackActivities(
        RemedyConfig(slack=SlackConfig(api_url=slack.api_url), services={"checkout": service}),
        ArtifactStore(tmp_path / "artifacts"),
    )
    await notify(github, NotifyRequest(incident=make_incident()))
    opening = make_incident(Phase.OPENING_PR, decision="approve")
    await notify(github, NotifyRequest(incident=opening))

    [message] = slack.top_level()
    assert message["blocks"][0]["text"]["text"] == (
        "HIGH · KeyError in checkout · Opening pull request"
    )
    assert "opening pull request" in block_texts(message)
    [reply] = slack.replies(message["ts"])
    assert reply["text"].startswith("*Opening pull request*\n")


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


@pytest.mark.parametrize("forge", ["local", "github"])
@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_reads_as_words(phase: Phase, forge: Literal["local", "github"]) -> None:
    label = phase_label(phase, forge)
    assert label[0].isupper() and "_" not in label
    assert label not in ("Opening pr", "Pr opened")
    assert ("ull request" in label) == (forge == "github" and phase in PUBLISHING)
    assert ("ranch" in label) == (forge == "local" and phase in PUBLISHING)


def test_a_local_forge_pushes_a_branch_and_says_so() -> None:
    opening = make_incident(Phase.OPENING_PR, decision="approve")
    text, blocks = render_message(opening, forge="local")
    assert blocks[0]["text"]["text"] == "HIGH · KeyError in checkout · Pushing a branch"
    assert text == "[high] KeyError in checkout: pushing a branch"
    assert "pull request" not in json.dumps(blocks).lower()

    pushed = make_incident(Phase.PR_OPENED, decision="approve")
    pushed.proposal = Proposal(branch="remedy/checkout-1", commit="e" * 40, title="fix")
    # The proposal is what happened: a branch, whatever forge the caller assumed.
    _, blocks = render_message(pushed, forge="github")
    assert blocks[0]["text"]["text"] == "HIGH · KeyError in checkout · Branch pushed"
    assert "branch `remedy/checkout-1` pushed" in status_line(pushed, forge="github")
    assert "Branch `remedy/checkout-1`" in block_texts({"blocks": blocks})
    assert "pull request" not in json.dumps(blocks).lower()
    assert detail_text(pushed, forge="local").startswith("*Branch pushed*\n")

    _, waiting = render_message(make_incident(), forge="github")
    [actions] = [b for b in waiting if b.get("block_id") == DECISION_BLOCK_ID]
    confirm = actions["elements"][0]["confirm"]["text"]["text"]
    assert confirm == "Remedy will open a pull request with this change."


def test_only_slack_user_ids_are_mentioned() -> None:
    approvers = (APPROVER, "W0GRIDUSER", "alice@example.com", "<!channel>", "u123abc", "bob")
    incident = make_incident(approvers=approvers)

    _, blocks = render_message(incident)
    reply = detail_text(incident)
    reminder = detail_text(incident, "reminder")

    for shown in (block_texts({"blocks": blocks}), reply, reminder):
        assert f"<@{APPROVER}>, <@W0GRIDUSER>, alice@example.com, &lt;!channel&gt;" in shown
        assert re.findall(r"<@([^>]*)>", shown) == [APPROVER, "W0GRIDUSER"], shown
        assert "<!channel>" not in shown and "u123abc" in shown and "<@bob>" not in shown
    assert mention("alice@example.com") == "alice@example.com"
    assert mention("<@U0EVIL|x>") == "&lt;@U0EVIL|x&gt;"
    # A CLI approver is a name, not a Slack id: the note says who, and pings nobody.
    decided = make_incident(Phase.REJECTED, decision="reject", reason="no")
    assert decided.approval and decided.approval.decision
    decided.approval.decision.approver = "alice"
    assert status_line(decided) == ":no_entry: Rejected by alice: no"


def test_the_header_fits_slacks_limit_and_stays_escaped() -> None:
    incident = make_incident()
    incident.error_type = "<!channel> & " * 40

    _, blocks = render_message(incident)

    header = blocks[0]["text"]["text"]
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert len(header) <= 150
    assert header.startswith("HIGH · &lt;!channel&gt; &amp; ")
    assert header.endswith("… in checkout · Awaiting approval")
    assert "<" not in header and not re.search(r"&[a-z]*…", header), "no entity is cut"


def test_a_long_traceback_is_shortened_to_its_end() -> None:
    frames = [f'  File "app/m{i}.py", line {i}, in f{i}\n    call{i}()' for i in range(20)]
    traceback = "\n".join(["Traceback (most recent call last):", *frames, "KeyError: 'sku'"])

    _, blocks = render_message(make_incident(), raw_error=traceback)

    raw = blocks[2]["text"]["text"]
    assert raw.startswith("```… 30 earlier lines\n") and raw.endswith("KeyError: 'sku'```")
    assert "app/m19.py" in raw and "app/m13.py" not in raw
    assert len(raw.splitlines()) == 13


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
