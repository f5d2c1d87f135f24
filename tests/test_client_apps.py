"""remedy_client inside real applications (a script, an ASGI app, a WSGI app) run as
subprocesses with the installed client, reporting to Remedy's real intake.

The intake's RecordingReporter shows what the intake accepted (service, release, frames);
its raw request bodies show what the client itself sent (redaction happens before sending).
With the intake down or hanging, the application's request latency stays flat and the
client's queue cap bounds its memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from remedy.config import RemedyConfig, ServiceConfig
from remedy.models import IncidentStart
from tests.fakes.remedy_intake import IntakeReceiver, RealIntake, free_port

TOKEN = "shop-intake-token-0123456789"
RELEASE = "4f2a9c1e"

BILLING = """
def charge(order):
    card = order["card"]
    if card is None:
        raise ValueError(f"no card on order {order!r}")
    return card["number"]
"""

SCRIPT = """
import json, logging, os
import remedy_client

remedy_client.init(os.environ["REMEDY_URL"], os.environ["REMEDY_TOKEN"], "shop",
                   release=os.environ["RELEASE"], excepthook=True)
logging.getLogger().addHandler(remedy_client.RemedyHandler())
from shop.billing import charge

try:
    charge({"id": 1})
except KeyError:
    remedy_client.capture_exception()

try:
    json.loads("{")
except ValueError:
    logging.getLogger("shop.worker").exception("bad payload from postgres://shop:s3cr3t@db/shop")

charge({"card": None, "note": "token=" + os.environ["CARD_TOKEN"]})
"""

ASGI_APP = """
import os
import remedy_client
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from shop.billing import charge

remedy_client.init(os.environ["REMEDY_URL"], os.environ["REMEDY_TOKEN"], "shop",
                   release=os.environ["RELEASE"])

async def boom(request):
    return PlainTextResponse(str(charge({"id": request.query_params.get("id")})))

async def ok(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/boom", boom), Route("/ok", ok)])
app.add_middleware(remedy_client.RemedyASGIMiddleware)
"""

WSGI_APP = """
import json, os, sys
from wsgiref.simple_server import WSGIRequestHandler, make_server
import remedy_client
from shop.billing import charge

remedy_client.init(os.environ["REMEDY_URL"], os.environ["REMEDY_TOKEN"], "shop",
                   release=os.environ["RELEASE"],
                   queue_size=int(os.environ.get("QUEUE_SIZE", "100")),
                   timeout=float(os.environ.get("CLIENT_TIMEOUT", "5")))

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def stream():
    yield b"partial "
    charge({"card": None})

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(dict(remedy_client.stats(), rss_kib=rss_kib())).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream()
    payload = bytearray(1 << 20)  # a request's worth of data in the failing frame
    return [str(charge({"payload": payload})).encode()]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

make_server("127.0.0.1", int(sys.argv[1]), remedy_client.RemedyWSGIMiddleware(app),
            handler_class=Quiet).serve_forever()
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "billing.py").write_text(BILLING)
    return root


@pytest.fixture
def intake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RealIntake]:
    monkeypatch.setenv("TEST_CLIENT_TOKEN", TOKEN)
    config = RemedyConfig(
        services={"shop": ServiceConfig(repo=str(tmp_path), intake_token_env="TEST_CLIENT_TOKEN")}
    )
    with RealIntake(config) as server:
        yield server


def app_env(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, REMEDY_URL=url, REMEDY_TOKEN=TOKEN, RELEASE=RELEASE, **extra)
    env.pop("PYTHONPATH", None)  # the client must come from its installed distribution
    return env


