"""Encrypted history end to end, on the real Temporal dev server and the real `temporal` CLI.

An incident carrying a planted error message, traceback and failure runs through a
codec-enabled client and worker; `temporal workflow show --output json` then holds none of the
planted text (a control incident without the codec shows that the check can see it), while
the same CLI pointed at `remedy codec-server` (a subprocess, as a user starts it), and the
Temporal UI's kind of request to /decode, read it back. Bad requests get 4xx naming the
problem; `remedy dev` hands the codec endpoint to the UI.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from typer.testing import CliRunner

from remedy.config import RemedyConfig, load_config
from remedy.temporal import data_converter, reach
from starter.cli import app
from starter.dev import DevStack
from tests.conftest import TEMPORAL, free_port
from tests.workflow_harness import FakeActivities, finished, make_start, start_incident
from workflows.incident import IncidentWorkflow

REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS_ENV = "TEST_CODEC_SERVER_KEYS"
TOKEN_ENV = "TEST_CODEC_SERVER_TOKEN"
TOKEN = f"codec-token-{secrets.token_hex(8)}"
UI_ORIGIN = "http://localhost:8233"

PLANTED_MESSAGE = "PLANTED-msg-Zq81 card 4111 of jane"
PLANTED_TRACE = "PLANTED-trace-Xv27"
PLANTED_FAILURE = "PLANTED-failure-Wm53"
PLANTED = (PLANTED_MESSAGE, PLANTED_TRACE, PLANTED_FAILURE)


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Setup:
    config: RemedyConfig
    config_path: Path
    address: str
    namespace: str
    encrypted_id: str
    control_id: str
    codec_client: Client


@pytest.fixture(scope="module")
def codec_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        # Rotated once: k2 encrypts, k1 still decrypts.
        patch.setenv(KEYS_ENV, f"k2:{_key()},k1:{_key()}")
        patch.setenv(TOKEN_ENV, TOKEN)
        yield


async def _run_incident(client: Client, service: str) -> str:
    """An incident that fails on a planted error, run to its end; its workflow id."""
    fakes = FakeActivities(
        sync_error=ApplicationError(f"git fetch: {PLANTED_FAILURE}", non_retryable=True)
    )
    start = make_start(service=service)
    start.event.error.message = PLANTED_MESSAGE
    start.event.traceback = (
        "Traceback (most recent call last):\n"
        f'  File "app/cart.py", line 2, in total\n    {PLANTED_TRACE}()\n'
        f"KeyError: {PLANTED_MESSAGE!r}\n"
    )
    queue = f"codec-{service}-{secrets.token_hex(4)}"
    async with Worker(
        client, task_queue=queue, workflows=[IncidentWorkflow], activities=fakes.all()
    ):
        handle = await start_incident(client, queue, start)
        final = await finished(handle)
    assert final.phase == "failed" and PLANTED_FAILURE in (final.reason or "")
    return handle.id


@pytest.fixture(scope="module")
async def setup(
    codec_env: None, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    address = temporal_env.client.service_client.config.target_host
    namespace = temporal_env.client.namespace
    path = tmp_path_factory.mktemp("codec") / "remedy.toml"
    path.write_text(
        f'home = "state"\n[temporal]\naddress = "{address}"\nnamespace = "{namespace}"\n'
        f'[codec]\nenabled = true\nkeys_env = "{KEYS_ENV}"\nserver_token_env = "{TOKEN_ENV}"\n'
        f"server_port = {free_port()}\n"
    )
    config = load_config(path)
    codec_client = await reach(Client.connect, config)  # as the intake and the worker connect
    encrypted_id = await _run_incident(codec_client, "shop")
    # The control is plain whatever REMEDY_CODEC__* the run has.
    plain_client = await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )
    control_id = await _run_incident(plain_client, "plainshop")
    yield Setup(config, path, address, namespace, encrypted_id, control_id, codec_client)


def show(setup: Setup, workflow_id: str, *extra: str) -> dict[str, Any]:
    """`temporal workflow show --output json`, the real CLI binary."""
    shown = subprocess.run(
        [
            *(TEMPORAL, "workflow", "show", "-w", workflow_id, "--output", "json"),
            *("--address", setup.address, "--namespace", setup.namespace, *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    document: dict[str, Any] = json.loads(shown.stdout)
    return document


def readable(value: Any) -> str:
    """Every string in a JSON document, and what each one says when read as base64."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for key, inner in item.items():
                found.append(str(key))
                walk(inner)
        elif isinstance(item, list):
            for inner in item:
                walk(inner)
        elif isinstance(item, str):
            found.append(item)
            with contextlib.suppress(ValueError):
                found.append(base64.b64decode(item, validate=True).decode("utf-8", "replace"))

    walk(value)
    return "\n".join(found)


