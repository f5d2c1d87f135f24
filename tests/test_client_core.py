"""remedy_client in-process: the event it builds, redaction, retries, back-pressure, shutdown."""

from __future__ import annotations

import ast
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import remedy_client
from remedy_client import Client, RemedyHandler, redact
from remedy_client.events import encode
from remedy_client.redact import redact_code
from remedy_client.transport import retry_after_seconds

from remedy.models import ErrorEvent
from tests.fakes.remedy_intake import IntakeReceiver, free_port

CLIENT_SOURCE = Path(__file__).resolve().parent.parent / "clients" / "python" / "remedy_client"


@pytest.fixture
def receiver() -> Iterator[IntakeReceiver]:
    with IntakeReceiver() as server:
        yield server


@pytest.fixture
def make_client() -> Iterator[Any]:
    made: list[Client] = []

    def make(url: str, **options: Any) -> Client:
        options.setdefault("root", str(Path(__file__).resolve().parent.parent))
        client = Client(url, "tok-123", "shop", release="4f2a9c1", **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=0)


def charge(order: dict[str, Any]) -> int:
    connection = "postgres://shop:s3cr3t-pass@db.internal/shop"  # noqa: F841 (a local in the frame)
    return int(order["sku"])


def raise_chained() -> None:
    try:
        json.loads("{not json")
    except ValueError as exc:
        raise KeyError("sku") from exc


def caught(function: Any, *args: Any) -> BaseException:
    try:
        function(*args)
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def test_event_has_frames_chain_release_and_passes_the_intake_schema(
    receiver: IntakeReceiver, make_client: Any
) -> None:
    client = make_client(receiver.url, tags={"region": "eu"})
    assert client.capture_exception(caught(raise_chained), tags={"order": "42"})
    assert client.flush(5)
    body = receiver.bodies()[0]
    ErrorEvent.model_validate(body)
    assert receiver.received[0].authorization == "Bearer tok-123"
    assert body["service"] == "shop" and body["release"] == "4f2a9c1"
    assert body["error"] == {"type": "KeyError", "message": "'sku'"}
    assert body["tags"] == {"region": "eu", "order": "42"}
    frames = body["frames"]
    assert [f["function"] for f in frames] == ["caught", "raise_chained"]
    assert frames[-1]["file"] == "tests/test_client_core.py"
    assert frames[-1]["module"] == "tests.test_client_core"
    assert frames[-1]["code"] == 'raise KeyError("sku") from exc'
    assert all(f["in_app"] for f in frames)
    text = body["traceback"]
    assert "json.decoder.JSONDecodeError: Expecting property name" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert text.endswith("KeyError: 'sku'\n")
    assert client.stats()["sent"] == 1


def test_library_frames_are_not_in_app(receiver: IntakeReceiver, make_client: Any) -> None:
    client = make_client(receiver.url, in_app_include=["json"])
    plain = make_client(receiver.url)
    exc = caught(json.loads, "{")
    plain.capture_exception(exc)
    plain.flush(5)
    exc.__remedy_captured__ = False  # type: ignore[attr-defined]
    client.capture_exception(exc)
    client.flush(5)
    library, included = receiver.bodies()
    assert library["error"]["type"] == "json.decoder.JSONDecodeError"
    assert [f["in_app"] for f in library["frames"]] == [True, False, False, False]
    assert library["frames"][1]["file"].endswith("json/__init__.py")
    assert all(f["in_app"] for f in included["frames"])


