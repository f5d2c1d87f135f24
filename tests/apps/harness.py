"""The intake served over HTTP on a free loopback port, and the SDK apps run against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from tests.conftest import free_port

APPS = Path(__file__).resolve().parent


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
