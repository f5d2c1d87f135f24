"""Hostile input at the intake's front door: thousands of malformed requests, not one 5xx.

The real intake app (create_app, lifespan and parse pool included) is served by uvicorn on
127.0.0.1; a seeded generator sends malformed and hostile requests to `/v1/errors`,
`/v1/incidents/{id}` and `/slack/events`, through httpx (plain, chunked) and a raw socket
(framing httpx will not produce). Every request is invalid by construction (a bad token,
body, field, header or id), so a RecordingReporter that records any start proves that
nothing started. The status query of well-formed ids goes to the real Temporal dev server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from remedy.config import RemedyConfig, ServiceConfig, SlackConfig
from remedy.render.slack import APPROVE_ACTION_ID, REJECT_ACTION_ID
from remedy.render.slack_modal import REJECT_VIEW_ID
from starter.app import create_app
from tests.conftest import free_port
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, SlackServer, signed_headers
from tests.intake_harness import RecordingReporter

SEED = 20_261_121
REQUESTS = 2_400
CONCURRENCY = 16
SHOP_TOKEN = "fuzz-shop-token-0123456789"
BILLING_TOKEN = "fuzz-billing-token-9876543210"
# In every request body; no log line may contain it.
MARKER = "FUZZ-BODY-MARKER-7f3a"

pytestmark = pytest.mark.timeout(180)


@dataclass
class Case:
    kind: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    chunked: bool = False


# ---------------------------------------------------------------------------- what is sent


def _valid_event() -> dict[str, Any]:
    return {
        "service": "shop",
        "release": "abc1234",
        "error": {"type": "KeyError", "message": f"'sku' {MARKER}"},
        "frames": [{"file": "app/cart.py", "line": 2, "function": "total"}],
        "tags": {"region": "eu"},
    }


def _junk(rnd: random.Random, size: int) -> str:
    alphabet = string.printable + "\u00e9\u4e2d\U0001f600\x00\u202e"
    return "".join(rnd.choice(alphabet) for _ in range(size))


def _deep(rnd: random.Random, depth: int) -> bytes:
    opener, closer = rnd.choice([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"b":', b"}]")])
    tail = closer * depth if rnd.random() < 0.7 else b""  # unbalanced too
    return opener * depth + b"0" + tail


def _wrong_types(rnd: random.Random) -> dict[str, Any]:
    """A shop event with one field of a wrong type or shape: always a 422."""
    body = _valid_event()
    mutations: list[Callable[[], None]] = [
        lambda: body.update(service=rnd.choice([5, None, [], {}, "Bad Name!", ""])),
        lambda: body.update(error=rnd.choice([None, "KeyError", [], 5, {"type": ""}])),
        lambda: body["error"].update(type=rnd.choice([5, None, [], "x" * 300])),
        lambda: body["error"].update(code=rnd.choice([5, [], "X" * 40])),
        lambda: body.update(frames=rnd.choice(["x", 5, {}, [5], [{"line": 2}], [None]])),
        lambda: body.update(frames=[{"file": "a.py", "line": rnd.choice(["x", -1, [], 1.5])}]),
        lambda: body.update(frames=[], traceback=rnd.choice([None, "", "   ", 5, []])),
        lambda: body.update(tags=rnd.choice([[], "x", 5, {"a": 5}, {"a": None}, {"a": []}])),
        lambda: body.update(timestamp=rnd.choice(["yesterday", 5.5e300, [], "2026-13-45"])),
        lambda: body.update(release=rnd.choice(["no spaces allowed", 5, "r" * 200])),
        lambda: body.update(environment=rnd.choice([5, "e" * 100, []])),
    ]
    rnd.choice(mutations)()
    return body


def _oversized(rnd: random.Random) -> dict[str, Any]:
    """A shop event with one field over its budget: a 413 before anything is parsed."""
    body = _valid_event()
    choice = rnd.randrange(5)
    if choice == 0:
        body["traceback"] = "x=y " * 50_001
    elif choice == 1:
        body["error"]["message"] = "password=hunter2 " * 1_000
    elif choice == 2:
        body["frames"] = [{"file": f"f{n}.py"} for n in range(rnd.randint(501, 2000))]
    elif choice == 3:
        body["tags"] = {f"t{n}": "v" for n in range(rnd.randint(65, 500))}
    else:
        body["tags"] = {"k": "v" * rnd.randint(1_025, 60_000)}
    return body


def _error_cases(rnd: random.Random) -> Iterator[Case]:
    good = {"Authorization": f"Bearer {SHOP_TOKEN}", "Content-Type": "application/json"}
    valid = json.dumps(_valid_event()).encode()
    while True:
        kind = rnd.choice(
            ["bad_json", "deep", "oversized", "wrong_types", "unicode", "token", "headers",
             "service", "empty", "chunked", "too_large"]
        )  # fmt: skip
        headers = dict(good)
        content: bytes | None
        chunked = False
        if kind == "bad_json":
            cut = rnd.randrange(1, len(valid) - 1)
            content = rnd.choice(
                [valid[:cut], valid + b"}", b"{not json", b"[1,2,3]", b'"a string"', b"null",
                 b"NaN", valid.replace(b":", b"=", 1), b"{'service': 'shop'}", b"\xef\xbb\xbf"
                 + valid, _junk(rnd, rnd.randint(1, 400)).encode(), b"1" * 5000]
            )  # fmt: skip
        elif kind == "deep":
            depth = rnd.choice([65, 100, 1_000, 5_000, 20_000, 60_000])
            inner = _deep(rnd, depth)
            content = rnd.choice([inner, valid[:-1] + b', "context": ' + inner + b"}"])
        elif kind == "oversized":
            content = json.dumps(_oversized(rnd)).encode()
        elif kind == "wrong_types":
            content = json.dumps(_wrong_types(rnd)).encode()
        elif kind == "unicode":
            content = rnd.choice(
                [b"\xff\xfe" + valid, valid.replace(b"sku", b"\xc0\xaf"), valid[:-1] + b"\x80}",
                 valid.replace(b"'sku'", b"\\ud800"), valid.replace(b'"eu"', b'"\\udfff"'),
                 valid.replace(b'"region"', b'"\\ud83d"'), valid.decode().encode("utf-16"),
                 valid.replace(b"'sku'", b"\\u0000\\u202e")]
            )  # fmt: skip
            if b"\\u0000" in content:
                # Valid JSON and valid text: made invalid by the other service's token.
                headers["Authorization"] = f"Bearer {BILLING_TOKEN}"
        elif kind == "token":
            content = valid
            headers["Authorization"] = rnd.choice(
                ["", "Bearer", "Bearer ", "Basic " + SHOP_TOKEN, f"Bearer {SHOP_TOKEN}x",
                 f"Bearer {BILLING_TOKEN}", f"bearer {SHOP_TOKEN[:-1]}", "Bearer " + "a" * 4000,
                 f"Token {SHOP_TOKEN}", "Bearer \u00e9\u00e8", f"Bearer  {BILLING_TOKEN}  "]
            )  # fmt: skip
        elif kind == "headers":
            content = rnd.choice([valid, json.dumps(_wrong_types(rnd)).encode()])
            headers["Content-Type"] = rnd.choice(
                ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=latin-1", "\u00ff/\u00fe", "", "*/*"]
            )  # fmt: skip
            # Valid JSON of a shop event: refused for the token, whatever the content type.
            headers["Authorization"] = f"Bearer {BILLING_TOKEN}"
        elif kind == "service":
            body = _valid_event()
            body["service"] = rnd.choice(["billing", "unknown", "shop-2", "s" * 63])
            content = json.dumps(body).encode()
        elif kind == "empty":
            content = rnd.choice([b"", b" ", b"\n", b"{}", b"[]"])
        elif kind == "chunked":
            chunked = True
            content = rnd.choice([_deep(rnd, 3_000), b"x" * 300_000, b"{" * 10, b""])
        else:
            content = b'{"service": "shop", "pad": "' + b"x" * 270_000 + b'"}'
        yield Case(f"errors/{kind}", "POST", "/v1/errors", headers, content, chunked)


# Ids sent as they are: already percent-encoded, they decode to bytes that are not UTF-8.
PERCENT_ENCODED = {"%2e%2e%2f%2e%2e", "%00", "%ff%fe", "%ED%A0%80"}


def _incident_cases(rnd: random.Random) -> Iterator[Case]:
    while True:
        fingerprint = "".join(rnd.choice("0123456789abcdef") for _ in range(16))
        ident = rnd.choice(
            [f"shop-{fingerprint}", f"shop-{fingerprint}-0123abcd", f"billing-{fingerprint}",
             f"nosuch-{fingerprint}", f"incident-shop-{fingerprint}", f"shop-{fingerprint[:15]}",
             "..", "%2e%2e%2f%2e%2e", "a" * 3000, _junk(rnd, 40), "%00", "%ff%fe", "%ED%A0%80",
             f"SHOP-{fingerprint}", f"shop-{fingerprint.upper()}", "-", " "]
        )  # fmt: skip
        token = rnd.choice([SHOP_TOKEN, SHOP_TOKEN, BILLING_TOKEN, "nope", ""])
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if ident.startswith(f"shop-{fingerprint}") and token == SHOP_TOKEN:
            kind = "incidents/own"  # the real status lookup: 404, no such incident
        else:
            kind = "incidents/bad"
        quoted = ident if ident in PERCENT_ENCODED else urllib.parse.quote(ident, safe="")
        yield Case(kind, "GET", f"/v1/incidents/{quoted}", headers)


def _slack_payload(rnd: random.Random) -> bytes:
    action = {"action_id": rnd.choice([APPROVE_ACTION_ID, REJECT_ACTION_ID, "other"])}
    action["value"] = rnd.choice(["", "{}", "not json", json.dumps({"incident_id": "x"}), MARKER])
    payload: Any = rnd.choice(
        [{"type": "block_actions", "actions": [action], "user": {"id": "U1"}},
         {"type": "block_actions", "actions": [action]},
         {"type": "block_actions", "actions": "x", "container": {}},
         {"type": "view_submission", "view": {"callback_id": REJECT_VIEW_ID}},
         {"type": "view_submission", "view": {"callback_id": REJECT_VIEW_ID,
          "private_metadata": "{", "state": {"values": {}}}, "user": {"id": "U1"}},
         {"type": "event_callback", "event": {"type": "app_mention", "text": MARKER}},
         {"type": "url_verification", "challenge": MARKER},
         {"type": rnd.choice([5, None, [], "x"]), "marker": MARKER}, [MARKER], MARKER]
    )  # fmt: skip
    text = json.dumps(payload)
    return rnd.choice(
        [urllib.parse.urlencode({"payload": text}).encode(), text.encode(),
         urllib.parse.urlencode({"payload": "{" + MARKER}).encode(),
         urllib.parse.urlencode({"payload": "[" * 5_000}).encode(), b"payload=%ff%fe" + b"x",
         b"\xff\xfe" + MARKER.encode(), f"command=/x&text={MARKER}".encode(), b"", b"ssl_check=1"]
    )  # fmt: skip


def _slack_cases(rnd: random.Random) -> Iterator[Case]:
    while True:
        body = _slack_payload(rnd)
        now = int(time.time())
        kind = rnd.choice(["unsigned", "timestamp", "signature", "stale", "signed", "large"])
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        chunked = False
        if kind == "timestamp":
            stamp = rnd.choice(
                ["", " ", "abc", "1.5", "-5", "9" * 40, "\u00b2\u00b3", "0x10", str(now) + " ",
                 "\u0661\u0662", "nan", "1e9", str(now)[:-1] + "\u00e9"]
            )  # fmt: skip
            headers = {**signed_headers(body), "X-Slack-Request-Timestamp": stamp}
        elif kind == "signature":
            headers = signed_headers(body)
            headers["X-Slack-Signature"] = rnd.choice(
                ["", "v0=", "v0=" + "0" * 64, "v1=abc", "v0=\u00e9\u00e9", "x" * 5000,
                 headers["X-Slack-Signature"][:-1] + "\u00ff"]
            )  # fmt: skip
        elif kind == "stale":
            headers = signed_headers(body, timestamp=now + rnd.choice([-3600, -301, 400, 10**9]))
        elif kind == "signed":
            # As if Slack had sent it: a payload no listener can use, or not a payload at all.
            headers = signed_headers(body)
            chunked = rnd.random() < 0.2
        elif kind == "large":
            body = b"payload=" + b"x" * 1_100_000
            chunked = rnd.random() < 0.5
            headers = signed_headers(body)
        elif rnd.random() < 0.5:
            headers = {}
        yield Case(f"slack/{kind}", "POST", "/slack/events", headers, body, chunked)


def fuzz_cases(seed: int, count: int) -> list[Case]:
    rnd = random.Random(seed)
    streams = [
        (_error_cases(rnd), 0.5),
        (_incident_cases(rnd), 0.2),
        (_slack_cases(rnd), 0.3),
    ]
    return [
        next(rnd.choices([s for s, _ in streams], [w for _, w in streams])[0]) for _ in range(count)
    ]


# Framing httpx will not produce; uvicorn (h11) or the app must refuse it with a 4xx.
RAW_REQUESTS = [
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slack-Request-Timestamp: \xff\r\n"
    b"X-Slack-Signature: v0=\xfe\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n{}",
    b"GET /v1/incidents/%ff%00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n",
    b"GET /v1/incidents/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/errors HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n",
    b"BREW /v1/errors HTTP/1.1\r\nHost: x\r\n\r\n",
    b'POST /v1/errors HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"short"',
]


async def _raw_status(port: int, request: bytes) -> int | None:
    """The status of the answer to `request`, or None when the server just closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if b"Content-Length: 100\r\n" in request:
            writer.write_eof()  # the promised body never comes
        line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1") else None