def test_secrets_are_redacted_before_sending(receiver: IntakeReceiver, make_client: Any) -> None:
    client = make_client(receiver.url)
    exc = RuntimeError(
        "connect postgres://shop:s3cr3t-pass@db.internal/shop failed; "
        "headers={'Authorization': 'Bearer abcdef0123456789'} api_key=AKIAABCDEFGHIJKLMNOP "
        'password="hunter2" token: ghp_0123456789abcdef0123456789abcdef0123'
    )
    client.capture_exception(caught(_raise, exc), tags={"session_id": "abc", "cart": "7"})
    client.flush(5)
    raw = json.dumps(receiver.bodies()[0])
    for secret in (
        "s3cr3t-pass",
        "abcdef0123456789",
        "AKIAABCDEFGHIJKLMNOP",
        "hunter2",
        "ghp_0123",
    ):
        assert secret not in raw
    body = receiver.bodies()[0]
    assert "postgres://shop:[REDACTED]@db.internal/shop" in body["error"]["message"]
    assert body["tags"] == {"session_id": "[REDACTED]", "cart": "7"}


def _raise(exc: BaseException) -> None:
    raise exc


def test_redaction_rules() -> None:
    assert redact("password=hunter2&user=bob") == "password=[REDACTED]&user=bob"
    assert redact('{"client_secret": "x1y2"}') == '{"client_secret": "[REDACTED]"}'
    assert redact("Authorization: Bearer abc.def.ghijkl") == "Authorization: Bearer [REDACTED]"
    assert redact("user=bob author=alice") == "user=bob author=alice"
    assert redact(redact("token=abc")) == "token=[REDACTED]"
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
    assert redact(f"key {key} end") == "key [REDACTED] end"
    # Source lines keep their code; shaped secrets and literal assignments go.
    line = 'password = form["password"]  # xoxb-1234567890-abcdef'
    assert redact_code(line) == 'password = form["password"]  # [REDACTED]'
    assert redact_code('connect(password="hunter2")') == 'connect(password="[REDACTED]")'


def test_retries_server_errors_then_delivers_once(
    receiver: IntakeReceiver, make_client: Any
) -> None:
    receiver.fail("errors", "respond", status=503, times=2)
    client = make_client(receiver.url, backoff_base=0.05)
    client.capture_exception(caught(charge, {}))
    assert client.flush(10)
    assert len(receiver.bodies()) == 1
    stats = client.stats()
    assert (stats["sent"], stats["retries"], stats["failed"]) == (1, 2, 0)


def test_honours_retry_after_on_429(receiver: IntakeReceiver, make_client: Any) -> None:
    receiver.fail("errors", "respond", status=429, headers={"Retry-After": "1"})
    client = make_client(receiver.url, backoff_base=0.01)
    client.capture_exception(caught(charge, {}))
    assert client.flush(10)
    assert len(receiver.attempts) == 2
    assert receiver.attempts[1] - receiver.attempts[0] >= 0.95
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("7200") == 60.0  # capped: a report is never held for hours


def test_refused_reports_are_not_retried(receiver: IntakeReceiver, make_client: Any) -> None:
    receiver.fail("errors", "respond", status=401, body={"error": "invalid intake token"})
    client = make_client(receiver.url, backoff_base=0.01)
    client.capture_exception(caught(charge, {}))
    assert client.flush(5)
    assert len(receiver.attempts) == 1
    assert client.stats()["rejected"] == 1


def test_full_queue_drops_and_counts_without_blocking(
    receiver: IntakeReceiver, make_client: Any
) -> None:
    receiver.fail("errors", "hold", times=1000)
    client = make_client(receiver.url, queue_size=10, timeout=30)
    exc = caught(charge, {})
    started = time.monotonic()
    for _ in range(1000):
        exc.__remedy_captured__ = False  # type: ignore[attr-defined]
        client.capture_exception(exc)
    elapsed = time.monotonic() - started
    receiver.wait_held()
    stats = client.stats()
    assert stats["queued"] <= 10
    assert stats["captured"] <= 11  # the queue plus the one report on the wire
    assert stats["dropped"] == 1000 - stats["captured"]
    assert elapsed < 2.0, f"1000 captures took {elapsed:.2f}s with the intake hanging"
    receiver.release()


def test_close_gives_up_within_its_timeout_when_the_intake_hangs(
    receiver: IntakeReceiver, make_client: Any
) -> None:
    receiver.fail("errors", "hold", times=100)
    client = make_client(receiver.url, timeout=30)
    for _ in range(5):
        client.capture_exception(caught(charge, {}))
    receiver.wait_held()
    started = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert not client.capture_exception(caught(charge, {}))
    receiver.release()


