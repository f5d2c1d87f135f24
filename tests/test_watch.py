"""`remedy watch` against a loopback intake: rotation, truncation, partial lines, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from remedy.config import RemedyConfig, ServiceConfig
from remedy.retry_after import retry_after_s
from remedy.watch.tail import WatchError
from starter.watch import Watcher
from starter.watch_cli import register
from tests.fakes.remedy_intake import IntakeReceiver, RealIntake, free_port

TOKEN = "shop-intake-token-123"
ROOT = Path(__file__).resolve().parent.parent


def error_line(n: int) -> str:
    record = {
        "level": 50,
        "msg": f"failure {n}",
        "err": {
            "type": "TypeError",
            "message": f"m{n}",
            "stack": f"TypeError: m{n}\n    at f (/a.js:{n}:1)",
        },
    }
    return json.dumps(record) + "\n"


def info_line(n: int) -> str:
    return json.dumps({"level": 30, "msg": f"served {n}"}) + "\n"


def messages(receiver: IntakeReceiver) -> list[str]:
    return [body["error"]["message"] for body in receiver.bodies()]


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def receiver() -> Iterator[IntakeReceiver]:
    with IntakeReceiver() as server:
        yield server


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "app.json"


def make_config(tmp_path: Path, log_path: Path, url: str, **watch: Any) -> RemedyConfig:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"start_at": "beginning", "poll_interval_s": 0.02, "traceback_flush_s": 0.05}
    settings.update(watch)
    return RemedyConfig(
        home=str(tmp_path / "home"),
        intake={"public_url": url},
        watch=settings,
        services={
            "shop": ServiceConfig(
                repo=str(tmp_path), intake_token_env="TEST_WATCH_TOKEN", log_paths=[str(log_path)]
            )
        },
    )


@pytest.fixture
def config(
    tmp_path: Path, log_path: Path, receiver: IntakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> RemedyConfig:
    monkeypatch.setenv("TEST_WATCH_TOKEN", TOKEN)
    return make_config(tmp_path, log_path, receiver.url)


def run_once(config: RemedyConfig) -> int:
    return Watcher(config, once=True).run()


def poll_until(watcher: Watcher, predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached while polling the watcher")
        if not watcher.poll():
            time.sleep(0.02)


def test_reports_each_record_once_across_runs(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    log_path.write_text(info_line(0) + error_line(1) + info_line(2) + error_line(2))
    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2"]
    assert receiver.received[0].authorization == f"Bearer {TOKEN}"
    body = receiver.bodies()[0]
    assert body["service"] == "shop"
    assert body["tags"]["log.path"] == str(log_path)

    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2"]
    append(log_path, error_line(3))
    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2", "m3"]


def test_reports_reach_the_real_intake_as_incidents(
    tmp_path: Path, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WATCH_TOKEN", TOKEN)
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/shop/app/api.py", line 9, in checkout\n'
        "    return total(order)\n"
        '  File "/srv/shop/app/cart.py", line 42, in total\n'
        "    return order['sku'] * 2\n"
        "KeyError: 'sku'"
    )
    record = {
        "levelname": "ERROR",
        "name": "shop.api",
        "message": "checkout failed for postgres://shop:s3cr3t@db/shop",
        "exc_info": traceback,
        "release": "4f2a9c1e",
    }
    log_path.parent.mkdir(parents=True)
    log_path.write_text(
        info_line(1) + json.dumps(record) + "\n" + "ERROR again\n" + traceback + "\n"
    )
    probe = make_config(tmp_path, log_path, "http://unused.invalid")
    with RealIntake(probe) as intake:
        assert run_once(make_config(tmp_path, log_path, intake.url)) == 0
        json_start, plain_start = intake.reporter.wait_for(2)
    for start in (json_start, plain_start):
        assert start.service == "shop"
        assert start.event.error.type == "KeyError"
        assert [(f.file, f.line, f.function) for f in start.event.frames] == [
            ("/srv/shop/app/api.py", 9, "checkout"),
            ("/srv/shop/app/cart.py", 42, "total"),
        ]
    assert json_start.event.release == "4f2a9c1e"
    assert json_start.event.tags["logger"] == "shop.api"
    assert "s3cr3t" not in json_start.event.tags["log.message"]
    assert plain_start.event.tags["log.message"] == "ERROR again"
    assert json_start.fingerprint == plain_start.fingerprint  # one incident, two occurrences


def test_partial_last_line_waits_for_its_newline(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    line = error_line(1)
    log_path.write_text(line[:25])
    assert run_once(config) == 0
    assert messages(receiver) == []
    append(log_path, line[25:-1])
    assert run_once(config) == 0
    assert messages(receiver) == []
    append(log_path, "\n")
    assert run_once(config) == 0
    assert messages(receiver) == ["m1"]


def test_plain_traceback_written_in_pieces(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    watcher = Watcher(config)
    log_path.write_text("ERROR checkout failed\nTraceback (most recent call last):\n")
    watcher.poll()
    append(log_path, '  File "/srv/shop/app/cart.py", line 42, in total\n')
    time.sleep(0.1)
    watcher.poll()
    assert messages(receiver) == []
    append(log_path, "    return order['sku']\nKeyError: 'sku'\n")
    poll_until(watcher, lambda: receiver.bodies())
    body = receiver.bodies()[0]
    assert body["error"] == {"type": "KeyError", "message": "'sku'"}
    assert body["traceback"].endswith("KeyError: 'sku'\n")
    assert body["tags"]["log.message"] == "ERROR checkout failed"
    watcher.close()


def test_rotation_finishes_the_old_file_then_reads_the_new(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    watcher = Watcher(config)
    log_path.write_text(error_line(1))
    poll_until(watcher, lambda: messages(receiver) == ["m1"])
    rotated = log_path.with_name("app.json.1")
    os.rename(log_path, rotated)
    append(rotated, error_line(2))  # the writer had not reopened yet
    log_path.write_text(error_line(3) + error_line(4))
    poll_until(watcher, lambda: len(receiver.bodies()) >= 4)
    assert messages(receiver) == ["m1", "m2", "m3", "m4"]
    watcher.close()


def test_rotation_while_stopped_is_followed_by_inode(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    log_path.write_text(error_line(1))
    assert run_once(config) == 0
    os.rename(log_path, log_path.with_name("app.json.2026-11-21"))
    append(log_path.with_name("app.json.2026-11-21"), error_line(2))
    log_path.write_text(error_line(3))
    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2", "m3"]


def test_truncation_starts_again_from_the_top(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    log_path.write_text(info_line(0) * 20 + error_line(1))
    assert run_once(config) == 0
    log_path.write_text(error_line(2))  # copytruncate: same inode, shorter
    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2"]

    # Truncated and refilled past the old position before the watcher looked again:
    # only the changed first bytes tell.
    filler = info_line(9) * 40
    with open(log_path, "r+", encoding="utf-8") as handle:
        handle.truncate(0)
        handle.write(filler + error_line(3))
    assert run_once(config) == 0
    assert messages(receiver) == ["m1", "m2", "m3"]


def test_intake_down_keeps_the_position_and_the_next_run_delivers(
    tmp_path: Path, log_path: Path, receiver: IntakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WATCH_TOKEN", TOKEN)
    log_path.parent.mkdir(parents=True)
    log_path.write_text(error_line(1) + error_line(2) + error_line(3))
    down = make_config(tmp_path, log_path, f"http://127.0.0.1:{free_port()}", max_backoff_s=0.05)
    assert run_once(down) == 1
    up = make_config(tmp_path, log_path, receiver.url)
    assert run_once(up) == 0
    assert messages(receiver) == ["m1", "m2", "m3"]


def test_retries_429_and_5xx_without_skipping_and_drops_4xx(
    config: RemedyConfig, log_path: Path, receiver: IntakeReceiver
) -> None:
    receiver.fail("errors", "respond", status=429, headers={"Retry-After": "1"})
    receiver.fail("errors", "respond", status=503)
    receiver.fail("errors", "respond", status=422, body={"error": "invalid error event"})
    log_path.write_text(error_line(1) + error_line(2))
    started = time.monotonic()
    assert run_once(config) == 0
    # m1: 429 (honouring Retry-After: 1), 503, then 422: refused for good and skipped;
    # m2: accepted on its first attempt.
    assert len(receiver.attempts) == 4
    assert receiver.attempts[1] - receiver.attempts[0] >= 0.95
    assert time.monotonic() - started >= 1.0
    assert messages(receiver) == ["m2"]
    assert run_once(config) == 0
    assert len(receiver.attempts) == 4


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2026, 11, 21, 9, 0, 0, tzinfo=UTC)
    assert retry_after_s("7") == 7.0 and retry_after_s(" 1.5 ") == 1.5
    assert retry_after_s("Sat, 21 Nov 2026 09:00:30 GMT", now=now) == 30.0
    assert retry_after_s("Sat, 21 Nov 2026 08:59:00 GMT", now=now) == 0.0
    for unusable in (None, "", "soon", "inf", "nan"):
        assert retry_after_s(unusable) is None
    assert retry_after_s("-3") == 0.0


WATCH_SCRIPT = """
import logging, signal, sys
from remedy.config import load_config
from starter.watch import Watcher
logging.basicConfig(level=logging.WARNING)
watcher = Watcher(load_config(sys.argv[1]))
signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
sys.exit(watcher.run())
"""


def write_toml(tmp_path: Path, log_path: Path, url: str) -> Path:
    path = tmp_path / "remedy.toml"
    path.write_text(
        f'home = "{tmp_path / "home"}"\n'
        f'[intake]\npublic_url = "{url}"\n'
        '[watch]\nstart_at = "beginning"\npoll_interval_s = 0.02\n'
        f'[services.shop]\nrepo = "{tmp_path}"\nintake_token_env = "TEST_WATCH_TOKEN"\n'
        f'log_paths = ["{log_path}"]\n'
    )
    return path


def test_killed_mid_file_resends_only_the_record_in_flight(
    tmp_path: Path, log_path: Path, receiver: IntakeReceiver
) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_text(error_line(1) + error_line(2))
    config_path = write_toml(tmp_path, log_path, receiver.url)
    env = dict(os.environ, TEST_WATCH_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-c", WATCH_SCRIPT, str(config_path)]
    first = subprocess.Popen(command, env=env)
    receiver.wait_for(lambda: len(receiver.bodies()) == 2)
    append(log_path, error_line(3) + error_line(4) + error_line(5))
    # m3 reaches the intake, which holds its answer; the watcher is killed before it
    # hears the 202, as in a crash between the send and the bookkeeping.
    receiver.fail("errors", "hold")
    try:
        assert receiver.wait_held()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    receiver.release()

    second = subprocess.Popen(command, env=env)
    try:
        # Records go out in file order: a wrongly repeated one would arrive before m5.
        receiver.wait_for(lambda: "m5" in messages(receiver))
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    assert messages(receiver) == ["m1", "m2", "m3", "m3", "m4", "m5"]


def test_cli_once_and_config_errors(
    tmp_path: Path, log_path: Path, receiver: IntakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WATCH_TOKEN", TOKEN)
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so `watch` is addressed by name as in `remedy`
        """Unused."""

    log_path.parent.mkdir(parents=True)
    log_path.write_text(error_line(1))
    config_path = write_toml(tmp_path, log_path, receiver.url)
    result = CliRunner().invoke(app, ["watch", "--config", str(config_path), "--once"])
    assert result.exit_code == 0, result.output
    assert messages(receiver) == ["m1"]

    monkeypatch.delenv("TEST_WATCH_TOKEN")
    result = CliRunner().invoke(app, ["watch", "--config", str(config_path), "--once"])
    assert result.exit_code == 2
    assert "TEST_WATCH_TOKEN" in result.output


def test_nothing_to_watch_is_a_config_error(tmp_path: Path) -> None:
    config = RemedyConfig(services={"shop": ServiceConfig(repo=str(tmp_path))})
    with pytest.raises(WatchError, match="log_paths"):
        Watcher(config)