# ---------------------------------------------------------------------------- the intake


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Iterator[RemedyConfig]:
    monkeypatch.setenv("FUZZ_SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("FUZZ_BILLING_TOKEN", BILLING_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    with SlackServer() as slack:
        yield RemedyConfig(
            slack=SlackConfig(api_url=slack.api_url),
            services={
                "shop": ServiceConfig(repo="/nonexistent/shop", intake_token_env="FUZZ_SHOP_TOKEN"),
                "billing": ServiceConfig(
                    repo="/nonexistent/billing", intake_token_env="FUZZ_BILLING_TOKEN"
                ),
            },
        )


@pytest.fixture
async def served(
    config: RemedyConfig, client: Client
) -> AsyncIterator[tuple[int, RecordingReporter]]:
    reporter = RecordingReporter()
    app = create_app(config, reporter=reporter, client=client)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
        await asyncio.sleep(0.02)
    try:
        yield port, reporter
    finally:
        server.should_exit = True
        await task


async def _send(http: httpx.AsyncClient, case: Case) -> httpx.Response:
    content: Any = case.content
    if case.chunked and content is not None:
        body = content

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 65_536):
                yield body[start : start + 65_536]

        content = chunks()
    # Header values go out as UTF-8 bytes (the server reads them as Latin-1: mojibake), without
    # the outer whitespace that HTTP drops anyway and h11 refuses to send.
    headers = {name: value.strip().encode() for name, value in case.headers.items()}
    return await http.request(case.method, case.path, headers=headers, content=content)