class RunningApp:
    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        # A file, not a pipe: the server prints every failed request's traceback, and a
        # pipe nobody reads would fill up and stall it.
        self.log = cwd / f"server-{port}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the app did not start: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_wsgi(app_dir: Path, env: dict[str, str]) -> RunningApp:
    (app_dir / "wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    return RunningApp([sys.executable, "wsgi_app.py", str(port)], app_dir, env, port)


def by_type(starts: list[IncidentStart]) -> dict[str, IncidentStart]:
    return {start.event.error.type: start for start in starts}


def test_plain_script_reports_caught_logged_and_uncaught_errors(
    app_dir: Path, intake: RealIntake
) -> None:
    (app_dir / "worker.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=app_dir,
        env=app_env(intake.url, CARD_TOKEN="abc123secret"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # the uncaught error still ends the program
    assert "ValueError: no card on order" in done.stderr  # ...and the usual hook still prints
    starts = by_type(intake.reporter.wait_for(3))
    assert set(starts) == {"KeyError", "json.decoder.JSONDecodeError", "ValueError"}
    for start in starts.values():
        assert start.service == "shop"
        assert start.event.release == RELEASE

    caught = starts["KeyError"].event
    assert caught.error.message == "'card'"
    assert [(f.file, f.function, f.in_app) for f in caught.frames] == [
        ("worker.py", "<module>", True),
        ("shop/billing.py", "charge", True),
    ]
    assert caught.frames[-1].module == "shop.billing"
    assert caught.frames[-1].code == 'card = order["card"]'
    assert caught.frames[-1].line == 3

    logged = starts["json.decoder.JSONDecodeError"].event
    assert logged.tags["logger"] == "shop.worker"
    assert logged.tags["mechanism"] == "logging"
    assert [f.in_app for f in logged.frames] == [True, False, False, False]

    uncaught = starts["ValueError"].event
    assert uncaught.tags == {"mechanism": "excepthook"}
    assert uncaught.traceback is not None and uncaught.traceback.startswith("Traceback")

    raw = b"".join(intake.raw)
    assert b"s3cr3t" not in raw and b"abc123secret" not in raw
    assert b"postgres://shop:[REDACTED]@db/shop" in raw
    assert b"token=[REDACTED]" in raw


def test_asgi_app_reports_failed_requests(app_dir: Path, intake: RealIntake) -> None:
    (app_dir / "asgi_app.py").write_text(ASGI_APP)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--port", str(port)]
    app = RunningApp([*command, "--log-level", "critical"], app_dir, app_env(intake.url), port)
    try:
        response = httpx.get(f"{app.url}/boom?id=7&api_key=k-123", timeout=10)
        assert response.status_code == 500
        [start] = intake.reporter.wait_for(1)
    finally:
        app.stop()
    event = start.event
    assert (start.service, event.release) == ("shop", RELEASE)
    assert event.error.type == "KeyError"
    assert event.tags == {"mechanism": "asgi", "http.method": "GET", "http.path": "/boom"}
    assert (event.frames[-1].file, event.frames[-1].in_app) == ("shop/billing.py", True)
    assert any("starlette" in f.file and f.in_app is False for f in event.frames)
    assert b"k-123" not in b"".join(intake.raw)


def test_wsgi_app_reports_errors_raised_while_answering_and_while_streaming(
    app_dir: Path, intake: RealIntake
) -> None:
    app = start_wsgi(app_dir, app_env(intake.url))
    try:
        assert httpx.get(f"{app.url}/boom", timeout=10).status_code == 500
        # The status line went out with the first chunk: the body just stops short.
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{app.url}/stream", timeout=10)
        starts = by_type(intake.reporter.wait_for(2))
    finally:
        app.stop()
    assert starts["KeyError"].event.tags["http.path"] == "/boom"
    streamed = starts["ValueError"].event
    assert streamed.tags == {"mechanism": "wsgi", "http.method": "GET", "http.path": "/stream"}
    assert [f.function for f in streamed.frames if f.in_app][-2:] == ["stream", "charge"]


def request_latencies(url: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=30) as http:
        for _ in range(count):
            started = time.perf_counter()
            assert http.get(f"{url}/boom").status_code == 500
            latencies.append(time.perf_counter() - started)
    return latencies


def stats(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/stats", timeout=10).json()
    return result


@pytest.mark.parametrize("intake_state", ["down", "hanging"])
def test_latency_stays_flat_and_memory_bounded_when_the_intake_fails(
    app_dir: Path, intake: RealIntake, intake_state: str
) -> None:
    up = start_wsgi(app_dir, app_env(intake.url))
    try:
        baseline = request_latencies(up.url, 20)
    finally:
        up.stop()

    hanging = IntakeReceiver()
    hanging.start()
    hanging.fail("errors", "hold", times=10_000)
    url = f"http://127.0.0.1:{free_port()}" if intake_state == "down" else hanging.url
    # A client that blocked the request would take its 10s timeout (hanging) or its
    # back-off (down) on every failing request.
    app = start_wsgi(app_dir, app_env(url, QUEUE_SIZE="20", CLIENT_TIMEOUT="10"))
    try:
        latencies = request_latencies(app.url, 50)
        early = stats(app.url)
        latencies += request_latencies(app.url, 250)
        late = stats(app.url)
    finally:
        app.stop()
        hanging.release()
        hanging.stop()

    summary = (
        f"median {statistics.median(latencies) * 1000:.1f}ms (intake up: "
        f"{statistics.median(baseline) * 1000:.1f}ms), max {max(latencies) * 1000:.1f}ms"
    )
    assert max(latencies) < 1.0, summary
    assert statistics.median(latencies) < statistics.median(baseline) + 0.1, summary
    assert late["queued"] <= 20
    assert late["captured"] <= 21 + late["failed"] + late["sent"]
    assert late["dropped"] >= 300 - 21 - late["failed"]
    # Each failing request held 1 MiB in its frame: a client that kept frames, or an
    # unbounded queue, would grow by hundreds of MiB between these two readings.
    assert late["rss_kib"] - early["rss_kib"] < 16 * 1024, json.dumps([early, late])


def test_flush_at_exit_is_bounded_when_the_intake_hangs(app_dir: Path) -> None:
    hanging = IntakeReceiver()
    hanging.start()
    hanging.fail("errors", "hold", times=100)
    script = textwrap.dedent(
        """
        import os, remedy_client
        remedy_client.init(os.environ["REMEDY_URL"], os.environ["REMEDY_TOKEN"], "shop",
                           timeout=30, shutdown_timeout=1.0)
        for n in range(5):
            try:
                {}[n]
            except KeyError as exc:
                remedy_client.capture_exception(exc)
        """
    )
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=app_dir,
            env=app_env(hanging.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        hanging.release()
        hanging.stop()
    assert done.returncode == 0, done.stderr
    assert len(hanging.received) >= 1
    assert elapsed < 6.0, f"exit took {elapsed:.1f}s with a 1s shutdown_timeout"
