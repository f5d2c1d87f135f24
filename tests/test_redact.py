"""Credentials never survive redaction; ordinary traceback text is left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.forge import LocalForge
from activities.git import GitActivities
from activities.llm import DiagnosisActivities
from remedy.artifacts import ArtifactStore
from remedy.config import LLMConfig
from remedy.models import (
    ApprovalRequest,
    Decision,
    DiagnoseRequest,
    Edit,
    ErrorEvent,
    ErrorInfo,
    Frame,
    IncidentStatus,
    InvestigateRequest,
    PatchRequest,
    Phase,
    ProposeRequest,
    SyncRequest,
)
from remedy.redact import (
    REDACTED,
    is_sensitive_tag,
    redact_code,
    redact_diff,
    redact_event,
    redact_markdown,
    redact_text,
    redact_value,
)
from remedy.render.pull_request import pull_request_body
from remedy.render.slack import detail_text, render_message
from remedy.service_policy import ServicePolicy, Severity
from tests.fakes import ollama_server as ollama_fake
from tests.repos import git, make_service_repo

GITHUB_CLASSIC = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "redacted", "secret"),
    [
        ("key AKIAIOSFODNN7EXAMPLE used", f"key {REDACTED} used", "AKIAIOSFODNN7EXAMPLE"),
        ("temp ASIAY34FZKBOKMUTVV7A", f"temp {REDACTED}", "ASIAY34FZKBOKMUTVV7A"),
        (
            f"aws_secret_access_key = {AWS_SECRET}",
            f"aws_secret_access_key = {REDACTED}",
            AWS_SECRET,
        ),
        (
            f'AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"',
            f'AWS_SECRET_ACCESS_KEY="{REDACTED}"',
            AWS_SECRET,
        ),
        (f"push with {GITHUB_CLASSIC}", f"push with {REDACTED}", GITHUB_CLASSIC),
        ("gho_" + "x" * 36, REDACTED, "gho_"),
        ("ghs_" + "y" * 36 + " app", f"{REDACTED} app", "ghs_"),
        ("ghu_" + "z" * 36, REDACTED, "ghu_"),
        ("github_pat_11ABCDEFG0_" + "q" * 59, REDACTED, "github_pat_"),
        ("bot xoxb-2048-4096-aBcDeFgHiJkLmNoP", f"bot {REDACTED}", "xoxb-"),
        ("user xoxp-1111-2222-3333-abcdef", f"user {REDACTED}", "xoxp-"),
        ("legacy xoxa-2-1234567890-abc", f"legacy {REDACTED}", "xoxa-"),
        ("socket xapp-1-A0123-456789-abcdef", f"socket {REDACTED}", "xapp-"),
        ("key sk-ant-api03-" + "k" * 90 + "-AA", f"key {REDACTED}", "sk-ant-"),
        ("OPENAI sk-proj-" + "p" * 48, f"OPENAI {REDACTED}", "sk-proj-"),
        ("sk-" + "a1" * 24, REDACTED, "sk-a1"),
        (f"cookie jwt={JWT};", f"cookie jwt={REDACTED};", JWT),
        (f"got {JWT}", f"got {REDACTED}", "eyJzdWIi"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}", "abc.def-ghi"),
        ("authorization: Basic dXNlcjpwYXNz", f"authorization: Basic {REDACTED}", "dXNlcjpwYXNz"),
        ("{'Authorization': 'Token 9f8e7d'}", f"{{'Authorization': 'Token {REDACTED}'}}", "9f8e7d"),
        ('"Authorization": "Bearer t0k3n"', f'"Authorization": "Bearer {REDACTED}"', "t0k3n"),
        ("sent Bearer " + "Zm9vYmFyYmF6cXV4cXV1eA==", f"sent Bearer {REDACTED}", "Zm9vYmFy"),
        ("Cookie: sessionid=abc123; theme=dark", f"Cookie: {REDACTED}", "abc123"),
        ("password=hunter2 user=bob", f"password={REDACTED} user=bob", "hunter2"),
        ("login failed passwd: hunter2", f"login failed passwd: {REDACTED}", "hunter2"),
        ("pwd='hunter2'", f"pwd='{REDACTED}'", "hunter2"),
        (
            '{"password": "hunter2", "user": "bob"}',
            f'{{"password": "{REDACTED}", "user": "bob"}}',
            "hunter2",
        ),
        ('{"secret":"s3cr3t"}', f'{{"secret":"{REDACTED}"}}', "s3cr3t"),
        ("token: abc123", f"token: {REDACTED}", "abc123"),
        ("?api_key=abc123&page=2", f"?api_key={REDACTED}&page=2", "abc123"),
        ("apikey=abc123", f"apikey={REDACTED}", "abc123"),
        ("X-Api-Key: abc123", f"X-Api-Key: {REDACTED}", "abc123"),
        ("access_key: AK12", f"access_key: {REDACTED}", "AK12"),
        ("private_key='-----x'", f"private_key='{REDACTED}'", "-----x"),
        ("client_secret=cs_123", f"client_secret={REDACTED}", "cs_123"),
        ("DB_PASSWORD=s3cret", f"DB_PASSWORD={REDACTED}", "s3cret"),
        ("spring.datasource.password=s3cret", f"spring.datasource.password={REDACTED}", "s3cret"),
        (
            "User(name='bob', password='hunter2')",
            f"User(name='bob', password='{REDACTED}')",
            "hunter2",
        ),
        ('{"accessToken": "at-1"}', f'{{"accessToken": "{REDACTED}"}}', "at-1"),
        ('escaped "password": "a\\"b"', f'escaped "password": "{REDACTED}"', 'a\\"b'),
        (
            "postgres://shop:s3cret@db.internal:5432/shop",
            f"postgres://shop:{REDACTED}@db.internal:5432/shop",
            "s3cret",
        ),
        ("redis://:s3cret@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0", "s3cret"),
        ("amqps://user:p%40ss@mq/vhost", f"amqps://user:{REDACTED}@mq/vhost", "p%40ss"),
        (
            "dial root:s3cret@tcp(10.0.0.5:3306)/shop",
            f"dial root:{REDACTED}@tcp(10.0.0.5:3306)/shop",
            "s3cret",
        ),
    ],
)
def test_each_pattern(text: str, redacted: str, secret: str) -> None:
    result = redact_text(text)
    assert result == redacted
    assert secret not in result
    assert redact_text(result) == result  # idempotent: fingerprints of redacted text are stable


def test_pem_private_key_blocks() -> None:
    key = "MIIEowIBAAKCAQEA1234\nabcdEFGH5678\n"
    text = f"config:\n-----BEGIN RSA PRIVATE KEY-----\n{key}-----END RSA PRIVATE KEY-----\ntail"

    result = redact_text(text)

    assert result == (
        f"config:\n-----BEGIN RSA PRIVATE KEY-----\n{REDACTED}\n-----END RSA PRIVATE KEY-----\ntail"
    )
    truncated = redact_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA")
    assert truncated == f"-----BEGIN OPENSSH PRIVATE KEY-----\n{REDACTED}"
    public = "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----"
    assert redact_text(public) == public


@pytest.mark.parametrize(
    "text",
    [
        "KeyError: 'token'",
        "TypeError: login() missing 1 required positional argument: 'password'",
        "app.errors.TokenError: token expired",
        "jwt.exceptions.InvalidSignatureError: Signature verification failed",
        "openai.BadRequestError: max_tokens=5000 is too large",
        "connect to https://db.internal:5432/shop failed",
        "url = f'postgres://{user}:{password}@{host}/db'",
        "dsn = '%(user)s:%(password)s@tcp(db)/shop' or ${USER}:${DB_PASS}@tcp(db)",
        "if token == expected and secret != other:",
        "the task-runner desk-1234 is basic; unauthorized for url",
        "password=",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_real_traceback_is_unchanged(tmp_path: Path) -> None:
    (tmp_path / "auth.py").write_text(
        textwrap.dedent(
            """\
            SESSIONS = {}


            def authenticate(username, password, token=None):
                session = SESSIONS[username]
                return session.check(password=password, token=token)


            def login(request):
                headers = {"Authorization": f"Bearer {request['token']}"}
                return authenticate(request["user"], password=request["password"]), headers


            login({"user": "bob", "password": "", "token": ""})
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "auth.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    traceback = result.stderr
    assert "Traceback (most recent call last)" in traceback and "password=" in traceback

    assert redact_text(traceback) == traceback


