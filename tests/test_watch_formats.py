"""`remedy watch` recognition: which lines are error records, and the events made of them."""

from __future__ import annotations

import json

from remedy.watch.formats import Found, event_from_json, event_from_traceback, scan

PY_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/shop/app/cart.py", line 42, in total\n'
    "    return order['sku'] * 2\n"
    "KeyError: 'sku'\n"
)


def lines(*records: object) -> bytes:
    return "".join(
        (json.dumps(r) if isinstance(r, dict) else str(r)) + "\n" for r in records
    ).encode()


def scan_all(data: bytes, finish: bool = True) -> tuple[list[Found], int]:
    return scan(data, 0, finish=finish, max_record=1 << 20)


def test_rust_tracing_json_error_uses_the_call_site_as_frame() -> None:
    record = {
        "timestamp": "2026-11-21T09:00:00.123456Z",
        "level": "ERROR",
        "fields": {"message": "payment failed", "error": "connection reset by peer"},
        "target": "checkout::payments",
        "filename": "src/payments.rs",
        "line_number": 88,
        "threadName": "tokio-runtime-worker",
    }
    event = event_from_json(record)
    assert event is not None
    assert event["error"] == {"type": "LoggedError", "message": "connection reset by peer"}
    assert event["frames"] == [
        {"file": "src/payments.rs", "line": 88, "function": None, "module": "checkout::payments"}
    ]
    assert event["timestamp"].startswith("2026-11-21T09:00:00.123456")
    assert event["tags"]["log.message"] == "payment failed"
    info = dict(record, level="INFO")
    assert event_from_json(info) is None


def test_python_json_logger_record_carries_its_traceback() -> None:
    record = {
        "asctime": "2026-11-21 09:00:00,123",
        "levelname": "ERROR",
        "name": "shop.cart",
        "message": "checkout failed",
        "exc_info": PY_TRACEBACK.rstrip("\n"),
        "release": "4f2a9c1",
        "error_code": "DB5001",
    }
    event = event_from_json(record)
    assert event is not None
    assert event["error"] == {"type": "KeyError", "message": "'sku'", "code": "DB5001"}
    assert event["traceback"].startswith("Traceback (most recent call last):")
    assert event["release"] == "4f2a9c1"
    assert event["tags"] == {"logger": "shop.cart", "log.message": "checkout failed"}
    assert event_from_json(dict(record, levelname="WARNING")) is None


def test_structlog_text_and_dict_tracebacks() -> None:
    text = {"event": "charge failed", "level": "error", "exception": PY_TRACEBACK}
    event = event_from_json(text)
    assert event is not None
    assert event["error"]["type"] == "KeyError"
    assert event["tags"]["log.message"] == "charge failed"

    structured = {
        "event": "charge failed",
        "level": "error",
        "timestamp": "2026-11-21T09:00:00Z",
        "exception": [
            {
                "exc_type": "ValueError",
                "exc_value": "amount must be positive",
                "frames": [
                    {"filename": "/srv/shop/app/api.py", "lineno": 10, "name": "charge"},
                    {"filename": "/srv/shop/app/money.py", "lineno": 3, "name": "check"},
                ],
            }
        ],
    }
    event = event_from_json(structured)
    assert event is not None
    assert event["error"] == {"type": "ValueError", "message": "amount must be positive"}
    assert [(f["file"], f["line"], f["function"]) for f in event["frames"]] == [
        ("/srv/shop/app/api.py", 10, "charge"),
        ("/srv/shop/app/money.py", 3, "check"),
    ]
    assert event["traceback"] is None