async def test_thousands_of_hostile_requests_get_no_5xx_and_start_nothing(
    served: tuple[int, RecordingReporter], caplog: pytest.LogCaptureFixture
) -> None:
    port, reporter = served
    cases = fuzz_cases(SEED, REQUESTS)
    statuses: Counter[tuple[str, int]] = Counter()
    server_errors: list[str] = []
    pending = iter(cases)
    started = time.monotonic()
    caplog.set_level(logging.INFO)

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as http:
        dropped: list[str] = []

        async def sender() -> None:
            for case in pending:
                try:
                    reply = await _send(http, case)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A keep-alive connection the server closed (after refusing a body it did
                    # not read) as this request went out on it: the client's to retry, once.
                    dropped.append(case.kind)
                    reply = await _send(http, case)
                statuses[case.kind, reply.status_code] += 1
                if reply.status_code >= 500:
                    server_errors.append(f"{case.kind} {reply.status_code} {reply.text[:200]}")

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        raw = [await _raw_status(port, request) for request in RAW_REQUESTS]
        elapsed = time.monotonic() - started

        assert server_errors == [], f"{len(server_errors)} answers >= 500: {server_errors[:10]}"
        assert len(dropped) <= len(cases) // 100, f"{len(dropped)} connections dropped: {dropped}"
        assert [status for status in raw if status is not None and status >= 500] == []
        assert reporter.starts == [], f"{len(reporter.starts)} reports started an incident"
        # The fuzz reached every check, not only the first one.
        seen = {status for _, status in statuses}
        assert {400, 401, 403, 404, 413, 422} <= seen, statuses
        assert statuses["incidents/own", 404] > 0
        assert not [r.getMessage() for r in caplog.records if MARKER in r.getMessage()]
        # And the intake still takes a good report afterwards.
        good = await http.post(
            "/v1/errors",
            json={**_valid_event(), "error": {"type": "KeyError", "message": "'sku'"}},
            headers={"Authorization": f"Bearer {SHOP_TOKEN}"},
        )
        assert good.status_code == 202, good.text
    total = REQUESTS + len(RAW_REQUESTS)
    print(f"{total} hostile requests in {elapsed:.1f}s: {sorted(statuses.items())}")
