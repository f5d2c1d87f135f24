"""Sentry-compatible intake, driven by the real SDKs: sentry-sdk (Python) and @sentry/node in
small apps report to a running intake; a fuzz set of malformed envelopes and compressed bombs
gets 4xx, never 5xx, and starts nothing. About 600 lines: the whole protocol (SDK runs, frame
conventions, keys, item types, DSNs, fuzz) on one page, as tests/test_intake.py is for
/v1/errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import shutil
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.utils import Dsn
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker
from typer.testing import CliRunner

from remedy import names
from remedy.config import ConfigError, RemedyConfig
from remedy.intake import build_incident_start
from remedy.intake_formats.report import client_fingerprint
from remedy.intake_formats.sentry_auth import dsn_for, project_id_for, token_dsn_key
from remedy.intake_formats.sentry_event import read_event
from remedy.models import IncidentStart, IntakeResponse
from remedy.service_policy import Severity
from remedy.stacktrace import parse_traceback
from starter.app import create_app
from starter.cli import app as cli_app
from starter.reporter import TemporalReporter
from tests.apps import harness
from tests.apps.cart import checkout
from tests.apps.harness import (
    APPS,
    python_app,
    run_app,
    serving,
    shop_and_billing,
)
from tests.apps.sentry_capture import sdk_envelope as capture_envelope
from tests.intake_harness import RecordingReporter
from tests.test_intake import BILLING_TOKEN, SHOP_TOKEN
from tests.workflow_harness import FakeActivities, eventually
from workflows.incident import IncidentWorkflow

BILLING_KEY = "b1ll1ng_public_key_42"
SENTRY_NODE = "11.12.0"
NODE_DIR = Path(__file__).resolve().parents[1] / ".remedy" / "npm" / f"sentry-node-{SENTRY_NODE}"


# The SDK tests' shared fixtures, over this module's `config`.
reporter = harness.reporter
http = harness.http
served = harness.served


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> RemedyConfig:
    monkeypatch.setenv("TEST_BILLING_SENTRY_KEY", BILLING_KEY)
    return shop_and_billing(
        monkeypatch, sentry_public_key_env="TEST_BILLING_SENTRY_KEY", sentry_project_id=42
    )


def dsn(config: RemedyConfig, url: str, service: str = "shop") -> str:
    config.intake.host, _, port = url.removeprefix("http://").partition(":")
    config.intake.port = int(port)
    return dsn_for(config, service)


def shop_path(config: RemedyConfig, kind: str = "envelope") -> str:
    return f"/api/{project_id_for(config, 'shop')}/{kind}/"


def sentry_auth(key: str = SHOP_TOKEN) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=t/1"}


def sdk_envelope() -> bytes:
    """The envelope sentry-sdk writes for a real chained exception."""
    try:
        checkout({"price": 3})
    except RuntimeError as exc:
        return capture_envelope(exc).serialize()
    raise AssertionError("the bug went away")


# ---------------------------------------------------------------------------- real SDKs


@pytest.mark.parametrize("compression", ["br", "gzip", "none"])
async def test_the_python_sdk_reports_chains_messages_logs_and_fingerprints(
    config: RemedyConfig, reporter: RecordingReporter, served: str, compression: str
) -> None:
    await run_app(
        *python_app("sentry_python_app.py", dsn(config, served), "chain", "1", compression)
    )
    assert len(reporter.starts) == 4, [s.event.error for s in reporter.starts]
    chain, message, logged, pinned = reporter.starts

    event = chain.event
    assert (event.service, event.release, event.environment) == ("shop", "4f2a9c1e", "prod")
    assert event.error.type == "RuntimeError"
    assert event.error.message == "checkout failed for the order"
    innermost = event.frames[-1]
    assert innermost.file.endswith("tests/apps/cart.py") and innermost.function == "checkout"
    assert innermost.line == 12 and innermost.in_app is True
    assert innermost.code == 'raise RuntimeError("checkout failed for the order") from missing'
    assert event.tags["region"] == "eu" and event.tags["sentry.release"] == "shop@4f2a9c1e"
    assert event.tags["sentry.sdk"].startswith("sentry.python")
    # The cause and the breadcrumbs are evidence; the credential in a breadcrumb is not.
    assert event.traceback is not None
    assert "KeyError: 'sku'" in event.traceback and "direct cause" in event.traceback
    assert "added sku 42" in event.traceback
    assert "hunter2" not in chain.model_dump_json()
    assert chain.severity == Severity.HIGH

    assert message.event.error.type == "Message"
    assert message.event.error.message == "inventory sync is slow"
    assert message.severity == Severity.MEDIUM  # level warning
    assert logged.event.error.message == "job nightly failed"
    assert logged.event.tags["logger"] == "shop.jobs"

    default = build_incident_start(pinned.event, config).fingerprint
    assert pinned.event.frames[-1].function == "total"
    assert pinned.fingerprint == client_fingerprint(("cart-total", "{{ default }}"), default)
    assert pinned.fingerprint != default


class Tee:
    """The real reporter, noting each fingerprint it is handed and each incident it answers."""

    def __init__(self, inner: TemporalReporter) -> None:
        self.inner = inner
        self.fingerprints: set[str] = set()
        self.incidents: set[str] = set()

    async def report(self, start: IncidentStart) -> IntakeResponse:
        self.fingerprints.add(start.fingerprint)
        reply = await self.inner.report(start)
        self.incidents.add(reply.incident_id)
        return reply


async def test_a_python_storm_is_one_incident_with_an_exact_count(
    client: Client, config: RemedyConfig
) -> None:
    queue = f"test-{uuid.uuid4()}"
    reporter = TemporalReporter(
        client, task_queue=queue, coalesce_interval_s=0.05, ui_url="http://ui/namespaces/default"
    )
    tee = Tee(reporter)
    worker = Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=FakeActivities().all()
    )
    async with worker, serving(create_app(config, reporter=tee, client=client)) as url:
        await run_app(*python_app("sentry_python_app.py", dsn(config, url), "storm", "60"))
        await reporter.close()
        # One incident: its run may close at its outcome mid-storm, and a recurrence run
        # then counts the rest for it.
        assert len(tee.incidents) == 1
        assert reporter.workflows_started <= 2
        assert reporter.temporal_calls <= 30
        [fingerprint] = tee.fingerprints
        workflow_id = names.workflow_id_for("shop", fingerprint)
        handle = client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)

        async def exact() -> bool:
            return (await handle.query(IncidentWorkflow.status)).occurrences == 60

        await eventually(exact)
        # A storm that ended before the triage did leaves no recurrence run: nothing to stop.
        with contextlib.suppress(RPCError):
            await handle.terminate("test done")


@pytest.fixture(scope="session")
def sentry_node() -> Path:
    """@sentry/node from the npm registry, installed once under .remedy/ (git-ignored)."""
    if (NODE_DIR / "node_modules" / "@sentry" / "node" / "package.json").exists():
        return NODE_DIR
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("node and npm are not installed")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(NODE_DIR), f"@sentry/node@{SENTRY_NODE}"]
    try:
        subprocess.run(
            [*command, "--no-audit", "--no-fund", "--no-save", "--loglevel=error"],
            check=True,
            capture_output=True,
            timeout=240,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(
            f"npm could not install @sentry/node {SENTRY_NODE} (registry unreachable?): {exc}"
        )
    return NODE_DIR


@pytest.mark.timeout(300)
async def test_the_node_sdk_reports_frames_release_and_counts(
    config: RemedyConfig, reporter: RecordingReporter, served: str, sentry_node: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    app = str(APPS / "sentry_node_app.js")
    await run_app(node, app, str(sentry_node), dsn(config, served), "5")
    assert len(reporter.starts) == 5
    assert len({start.fingerprint for start in reporter.starts}) == 1
    event = reporter.starts[0].event
    assert event.error.type == "TypeError"
    assert event.error.message == "Cannot read properties of undefined (reading 'price')"
    assert (event.release, event.environment, event.tags["region"]) == ("4f2a9c1e", "prod", "eu")
    innermost = event.frames[-1]
    assert innermost.file.endswith("tests/apps/cart.js") and innermost.function == "total"
    assert innermost.line == 3 and innermost.in_app is True
    assert all(not f.in_app for f in event.frames if f.file.startswith("node:"))
    assert event.tags["sentry.sdk"] == f"sentry.javascript.node/{SENTRY_NODE}"
    assert event.traceback is not None and "at total (" in event.traceback


async def test_remedys_busy_answers_are_sentry_rate_limits_the_sdk_obeys(
    config: RemedyConfig,
) -> None:
    config.temporal.address = "127.0.0.1:9"  # never connects: the intake stays "starting"
    app = create_app(config)
    envelopes: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            envelopes.append(scope["path"])
        await app(scope, receive, send)

    async with serving(counting) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            reply = await http.post(
                shop_path(config), content=sdk_envelope(), headers=sentry_auth()
            )
        assert reply.status_code == 429, reply.text
        assert reply.headers["Retry-After"] == "1"
        assert reply.headers["X-Sentry-Rate-Limits"] == "1::organization"
        envelopes.clear()
        await run_app(*python_app("sentry_python_app.py", dsn(config, url), "storm", "20"))
    # The first answer holds the SDK off: the rest of the storm is dropped at the source
    # (what may still come is the SDK's report of what it dropped).
    assert 1 <= len(envelopes) <= 5


# ---------------------------------------------------------------------------- frame conventions


def _fingerprint(config: RemedyConfig, event: dict[str, Any]) -> str:
    report = read_event(event, "shop", 1)
    assert report is not None
    return build_incident_start(report.event, config).fingerprint


def test_java_frames_read_as_the_java_trace_parser_reads_them(config: RemedyConfig) -> None:
    # What sentry-java sends for a NullPointerException in com.acme.shop.Cart.total.
    event = {
        "platform": "java",
        "release": "4f2a9c1e",
        "exception": {
            "values": [
                {
                    "type": "NullPointerException",
                    "module": "java.lang",
                    "value": "sku is null",
                    "stacktrace": {
                        "frames": [
                            {"filename": "Thread.java", "module": "java.lang.Thread",
                             "function": "run", "lineno": 1583, "in_app": False},
                            {"filename": "CartController.java",
                             "module": "com.acme.shop.web.CartController", "function": "get",
                             "lineno": 31, "in_app": True},
                            {"filename": "Cart.java", "module": "com.acme.shop.Cart",
                             "function": "total", "lineno": 42, "in_app": True},
                        ]
                    },
                }
            ]
        },
    }  # fmt: skip
    report = read_event(event, "shop", 1)
    assert report is not None
    frame = report.event.frames[-1]
    assert (frame.file, frame.function, frame.module) == (
        "com/acme/shop/Cart.java", "total", "com.acme.shop.Cart"
    )  # fmt: skip
    assert report.event.error.type == "java.lang.NullPointerException"
    trace = (
        "java.lang.NullPointerException: sku is null\n"
        "\tat com.acme.shop.Cart.total(Cart.java:42)\n"
        "\tat com.acme.shop.web.CartController.get(CartController.java:31)\n"
        "\tat java.base/java.lang.Thread.run(Thread.java:1583)\n"
    )
    parsed = [(f.file, f.function) for f in parse_traceback(trace) if f.file.startswith("com/")]
    assert parsed == [(f.file, f.function) for f in report.event.frames if f.in_app]


def test_go_frames_keep_the_package_as_module(config: RemedyConfig) -> None:
    # What sentry-go sends for a panic in (*Cart).Total.
    event = {
        "platform": "go",
        "exception": [
            {
                "type": "*errors.errorString",
                "value": "sku missing",
                "stacktrace": {
                    "frames": [
                        {"function": "main", "module": "main", "abs_path": "/src/shop/main.go",
                         "lineno": 20, "in_app": True},
                        {"function": "(*Cart).Total", "module": "github.com/acme/shop/cart",
                         "abs_path": "/src/shop/cart/cart.go", "filename": "cart/cart.go",
                         "lineno": 42, "in_app": True},
                    ]
                },
            }
        ],
    }  # fmt: skip
    report = read_event(event, "shop", 1)
    assert report is not None
    frame = report.event.frames[-1]
    assert (frame.file, frame.function, frame.module, frame.line) == (
        "/src/shop/cart/cart.go", "(*Cart).Total", "github.com/acme/shop/cart", 42
    )  # fmt: skip
    trace = (
        "panic: sku missing\n\ngoroutine 1 [running]:\n"
        "github.com/acme/shop/cart.(*Cart).Total(0xc000010000)\n"
        "\t/src/shop/cart/cart.go:42 +0x1d\n"
        "main.main()\n\t/src/shop/main.go:20 +0x25\n"
    )
    assert [(f.file, f.function, f.module) for f in parse_traceback(trace)] == [
        (f.file, f.function, f.module) for f in report.event.frames
    ]


def test_a_sentry_message_without_exception_or_message_is_nothing() -> None:
    assert read_event({"level": "error", "platform": "python"}, "shop", 1) is None


# ---------------------------------------------------------------------------- auth and items


async def test_keys_map_to_services_and_projects(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    envelope = sdk_envelope()
    billing = "/api/42/envelope/"
    cases = [
        (shop_path(config), sentry_auth(), {}, 200),  # the intake token itself
        (shop_path(config), sentry_auth(token_dsn_key(SHOP_TOKEN)), {}, 200),  # its DSN key
        (billing, sentry_auth(BILLING_KEY), {}, 200),  # the public key
        (billing, sentry_auth(BILLING_TOKEN), {}, 200),  # or the intake token
        (shop_path(config), {}, {"sentry_key": SHOP_TOKEN}, 200),
        (shop_path(config), {"Authorization": f"Sentry sentry_key={SHOP_TOKEN}"}, {}, 200),
        (shop_path(config), sentry_auth("wrong"), {}, 401),
        (shop_path(config), {}, {}, 401),
        (billing, sentry_auth(), {}, 403),  # shop's key, billing's project
        ("/api/7/envelope/", sentry_auth(), {}, 403),
        ("/api/not-a-number/envelope/", sentry_auth(), {}, 403),
    ]
    for path, headers, params, status in cases:
        before = len(reporter.starts)
        reply = await http.post(path, content=envelope, headers=headers, params=params)
        assert reply.status_code == status, (path, headers, params, reply.text)
        assert len(reporter.starts) == before + (status == 200)
    assert [s.service for s in reporter.starts] == ["shop"] * 2 + ["billing"] * 2 + ["shop"] * 2


async def test_the_envelope_dsn_header_authenticates(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    body = sdk_envelope()
    header, _, items = body.partition(b"\n")
    signed = json.dumps({**json.loads(header), "dsn": f"http://{SHOP_TOKEN}@intake/1"}).encode()
    reply = await http.post(shop_path(config), content=signed + b"\n" + items)
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == json.loads(header)["event_id"]
    assert reply.json()["incident_id"].startswith("shop-")
    assert len(reporter.starts) == 1


async def test_a_service_without_key_is_the_intakes_fault(
    http: httpx.AsyncClient, config: RemedyConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_SHOP_TOKEN")
    reply = await http.post(shop_path(config), content=sdk_envelope(), headers=sentry_auth())
    assert reply.status_code == 401
    assert reply.json()["error"] == (
        "the intake has no key for service 'shop': set TEST_SHOP_TOKEN where it runs"
    )


async def test_other_item_types_are_accepted_and_dropped(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    envelope = Envelope(headers={"event_id": uuid.uuid4().hex})
    payloads = {
        "transaction": {"type": "transaction", "spans": []},
        "session": {"sid": uuid.uuid4().hex, "status": "ok"},
        "sessions": {"aggregates": []},
        "client_report": {"discarded_events": []},
        "profile": {"version": "1"},
        "check_in": {"check_in_id": uuid.uuid4().hex, "status": "ok"},
        "replay_event": {},
        "some_future_type": {"x": 1},
    }
    for kind, payload in payloads.items():
        envelope.add_item(Item(payload=PayloadRef(json=payload), type=kind))
    attachment = b"binary\n{not json}\n" + bytes(range(256)) * 64
    envelope.add_item(Item(payload=PayloadRef(bytes=attachment), type="attachment"))
    reply = await http.post(shop_path(config), content=envelope.serialize(), headers=sentry_auth())
    assert reply.status_code == 200, reply.text
    assert reporter.starts == []


async def test_the_store_endpoint_takes_one_event(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    event_line = sdk_envelope().split(b"\n")[2]
    reply = await http.post(
        shop_path(config, "store"),
        content=gzip.compress(event_line),
        headers={**sentry_auth(), "Content-Encoding": "gzip"},
    )
    assert reply.status_code == 200, reply.text
    [start] = reporter.starts
    assert start.event.error.type == "RuntimeError"
    assert start.event.frames[-1].function == "checkout"


def test_remedy_dsn_prints_a_dsn_the_sdk_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSN_SHOP_TOKEN", "shop-token-abc")
    monkeypatch.setenv("DSN_BILLING_KEY", "billing_key")
    (tmp_path / "remedy.toml").write_text(
        "[intake]\nport = 9090\n"
        '[services.shop]\nrepo = "/x"\nintake_token_env = "DSN_SHOP_TOKEN"\n'
        '[services.billing]\nrepo = "/y"\nsentry_public_key_env = "DSN_BILLING_KEY"\n'
        "sentry_project_id = 42\n"
        '[services.bare]\nrepo = "/z"\n'
    )
    config = ["--config", str(tmp_path / "remedy.toml")]
    runner = CliRunner()
    shop = runner.invoke(cli_app, ["dsn", "shop", *config])
    assert shop.exit_code == 0, shop.output
    parsed = Dsn(shop.output.strip())
    assert (parsed.host, parsed.port) == ("127.0.0.1", 9090)
    assert parsed.public_key == token_dsn_key("shop-token-abc")  # never the token itself
    api_url = parsed.to_auth().get_api_url()
    assert api_url == f"http://127.0.0.1:9090/api/{parsed.project_id}/envelope/"
    billing = runner.invoke(cli_app, ["dsn", "billing", *config])
    assert billing.output.strip() == "http://billing_key@127.0.0.1:9090/42"
    bare = runner.invoke(cli_app, ["dsn", "bare", *config])
    assert bare.exit_code == 1 and "has no Sentry key" in bare.output


def test_a_public_url_with_a_path_goes_into_the_dsn(
    config: RemedyConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.intake.public_url = "https://remedy.example.com/intake/"
    assert dsn_for(config, "billing") == f"https://{BILLING_KEY}@remedy.example.com/intake/42"
    # @sentry/node refuses a DSN whose key is more than letters, digits and _.
    monkeypatch.setenv("TEST_BILLING_SENTRY_KEY", "with-dashes")
    with pytest.raises(ConfigError, match="TEST_BILLING_SENTRY_KEY has characters a DSN cannot"):
        dsn_for(config, "billing")


# ---------------------------------------------------------------------------- fuzz


def _bomb(compress: str, size: int = 64 * 1024 * 1024) -> bytes:
    chunk = b"\0" * (1024 * 1024)
    if compress == "br":
        return brotli.compress(b"\0" * size, quality=1)
    wbits = {"gzip": 31, "deflate": 15, "raw": -15}[compress]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join([*(packer.compress(chunk) for _ in range(size // len(chunk))), packer.flush()])


def _event_envelope(event: Any, header: bytes = b"{}") -> bytes:
    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    return header + b'\n{"type":"event","length":%d}\n' % len(payload) + payload


def _crafted(valid: bytes) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    plain: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("newlines", b"\n\n\n"),
        ("header not json", b"{nope\n"),
        ("header array", b"[1,2]\n"),
        ("header deep", b"[" * 5000 + b"\n"),
        ("header long", b'{"a":"' + b"x" * 70_000 + b'"}\n'),
        ("header bad utf-8", b'{"a":"\xff\xfe"}\n'),
        ("item not object", b'{}\n"event"\n{}'),
        ("item without type", b'{}\n{"length":2}\n{}'),
        ("item type number", b'{}\n{"type":5}\n{}'),
        ("length negative", b'{}\n{"type":"event","length":-1}\n{}'),
        ("length text", b'{}\n{"type":"event","length":"2"}\n{}'),
        ("length bool", b'{}\n{"type":"event","length":true}\n{}'),
        ("length past end", b'{}\n{"type":"event","length":99}\n{}'),
        ("length huge", b'{}\n{"type":"attachment","length":1' + b"0" * 30 + b"}\n{}"),
        ("many items", b"{}\n" + b'{"type":"session","length":0}\n\n' * 101),
        ("two events", _event_envelope({"message": "a"}) + b'\n{"type":"event"}\n{"message":"b"}'),
        ("event not json", _event_envelope(b"{broken")),
        ("event array", _event_envelope(b"[1]")),
        ("event deep", _event_envelope(b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}")),
        ("event lone surrogate", _event_envelope(b'{"message":"\\ud800"}')),
        ("event bad utf-8", _event_envelope(b'{"message":"\xc3\x28"}')),
        (
            "event 5000-digit number",
            _event_envelope(b'{"message":"x","level":' + b"9" * 5000 + b"}"),
        ),
        ("event too large", _event_envelope({"message": "m" * (1024 * 1024 + 10)})),
        ("event empty", _event_envelope(b"")),
    ]
    for name, body in plain:
        yield name, body, {}
    # Valid JSON of the wrong shapes: the reader fits or ignores them (200), never a 500.
    # fmt: off
    odd_events: list[Any] = [
        {"exception": {"values": "x"}},
        {"exception": {"values": [1, None, "x", {"type": 5, "value": ["x"]}]}, "message": 5},
        {"exception": [{"type": "E", "stacktrace": {"frames": [1, {"lineno": "3"}]}}]},
        {"exception": [{"type": "E" * 5000, "value": "v" * 50_000, "module": "m" * 900}]},
        {"exception": [{"type": "E", "stacktrace": {"frames": [
            {"filename": 5, "abs_path": ["x"], "lineno": -4, "in_app": "yes", "function": {}}
        ] * 2000}}]},
        {"message": {"formatted": 7, "message": "m"}, "tags": [[1, 2], ["k"], "x", ["a", "b"]]},
        {"logentry": {"formatted": "x"}, "timestamp": 1e300, "release": "\u0000\u00e9@@",
         "environment": "e" * 500, "fingerprint": "not-a-list", "contexts": {"a": [1], "b": 5},
         "breadcrumbs": {"values": [1, {"data": {"x": [1] * 500}, "message": "m" * 5000}] * 40},
         "level": ["fatal"], "request": {"url": 5, "method": {}}, "threads": {"values": [1]}},
        {"message": "m", "tags": {str(n): "v" * 5000 for n in range(200)}, "timestamp": "nope"},
    ]
    # fmt: on
    for n, event in enumerate(odd_events):
        yield f"odd event {n}", _event_envelope(event), {}
    bombs = [("gzip", "gzip"), ("deflate", "deflate"), ("raw", "deflate"), ("br", "br")]
    for kind, encoding in bombs:
        yield f"{kind} bomb", _bomb(kind), {"Content-Encoding": encoding}
    yield "gzip in gzip bomb", gzip.compress(_bomb("gzip")), {"Content-Encoding": "gzip, gzip"}
    garbled = [
        ("not gzip", b"plain text", "gzip"),
        ("truncated gzip", gzip.compress(valid)[:-9], "gzip"),
        ("gzip then garbage", gzip.compress(valid) + b"garbage", "gzip"),
        ("not br", b"\xff" * 64, "br"),
        ("truncated br", brotli.compress(valid)[:-5], "br"),
        ("not deflate", b"\x78\x9cnope", "deflate"),
        ("unknown encoding", valid, "zstd"),
        ("too many encodings", valid, "gzip, gzip, gzip, gzip"),
    ]
    for name, body, encoding in garbled:
        yield name, body, {"Content-Encoding": encoding}


async def test_fuzzed_envelopes_and_bombs_get_4xx_and_start_nothing(
    http: httpx.AsyncClient, config: RemedyConfig, reporter: RecordingReporter
) -> None:
    config.intake.max_envelope_bytes = 2 * 1024 * 1024
    valid = sdk_envelope()
    rng = random.Random(12)
    cases = list(_crafted(valid))
    for n in range(300):
        mutated = bytearray(valid)
        if n % 3 == 0:
            mutated = mutated[: rng.randrange(len(mutated))]
        else:
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append((f"mutation {n}", bytes(mutated), {}))
    refused = 0
    for name, body, headers in cases:
        before = len(reporter.starts)
        reply = await http.post(
            shop_path(config), content=body, headers={**sentry_auth(), **headers}
        )
        assert reply.status_code < 500, (name, reply.status_code, reply.text)
        if reply.status_code >= 400:
            refused += 1
            assert len(reporter.starts) == before, name
            assert reply.json()["error"], name
        if name.endswith("bomb"):
            assert reply.status_code == 413, (name, reply.text)
        elif not name.startswith(("mutation", "odd event")):
            assert reply.status_code >= 400, (name, reply.text)
    assert refused >= len(cases) // 3
    # The same for the store endpoint's bodies.
    for name, body, headers in cases[:40]:
        before = len(reporter.starts)
        reply = await http.post(
            shop_path(config, "store"), content=body, headers={**sentry_auth(), **headers}
        )
        assert reply.status_code < 500, (name, reply.text)
        if reply.status_code >= 400:
            assert len(reporter.starts) == before, name


async def test_a_bomb_is_refused_fast_and_small(
    http: httpx.AsyncClient, config: RemedyConfig
) -> None:
    bomb = _bomb("gzip", 512 * 1024 * 1024)
    started = asyncio.get_running_loop().time()
    reply = await http.post(
        shop_path(config), content=bomb, headers={**sentry_auth(), "Content-Encoding": "gzip"}
    )
    assert reply.status_code == 413 and "once decompressed" in reply.json()["error"]
    assert asyncio.get_running_loop().time() - started < 5
