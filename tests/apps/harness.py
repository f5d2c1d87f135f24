"""The intake served over HTTP on a free loopback port, and the SDK apps run against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from remedy.config import RemedyConfig, ServiceConfig
from starter.app import create_app
from tests.conftest import free_port
from tests.intake_harness import RecordingReporter
from tests.test_intake import BILLING_TOKEN, SHOP_TOKEN, intake_client

APPS = Path(__file__).resolve().parent


def shop_and_billing(monkeypatch: pytest.MonkeyPatch, **billing: Any) -> RemedyConfig:
    """The two services of tests/test_intake.py with their tokens set; `billing` adds keys."""
    monkeypatch.setenv("TEST_SHOP_TOKEN", SHOP_TOKEN)
    monkeypatch.setenv("TEST_BILLING_TOKEN", BILLING_TOKEN)
    return RemedyConfig(
        services={
            "shop": ServiceConfig(repo="/nonexistent/shop", intake_token_env="TEST_SHOP_TOKEN"),
            "billing": ServiceConfig(
                repo="/nonexistent/billing", intake_token_env="TEST_BILLING_TOKEN", **billing
            ),
        }
    )


@contextlib.asynccontextmanager
async def asgi_client(
    config: RemedyConfig, reporter: RecordingReporter
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the intake app, in process (no server)."""
    async with intake_client(create_app(config, reporter=reporter)) as client:
        yield client


# Fixtures of the SDK tests (Sentry, OpenTelemetry); each test module brings its `config`.


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
async def http(
    config: RemedyConfig, reporter: RecordingReporter
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(config, reporter) as client:
        yield client


@pytest.fixture
async def served(config: RemedyConfig, reporter: RecordingReporter) -> AsyncIterator[str]:
    async with serving(create_app(config, reporter=reporter)) as url:
        yield url


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """The app on a real uvicorn server in this event loop (so the reporter shares it); its
    base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def run_app(*command: str, timeout_s: float = 90) -> str:
    """Run an app of this folder to its end; its output (it must exit 0)."""
    env = {**os.environ, "PYTHONPATH": str(APPS), "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=APPS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{command[:2]} exited {process.returncode}:\n{text}"
    return text


def python_app(name: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, str(APPS / name), *args)