def test_source_lines_keep_variables_but_lose_literals() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/app/auth.py", line 12, in login\n'
        "    user = authenticate(request, username=username, password=password)\n"
        '  File "/srv/app/app/auth.py", line 30, in authenticate\n'
        '    token: str = sign(password="hunter2", secret=settings.SECRET)\n'
        "                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "app.errors.AuthError: bad login for password=hunter2\n"
    )

    result = redact_text(traceback)

    assert "username=username, password=password)" in result
    assert f'token: str = sign(password="{REDACTED}", secret=settings.SECRET)' in result
    assert result.endswith(f"bad login for password={REDACTED}\n")
    assert "hunter2" not in result


def test_large_inputs_are_handled() -> None:
    # 200 KB of text shaped to make a backtracking regex retry at every position.
    size = 200_000
    adversarial = [
        "a" * size,
        "a." * (size // 2),
        "password=" * (size // 9),
        "a://b:" + "c:" * (size // 2),
        '"a:' * (size // 3),
        "ab:" * (size // 3),
        "\n" * size,
        "-----BEGIN PRIVATE KEY-----" * (size // 27),
        "eyJa." * (size // 5),
        'File "x", line 1\n    password=' * (size // 30),
    ]
    for text in adversarial:
        result = redact_text(text)
        assert redact_text(result) == result
    secret_at_end = "x" * size + " password=hunter2"
    assert redact_text(secret_at_end).endswith(f"password={REDACTED}")


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("db_password", True),
        ("Authorization", True),
        ("cookie", True),
        ("session_id", True),
        ("api_key", True),
        ("apiKey", True),
        ("X-Api-Key", True),
        ("github_token", True),
        ("client_secret", True),
        ("region", False),
        ("release", False),
        ("max_tokens", False),
        ("user_id", False),
    ],
)
def test_sensitive_tag_keys(key: str, sensitive: bool) -> None:
    assert is_sensitive_tag(key) is sensitive


def test_redact_event() -> None:
    event = ErrorEvent(
        service="checkout",
        error=ErrorInfo(
            type="OperationalError", message="could not connect to postgres://app:pw1@db/shop"
        ),
        traceback=(
            "Traceback (most recent call last):\n"
            '  File "/srv/app/app/db.py", line 3, in connect\n'
            '    return connect(password="pw2")\n'
            "OperationalError: could not connect to postgres://app:pw1@db/shop\n"
        ),
        frames=[
            Frame(file="app/db.py", line=3, function="connect", code='connect(password="pw2")'),
            Frame(file="app/db.py", line=9, function="main", code="connect(password=password)"),
            Frame(file="app/db.py", line=11, function="main"),
        ],
        tags={
            "region": "eu",
            "Authorization": "Basic dXNlcjpwYXNz",
            "session": "abc",
            "request": f"GET /orders?token={GITHUB_CLASSIC}",
        },
    )

    redacted = redact_event(event)

    assert redacted.error.message == f"could not connect to postgres://app:{REDACTED}@db/shop"
    assert redacted.traceback is not None
    assert "pw1" not in redacted.traceback and "pw2" not in redacted.traceback
    assert [frame.code for frame in redacted.frames] == [
        f'connect(password="{REDACTED}")',
        "connect(password=password)",
        None,
    ]
    assert redacted.tags == {
        "region": "eu",
        "Authorization": REDACTED,
        "session": REDACTED,
        "request": f"GET /orders?token={REDACTED}",
    }
    assert event.error.message.endswith("app:pw1@db/shop")  # the original is not changed
    assert ErrorEvent.model_validate(redacted.model_dump()) == redacted


def test_redact_event_keeps_field_limits() -> None:
    message = "p=" + "password=x " * 1489  # 16 381 characters; each secret grows by 9
    event = ErrorEvent(
        service="checkout", error=ErrorInfo(type="E", message=message), frames=[Frame(file="a.py")]
    )

    redacted = redact_event(event)

    assert len(redacted.error.message) == 16_384
    assert ErrorEvent.model_validate(redacted.model_dump()).error.message == redacted.error.message


# ---------------------------------------------------------------------------- every artifact

PLANTED_AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PLANTED_GITHUB = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
SHOP = (
    "PRICES = {}\n"
    f'AWS_SECRET_ACCESS_KEY = "{PLANTED_AWS}"\n'
    f'DEPLOY_TOKEN = "{PLANTED_GITHUB}"\n'
    "def price(item):\n"
    "    return PRICES[item['sku']]\n"
)


def _all_text_under(root: Path) -> str:
    return "\n".join(
        path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    )


async def test_a_secret_in_a_repository_file_reaches_no_artifact_pr_or_slack(
    tmp_path: Path,
) -> None:
    """The whole path a secret next to the failing line used to take: the investigation's
    code window, the prompt, the model's tool transcript, the diff and its context lines, the
    pull request body and the Slack message. The change itself still lands exactly."""
    incident_id = "checkout-0123456789abcdef-a1b2c3d4"
    repo = make_service_repo(tmp_path)
    base = repo.commit({"app/shop.py": SHOP}, "Price items by sku")
    edit = Edit(
        path="app/shop.py", search="PRICES[item['sku']]", replace="PRICES.get(item['sku'], 0)"
    )
    with ollama_fake.OllamaServer() as ollama:
        config = repo.config(tmp_path / "home", llm="local").model_copy(
            update={"llm": LLMConfig(ollama_host=ollama.url)}
        )
        store = ArtifactStore(config.artifacts_dir)
        env = ActivityEnvironment()
        git_activities = GitActivities(config, store)
        worktree = env.run(
            git_activities.sync_repo,
            SyncRequest(incident_id=incident_id, service="checkout", release=base),
        )
        error = ErrorInfo(type="KeyError", message="'sku'")
        frames = [Frame(file="/srv/app/app/shop.py", line=5, function="price")]
        evidence = env.run(
            git_activities.investigate,
            InvestigateRequest(
                incident_id=incident_id, worktree=worktree, error=error, frames=frames
            ),
        )
        ollama.script(
            ollama_fake.tool_call("read_file", path="app/shop.py"),
            ollama_fake.answer(
                {
                    "summary": "Unknown skus raise KeyError in price()",
                    "root_cause": "price() indexes PRICES directly",
                    "confidence": 0.8,
                    "evidence": [{"path": "app/shop.py", "line": 5}],
                    "edits": [edit.model_dump()],
                }
            ),
        )
        diagnosis = await env.run(
            DiagnosisActivities(config, store).diagnose,
            DiagnoseRequest(
                incident_id=incident_id,
                severity=Severity.HIGH,
                worktree=worktree,
                error=error,
                frames=frames,
                evidence=evidence,
                policy=ServicePolicy(),
            ),
        )
        assert diagnosis.diagnosis is not None, diagnosis.abstained_reason
        sent = json.dumps(ollama.chats)
    patch = env.run(
        git_activities.prepare_patch,
        PatchRequest(
            incident_id=incident_id, worktree=worktree, edits=[edit], policy=ServicePolicy()
        ),
    )
    assert patch.applied and patch.diff is not None, patch.reason
    diff = store.get_text(patch.diff)
    assert f'AWS_SECRET_ACCESS_KEY = "{REDACTED}"' in diff, "the context line is redacted"

    at = datetime(2026, 1, 6, 10, 30, tzinfo=UTC)
    incident = IncidentStatus(
        incident_id=incident_id,
        workflow_id="incident-checkout-0123456789abcdef",
        service="checkout",
        fingerprint="0123456789abcdef",
        phase=Phase.OPENING_PR,
        severity=Severity.HIGH,
        error_type="KeyError",
        error_message="'sku'",
        occurrences=1,
        first_seen=at,
        last_seen=at,
        worktree=worktree,
        evidence=evidence,
        diagnosis=diagnosis,
        patch=patch,
        approval=ApprovalRequest(
            request_id="r1",
            approvers=["U1"],
            requested_at=at,
            expires_at=at + timedelta(days=1),
            decision=Decision(decision="approve", approver="U1", at=at),
        ),
    )
    proposal = env.run(LocalForge(config, store).propose_change, ProposeRequest(incident=incident))
    _, blocks = render_message(incident, raw_error="KeyError: 'sku'", diff=diff)
    people_see = "\n".join(
        [
            pull_request_body(incident, diff),
            json.dumps(blocks),
            detail_text(incident.model_copy(update={"phase": Phase.VERIFYING})),
            _all_text_under(config.artifacts_dir),
            sent,
        ]
    )

    for secret in (PLANTED_AWS, PLANTED_GITHUB):
        assert secret not in people_see
    for key in ("evidence.json", "diagnosis/prompt.md", "diagnosis/transcript.json"):
        assert store.exists(f"{incident_id}/{key}"), key
    # What is applied is the edits: the pushed commit changes exactly the failing line.
    pushed = git(repo.origin, "show", f"{proposal.commit}:app/shop.py")
    assert pushed == SHOP.replace("PRICES[item['sku']]", "PRICES.get(item['sku'], 0)").rstrip()


# ---------------------------------------------------------------------------- code, diffs, stores


def test_code_keeps_variables_and_loses_literals() -> None:
    code = f'token = get_token()\napi_key = "{GITHUB_CLASSIC}"\nPASSWORD = "hunter2"\n'
    assert redact_code(code) == (
        f'token = get_token()\napi_key = "{REDACTED}"\nPASSWORD = "{REDACTED}"\n'
    )


def test_a_diff_is_redacted_by_the_language_of_each_file_and_keeps_its_shape() -> None:
    diff = (
        "diff --git a/app/db.py b/app/db.py\n--- a/app/db.py\n+++ b/app/db.py\n"
        "@@ -1,3 +1,3 @@ def connect(token):\n"
        f' AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"\n'
        "-    session = Session(token=token)\n"
        "+    session = Session(token=token, timeout=5)\n"
        "-- a removed line that looks like a header\n"
        "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1 +1 @@\n"
        "-PASSWORD=hunter2\n+PASSWORD=hunter3\n\\ No newline at end of file\n"
    )
    redacted = redact_diff(diff)
    assert AWS_SECRET not in redacted and "hunter2" not in redacted and "hunter3" not in redacted
    assert "-    session = Session(token=token)\n" in redacted, "code reads as it is"
    assert "-PASSWORD=[REDACTED]\n+PASSWORD=[REDACTED]\n" in redacted, ".env values are literals"
    assert len(redacted.splitlines()) == len(diff.splitlines())
    assert redact_diff(redacted) == redacted


def test_markdown_redacts_a_diff_block_as_a_diff_and_the_rest_as_text() -> None:
    markdown = (
        "password=hunter2\n\n````diff\n session = Session(token=token)\n"
        f'+KEY = "{GITHUB_CLASSIC}"\n````\n\n```\ntoken = abc\n```\n'
    )
    assert redact_markdown(markdown) == (
        f"password={REDACTED}\n\n````diff\n session = Session(token=token)\n"
        f'+KEY = "{REDACTED}"\n````\n\n```\ntoken = {REDACTED}\n```\n'
    )


def test_values_are_redacted_however_deep() -> None:
    value = {"a": [f"push {GITHUB_CLASSIC}", {"b": ("password=x", 3)}], "n": None}
    assert redact_value(value) == {
        "a": [f"push {REDACTED}", {"b": (f"password={REDACTED}", 3)}],
        "n": None,
    }


def test_the_artifact_store_redacts_every_write(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    token = f"deploy with {GITHUB_CLASSIC}"
    assert store.get_text(store.put_text("i/prompt.md", token)) == f"deploy with {REDACTED}"
    log = store.put_bytes("i/verify/before.log", b"\xff " + token.encode())
    assert store.get_bytes(log) == b"\xff deploy with " + REDACTED.encode()
    record = store.put_json("i/evidence.json", {"window": f"password=hunter2 {GITHUB_CLASSIC}"})
    assert store.get_json(record) == {"window": f"password={REDACTED} {REDACTED}"}
    # What a model wrote replays as written: only literal-shaped secrets go.
    turn = store.put_json("llm-cache/k.json", {"search": "token = get_token()"}, model_output=True)
    assert store.get_json(turn) == {"search": "token = get_token()"}
    test_file = store.put_text("i/regression/test_file.py", "def test():\n    token = make()\n")
    assert store.get_text(test_file) == "def test():\n    token = make()\n"
    clean = b'{"b": 1,\n"a": 2}'
    assert store.get_bytes(store.put_bytes("i/raw.json", clean)) == clean, "clean data unchanged"