def test_the_stored_history_holds_no_planted_text(setup: Setup) -> None:
    control = readable(show(setup, setup.control_id))
    encrypted = readable(show(setup, setup.encrypted_id))

    for planted in PLANTED:
        assert planted in control, "the check finds plaintext where there is some"
        assert planted not in encrypted, f"{planted} readable in the stored history"
    assert "binary/encrypted" in encrypted and "k2" in encrypted
    # Failure messages and stack traces are moved into encrypted attributes too.
    assert "Encoded failure" in encrypted


async def test_the_encrypted_history_replays_with_the_codec_only(setup: Setup) -> None:
    history = await setup.codec_client.get_workflow_handle(setup.encrypted_id).fetch_history()

    await Replayer(
        workflows=[IncidentWorkflow], data_converter=data_converter(setup.config)
    ).replay_workflow(history)
    with pytest.raises(Exception, match=r"(?i)encod|convert|deserial|json"):
        await Replayer(
            workflows=[IncidentWorkflow], data_converter=pydantic_data_converter
        ).replay_workflow(history)


@pytest.fixture(scope="module")
def codec_server(setup: Setup) -> Iterator[str]:
    """`remedy codec-server` as a user starts it; its URL."""
    url = f"http://127.0.0.1:{setup.config.codec.server_port}"
    log = setup.config_path.parent / "codec-server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "starter.cli",
                "codec-server",
                "--config",
                str(setup.config_path),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"codec server not up: {log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_temporal_cli_reads_the_history_through_the_codec_server(
    setup: Setup, codec_server: str
) -> None:
    decoded = readable(
        show(
            setup,
            setup.encrypted_id,
            "--codec-endpoint",
            codec_server,
            "--codec-auth",
            f"Bearer {TOKEN}",
        )
    )
    for planted in PLANTED:
        assert planted in decoded


def _ui_headers(**extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Namespace": "default",
        "Origin": UI_ORIGIN,
        "Authorization": f"Bearer {TOKEN}",
        **extra,
    }


def _started_input(setup: Setup) -> list[dict[str, Any]]:
    """The incident's input payloads in protobuf JSON, as the UI holds and sends them."""
    [started] = [
        e
        for e in show(setup, setup.encrypted_id)["events"]
        if "workflowExecutionStartedEventAttributes" in e
    ]
    payloads: list[dict[str, Any]] = started["workflowExecutionStartedEventAttributes"]["input"][
        "payloads"
    ]
    return payloads


def test_the_ui_decodes_and_encodes_across_origins(setup: Setup, codec_server: str) -> None:
    sealed = _started_input(setup)
    assert setup.namespace == "default"

    decoded = httpx.post(
        f"{codec_server}/decode", json={"payloads": sealed}, headers=_ui_headers(), timeout=10
    )

    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["access-control-allow-origin"] == UI_ORIGIN
    assert decoded.headers["access-control-allow-credentials"] == "true"
    [plain] = decoded.json()["payloads"]
    assert base64.b64decode(plain["metadata"]["encoding"]) == b"json/plain"
    text = base64.b64decode(plain["data"]).decode()
    assert PLANTED_MESSAGE in text and PLANTED_TRACE in text
    # Encoding is the other direction (the UI and CLI starting or signalling a workflow),
    # and only the last part of the path counts.
    encoded = httpx.post(
        f"{codec_server}/default/encode", json={"payloads": [plain]}, headers=_ui_headers()
    )
    assert encoded.status_code == 200, encoded.text
    [again] = encoded.json()["payloads"]
    assert base64.b64decode(again["metadata"]["encryption-key-id"]) == b"k2"
    assert PLANTED_MESSAGE not in readable(again)
    back = httpx.post(f"{codec_server}/decode", json={"payloads": [again]}, headers=_ui_headers())
    assert back.json()["payloads"] == [plain]