def test_pino_and_bunyan_errors_by_numeric_level() -> None:
    stack = "TypeError: cart.items is undefined\n    at total (/srv/shop/src/cart.js:42:13)"
    pino = {
        "level": 50,
        "time": 1_795_000_000_000,
        "pid": 7,
        "hostname": "web-1",
        "msg": "request failed",
        "err": {"type": "TypeError", "message": "cart.items is undefined", "stack": stack},
    }
    event = event_from_json(pino)
    assert event is not None
    assert event["error"] == {"type": "TypeError", "message": "cart.items is undefined"}
    assert event["traceback"] == stack
    assert event["timestamp"].startswith("2026-11-18")  # epoch milliseconds
    assert event_from_json(dict(pino, level=30)) is None

    bunyan = {
        "name": "shop",
        "hostname": "web-1",
        "pid": 7,
        "level": 60,
        "msg": "crashed",
        "time": "2026-11-21T09:00:00.000Z",
        "v": 0,
        "err": {"message": "boom", "name": "RangeError", "stack": "RangeError: boom\n    at x"},
    }
    event = event_from_json(bunyan)
    assert event is not None
    assert event["error"] == {"type": "RangeError", "message": "boom"}
    assert event["tags"]["logger"] == "shop"


def test_error_without_level_is_recognised_by_its_stack_only() -> None:
    assert event_from_json({"msg": "served", "status": 200}) is None
    event = event_from_json({"msg": "oops", "stack": "Error: oops\n    at main (/a.js:1:1)"})
    assert event is not None and event["error"]["type"] == "Error"


def test_plain_tracebacks_with_chains_and_context_line() -> None:
    data = (
        b"2026-11-21 09:00:00 INFO served /cart\n"
        b"2026-11-21 09:00:01 ERROR payment failed\n"
        b"Traceback (most recent call last):\n"
        b'  File "/srv/shop/app/pay.py", line 5, in pay\n'
        b"    gateway.charge()\n"
        b"ConnectionError: reset\n"
        b"\n"
        b"The above exception was the direct cause of the following exception:\n"
        b"\n"
        b"Traceback (most recent call last):\n"
        b'  File "/srv/shop/app/api.py", line 9, in checkout\n'
        b"    pay()\n"
        b"shop.errors.PaymentError: could not charge\n"
        b"2026-11-21 09:00:02 INFO served /health\n"
    )
    found, safe = scan_all(data, finish=False)
    assert safe == len(data)
    assert len(found) == 1
    record = found[0]
    assert isinstance(record.payload, str)
    assert record.payload.endswith("shop.errors.PaymentError: could not charge\n")
    assert "The above exception was the direct cause" in record.payload
    assert record.context == "2026-11-21 09:00:01 ERROR payment failed"
    assert data[record.start : record.end].decode().startswith("Traceback")
    event = event_from_traceback(record.payload, record.context)
    assert event["error"] == {"type": "shop.errors.PaymentError", "message": "could not charge"}
    assert event["tags"]["log.message"] == "2026-11-21 09:00:01 ERROR payment failed"


def test_traceback_at_the_end_waits_for_a_possible_chain_unless_finished() -> None:
    data = ("noise\n" + PY_TRACEBACK).encode()
    found, safe = scan_all(data, finish=False)
    assert found == [] and safe == 0  # the line before it is re-read with it, as its context
    found, safe = scan_all(data, finish=True)
    assert len(found) == 1 and safe == len(data)


def test_traceback_without_its_exception_line_yet_is_left_for_later() -> None:
    head = 'Traceback (most recent call last):\n  File "/a.py", line 1, in <module>\n'
    found, safe = scan_all(head.encode(), finish=True)
    assert found == [] and safe == 0


def test_partial_last_line_is_not_consumed() -> None:
    complete = lines({"level": "error", "msg": "a", "stack": "Error: a\n    at x"})
    partial = b'{"level": "error", "msg": "b", "sta'
    found, safe = scan_all(complete + partial)
    assert len(found) == 1
    assert safe == len(complete)


def test_offsets_are_relative_to_the_read_position() -> None:
    data = lines({"level": "error", "msg": "a", "stack": "Error: a\n    at x"})
    found, safe = scan(data, 1000, finish=True, max_record=1 << 20)
    assert (found[0].start, found[0].end, safe) == (1000, 1000 + len(data), 1000 + len(data))


def test_oversized_line_without_newline_is_skipped() -> None:
    data = b"x" * 5000
    found, safe = scan(data, 0, finish=False, max_record=4096)
    assert found == [] and safe == 5000
