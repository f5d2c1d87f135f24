"""Intake storm: N identical error reports over HTTP -> how many workflows and Temporal calls?

Runs the real intake (uvicorn + FastAPI + the coalescing reporter) against the real Temporal
dev server with a real worker on the demo repository, sends N identical reports from an
httpx client, and then sends the same N to a bare endpoint on the same kind of server, so
the intake's throughput is quoted as a ratio measured in one run.

    .venv/bin/python bench/intake_storm.py [--reports 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from temporalio.testing import WorkflowEnvironment

from remedy import names
from remedy.config import RemedyConfig, ServiceConfig
from remedy.temporal import data_converter
from starter.app import create_app
from starter.demo import build_demo_repository, crash_demo_service
from starter.reporter import TemporalReporter
from worker import build_worker
from workflows.incident import IncidentWorkflow

TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(app: FastAPI, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
        await asyncio.sleep(0.05)
    return server, task


async def _blast(url: str, body: dict[str, Any], reports: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    remaining = iter(range(reports))
    failures: list[int] = []

    async with httpx.AsyncClient(limits=limits, timeout=30.0) as http:

        async def sender() -> None:
            for _ in remaining:
                response = await http.post(url, json=body, headers=headers)
                if response.status_code != 202:
                    failures.append(response.status_code)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} reports were refused: {sorted(set(failures))}")
    return elapsed


def _bare_app() -> FastAPI:
    bare = FastAPI()

    @bare.post("/v1/errors")
    async def accept() -> JSONResponse:
        return JSONResponse({"accepted": True}, status_code=202)

    return bare


async def main(reports: int, concurrency: int) -> None:
    os.environ["REMEDY_BENCH_TOKEN"] = TOKEN
    home = Path(tempfile.mkdtemp(prefix="remedy-storm-"))
    origin = home / "demo" / "shop.git"
    work = build_demo_repository(origin)
    traceback_text = crash_demo_service(work)
    config = RemedyConfig(
        home=str(home),
        services={
            "demo": ServiceConfig(repo=str(origin), intake_token_env="REMEDY_BENCH_TOKEN"),
        },
    )
    config.limits.quiet_window_s = 3600
    config.llm.mode = "none"
    body = {
        "service": "demo",
        "error": {"type": "KeyError", "message": "'SPRING24'"},
        "traceback": traceback_text,
    }

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    config.temporal.task_queue = "bench-storm"
    try:
        async with build_worker(env.client, config):
            reporter = TemporalReporter(
                env.client,
                task_queue=config.temporal.task_queue,
                coalesce_interval_s=config.intake.coalesce_interval_s,
                ui_url="http://127.0.0.1:8233/namespaces/default",
            )
            port = _free_port()
            server, task = await _serve(create_app(config, reporter=reporter), port)
            intake_s = await _blast(
                f"http://127.0.0.1:{port}/v1/errors", body, reports, concurrency
            )
            await reporter.close()
            server.should_exit = True
            await task

            started = [
                w
                async for w in env.client.list_workflows(
                    f"WorkflowType = 'IncidentWorkflow' AND {names.SA_SERVICE.name} = 'demo'"
                )
            ]
            workflow_id = started[0].id if started else ""
            handle = env.client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
            deadline = time.monotonic() + 30
            counted = 0
            while time.monotonic() < deadline:
                counted = (await handle.query(IncidentWorkflow.status)).occurrences
                if counted == reports:
                    break
                await asyncio.sleep(0.2)

            bare_port = _free_port()
            bare_server, bare_task = await _serve(_bare_app(), bare_port)
            bare_s = await _blast(
                f"http://127.0.0.1:{bare_port}/v1/errors", body, reports, concurrency
            )
            bare_server.should_exit = True
            await bare_task
            await handle.terminate("benchmark done")
    finally:
        await env.shutdown()

    intake_rate = reports / intake_s
    bare_rate = reports / bare_s
    print(f"reports sent              {reports}")
    print(f"workflows started         {reporter.workflows_started} (visibility: {len(started)})")
    print(
        f"Temporal calls            {reporter.temporal_calls} "
        f"({100 * reporter.temporal_calls / reports:.2f}% of reports)"
    )
    print(f"occurrences counted       {counted} ({'exact' if counted == reports else 'MISMATCH'})")
    print(f"intake throughput         {intake_rate:,.0f} reports/s ({intake_s:.2f} s)")
    print(f"bare endpoint throughput  {bare_rate:,.0f} reports/s ({bare_s:.2f} s)")
    print(f"intake / bare             {intake_rate / bare_rate:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.reports, arguments.concurrency))