def test_intake_down_counts_failures_and_never_raises(make_client: Any) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_base=0.01)
    assert client.capture_exception(caught(charge, {}))
    assert client.flush(5)
    stats = client.stats()
    assert (stats["sent"], stats["failed"], stats["retries"]) == (0, 1, 1)


def test_logging_handler_reports_records_with_exceptions_once(
    receiver: IntakeReceiver, make_client: Any
) -> None:
    client = make_client(receiver.url)
    logger = logging.getLogger("tests.client.handler")
    handler = RemedyHandler(client)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("no exception here")
        try:
            charge({})
        except KeyError as exc:
            logger.exception("charge failed for order %s", 42)
            logger.error("logged again", exc_info=exc)  # the same exception: one report
            client.capture_exception(exc)
        assert client.flush(5)
    finally:
        logger.removeHandler(handler)
    [body] = receiver.bodies()
    assert body["tags"]["mechanism"] == "logging"
    assert body["tags"]["logger"] == "tests.client.handler"
    assert body["tags"]["log.message"] == "charge failed for order 42"


def test_thread_excepthook_reports_and_chains(
    receiver: IntakeReceiver, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(str(args.exc_value)))
    monkeypatch.setattr(remedy_client, "_client", make_client(receiver.url))
    remedy_client.install_excepthooks(sys_hook=False)
    remedy_client.install_excepthooks(sys_hook=False)  # idempotent: one report, one chain call
    thread = threading.Thread(target=charge, args=({},), name="worker-7")
    thread.start()
    thread.join()
    assert remedy_client.flush(5)
    [body] = receiver.bodies()
    assert body["tags"] == {"mechanism": "threading.excepthook", "thread": "worker-7"}
    assert seen == ["'sku'"]


def test_before_send_edits_or_drops(receiver: IntakeReceiver, make_client: Any) -> None:
    def scrub(event: dict[str, Any]) -> dict[str, Any] | None:
        if event["error"]["type"] == "ValueError":
            return None
        event["tags"]["scrubbed"] = "yes"
        return event

    client = make_client(receiver.url, before_send=scrub)
    client.capture_exception(caught(_raise, ValueError("drop me")))
    client.capture_exception(caught(charge, {}))
    assert client.flush(5)
    [body] = receiver.bodies()
    assert body["tags"] == {"scrubbed": "yes"}


def test_bad_arguments_fail_at_init_and_a_missing_token_disables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="service 'Shop'"):
        Client("http://127.0.0.1:1", "tok", "Shop")
    with pytest.raises(ValueError, match="endpoint"):
        Client("127.0.0.1:8080", "tok", "shop")
    with pytest.raises(ValueError, match="release"):
        Client("http://127.0.0.1:1", "tok", "shop", release="v1 beta")
    disabled = Client("http://127.0.0.1:1", "", "shop")
    assert not disabled.capture_exception(caught(charge, {}))
    monkeypatch.setattr(remedy_client, "_client", None)
    assert remedy_client.capture_exception(caught(charge, {})) is False


def test_oversized_events_are_shrunk_to_fit() -> None:
    event = {
        "service": "shop",
        "error": {"type": "ValueError", "message": "m" * 50_000},
        "traceback": "t" * 150_000,
        "frames": [{"file": f"app/{i}.py", "line": i, "code": "x" * 300} for i in range(200)],
        "tags": {},
    }
    body = encode(event, limit=40_000)
    assert body is not None and len(body) <= 40_000
    ErrorEvent.model_validate(json.loads(body))


def test_client_source_is_python_3_9() -> None:
    for path in CLIENT_SOURCE.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 9))
        future = [
            node
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module == "__future__"
        ]
        # Annotations such as `str | None` are only safe on 3.9 when never evaluated.
        assert future, f"{path.name}: needs `from __future__ import annotations`"