def test_the_browser_preflight_allows_the_ui_and_no_one_else(codec_server: str) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    for origin in ("http://127.0.0.1:8233", UI_ORIGIN):
        preflight = httpx.options(f"{codec_server}/decode", headers={"Origin": origin, **asked})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == origin
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-namespace"} <= set(allowed.split(", "))

    foreign = httpx.options(
        f"{codec_server}/decode", headers={"Origin": "http://evil.example", **asked}
    )
    assert foreign.status_code == 400 and "origin" in foreign.text.lower()
    assert "access-control-allow-origin" not in foreign.headers


def test_without_the_token_nothing_is_decoded(setup: Setup, codec_server: str) -> None:
    sealed = _started_input(setup)
    for authorization in (None, "Bearer wrong", f"Basic {TOKEN}", TOKEN):
        headers = _ui_headers()
        headers.pop("Authorization")
        if authorization:
            headers["Authorization"] = authorization
        refused = httpx.post(f"{codec_server}/decode", json={"payloads": sealed}, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == {
            "error": "a valid bearer token is required (Authorization: Bearer ...)"
        }


def _sealed_with(setup: Setup, **changes: str) -> dict[str, Any]:
    payload = dict(_started_input(setup)[0])
    payload["metadata"] = dict(payload["metadata"])
    if "key_id" in changes:
        payload["metadata"]["encryption-key-id"] = base64.b64encode(b"k9").decode()
    if "data" in changes:
        raw = bytearray(base64.b64decode(payload["data"]))
        raw[-1] ^= 1
        payload["data"] = base64.b64encode(bytes(raw)).decode()
    return payload


def test_bad_requests_get_a_4xx_that_names_the_problem(setup: Setup, codec_server: str) -> None:
    def post(body: bytes | str, path: str = "/decode", **headers: str) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return httpx.post(
            f"{codec_server}{path}", content=content, headers=_ui_headers(**headers), timeout=10
        )

    cases = [
        (post("not json"), 400, "body is not JSON"),
        (post("{}"), 400, '{"payloads": [...]}'),
        (post('{"payloads": {}}'), 400, '{"payloads": [...]}'),
        (post('{"payloads": [{"data": "***"}]}'), 400, "payloads[0].data is not base64"),
        (post('{"payloads": [{"metadata": {"encoding": "?"}}]}'), 400, "metadata.encoding"),
        (post('{"payloads": [{"colour": "red"}]}'), 400, "colour"),
        (post(json.dumps({"payloads": [_sealed_with(setup, key_id="k9")]})), 400, "key id 'k9'"),
        (post(json.dumps({"payloads": [_sealed_with(setup, data="flip")]})), 400, "k2"),
        (post("{}", **{"X-Namespace": "other"}), 403, "X-Namespace"),
        (post("{}", **{"Content-Type": "text/plain"}), 415, "application/json"),
        (post(b"[" * (9 * 1024 * 1024)), 413, "limit"),
    ]
    for response, status, says in cases:
        assert response.status_code == status, response.text
        assert says in response.json()["error"], response.text
    unknown = post(json.dumps({"payloads": [_sealed_with(setup, key_id="k9")]})).json()["error"]
    assert "payloads[0]" in unknown and os.environ[KEYS_ENV].split(":")[1] not in unknown


def test_the_server_refuses_to_start_where_it_would_be_open(setup: Setup) -> None:
    runner = CliRunner()
    no_token = {TOKEN_ENV: ""}
    args = ["codec-server", "--config", str(setup.config_path)]

    wide_open = runner.invoke(app, [*args, "--host", "0.0.0.0"], env=no_token)
    assert wide_open.exit_code == 2
    assert f"{TOKEN_ENV} is unset" in wide_open.stderr and "loopback only" in wide_open.stderr
    assert wide_open.stderr.count("\n") == 1

    off = runner.invoke(app, args, env={"REMEDY_CODEC__ENABLED": "false"})
    assert off.exit_code == 2 and "the codec is off" in off.stderr


def test_remedy_dev_points_the_ui_at_the_codec_server(setup: Setup, tmp_path: Path) -> None:
    temporal_port, ui_port = free_port(), free_port()
    config = setup.config.model_copy(deep=True)
    config.home = str(tmp_path)
    config.temporal.address = f"127.0.0.1:{temporal_port}"
    config.temporal.dev_ui_port = ui_port
    argv = DevStack(config, setup.config_path).temporal_argv()
    endpoint = f"http://127.0.0.1:{config.codec.server_port}"
    assert argv[argv.index("--ui-codec-endpoint") + 1] == endpoint

    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                settings = httpx.get(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=1)
                if settings.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "no dev UI"
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert settings.json()["Codec"]["Endpoint"] == endpoint
