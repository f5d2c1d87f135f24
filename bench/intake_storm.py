"""Intake storm: N identical error reports over HTTP -> how many workflows and Temporal calls,
how fast against a bare endpoint, and how far `RemedyOccurrences` trails the accepted count.

Runs the real intake (uvicorn + FastAPI + the coalescing reporter) against the real Temporal
dev server with a real worker on the demo repository, and a bare endpoint that only answers
202 on the same kind of server in the same process. The N reports go to both in alternating
slices, so load from the rest of the machine (and from the incident's own pipeline in the
worker) falls on both alike and the ratio comes from one run. While the storm runs, every
0.25 s the accepted count is compared with `RemedyOccurrences` as `describe()` shows it and
as the visibility list (what the UI's list reads) shows it: the lag is how long ago the
oldest accepted report not yet in that count was answered.

A request that meets a keep-alive connection the server closed (httpx ReadError /
RemoteProtocolError) is sent again, and so is one answered 429/503 with Retry-After, after
that wait (as the client library does); both kinds of retry are reported.

    .venv/bin/python bench/intake_storm.py [--reports 10000] [--concurrency 64] [--slice 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
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
ATTEMPTS = 5
SAMPLE_EVERY_S = 0.25
SETTLE_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(app: FastAPI) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
        await asyncio.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1/errors", server, task


@dataclass
class Target:
    """One endpoint under load: its client, time spent, retries, answer times."""

    url: str
    http: httpx.AsyncClient
    seconds: float = 0.0
    retries: int = 0
    told_to_retry: int = 0
    accepted_at: list[float] = field(default_factory=list)
    workflow_id: str = ""

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        for attempt in range(ATTEMPTS):
            last = attempt == ATTEMPTS - 1
            try:
                response = await self.http.post(self.url, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A keep-alive connection the server closed under us (a busy machine). Were
                # the first copy counted after all, the exact-count line below would say so.
                if last:
                    raise
                self.retries += 1
                continue
            retry_after = response.headers.get("retry-after")
            if response.status_code in (429, 503) and retry_after and not last:
                # What the client library does with "retry": wait as told, send again.
                self.told_to_retry += 1
                await asyncio.sleep(float(retry_after))
                continue
            return response
        raise AssertionError("unreachable")

    async def blast(self, body: bytes, reports: int, concurrency: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        remaining = iter(range(reports))
        refused: list[int] = []

        async def sender() -> None:
            for _ in remaining:
                response = await self.post(body, headers)
                if response.status_code != 202:
                    refused.append(response.status_code)
                    continue
                self.accepted_at.append(time.monotonic())
                if not self.workflow_id:
                    self.workflow_id = response.json().get("workflow_id", "")

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        self.seconds += time.perf_counter() - started
        if refused:
            raise SystemExit(f"{len(refused)} reports were refused: {sorted(set(refused))}")


@dataclass
class Lag:
    """How far a count trails the accepted reports, sampled."""

    seconds: list[float] = field(default_factory=list)
    last: int = 0

    def sample(self, now: float, accepted_at: list[float], count: int) -> None:
        self.last = count
        behind = count < len(accepted_at)
        self.seconds.append(now - accepted_at[count] if behind else 0.0)

    def summary(self) -> str:
        if not self.seconds:
            return "no samples"
        return (
            f"max {max(self.seconds):.2f} s, p50 {statistics.median(self.seconds):.2f} s "
            f"({len(self.seconds)} samples)"
        )


async def _described(client: Client, workflow_id: str) -> int | None:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return description.typed_search_attributes.get(names.SA_OCCURRENCES) or 0


async def _listed(client: Client, workflow_id: str) -> int | None:
    # Every run of the incident: a recurrence run carries the count of the runs before it.
    runs = [r async for r in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    if not runs:
        return None
    latest = max(runs, key=lambda r: r.start_time)
    return latest.typed_search_attributes.get(names.SA_OCCURRENCES) or 0


async def _watch(client: Client, intake: Target, done: asyncio.Event, lags: dict[str, Lag]) -> None:
    """Sample both counts until the storm is over and both have caught up (or SETTLE_S)."""
    settle_by = None
    while True:
        now = time.monotonic()
        if intake.workflow_id:
            for name, read in (("describe", _described), ("list", _listed)):
                count = await read(client, intake.workflow_id)
                if count is not None:
                    lags[name].sample(now, intake.accepted_at, count)
        if done.is_set():
            settle_by = settle_by or now + SETTLE_S
            caught_up = all(lag.last >= len(intake.accepted_at) for lag in lags.values())
            if caught_up or now > settle_by:
                return
        await asyncio.sleep(SAMPLE_EVERY_S)


def _bare_app() -> FastAPI:
    bare = FastAPI()

    @bare.post("/v1/errors")
    async def accept() -> JSONResponse:
        return JSONResponse({"accepted": True}, status_code=202)

    return bare


async def main(reports: int, concurrency: int, slice_size: int) -> None:
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
    body = json.dumps(
        {
            "service": "demo",
            "error": {"type": "KeyError", "message": "'SPRING24'"},
            "traceback": traceback_text,
        }
    ).encode()

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    config.temporal.task_queue = "bench-storm"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    lags = {"describe": Lag(), "list": Lag()}
    try:
        async with build_worker(env.client, config):
            reporter = TemporalReporter(
                env.client,
                task_queue=config.temporal.task_queue,
                coalesce_interval_s=config.intake.coalesce_interval_s,
                ui_url="http://127.0.0.1:8233/namespaces/default",
            )
            app = create_app(config, reporter=reporter)
            intake_url, server, task = await _serve(app)
            bare_url, bare_server, bare_task = await _serve(_bare_app())
            builder = app.state.builder
            async with (
                httpx.AsyncClient(limits=limits, timeout=30.0) as intake_http,
                httpx.AsyncClient(limits=limits, timeout=30.0) as bare_http,
            ):
                intake = Target(intake_url, intake_http)
                bare = Target(bare_url, bare_http)
                done = asyncio.Event()
                watcher = asyncio.create_task(_watch(env.client, intake, done, lags))
                sent = 0
                while sent < reports:
                    n = min(slice_size, reports - sent)
                    # Each slice's order alternates, so neither always runs first.
                    order = (intake, bare) if (sent // slice_size) % 2 == 0 else (bare, intake)
                    for target in order:
                        await target.blast(body, n, concurrency)
                    sent += n
                done.set()
                await watcher
            await reporter.close()
            server.should_exit = bare_server.should_exit = True
            await asyncio.gather(task, bare_task)

            workflow_id = intake.workflow_id
            started = [w async for w in env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            handle = env.client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
            deadline = time.monotonic() + SETTLE_S
            counted = 0
            while time.monotonic() < deadline:
                counted = (await handle.query(IncidentWorkflow.status)).occurrences
                if counted == reports:
                    break
                await asyncio.sleep(0.2)
            await handle.terminate("benchmark done")
    finally:
        await env.shutdown()

    intake_rate = reports / intake.seconds
    bare_rate = reports / bare.seconds
    calls = reporter.temporal_calls
    print(f"reports sent              {reports} to each, in slices of {slice_size}")
    print(f"workflows started         {reporter.workflows_started} (runs listed: {len(started)})")
    print(
        f"bodies parsed             {builder.built} (cache hits: {app.state.recent_reports.hits})"
    )
    print(f"Temporal calls            {calls} ({100 * calls / reports:.2f}% of reports)")
    print(f"occurrences counted       {counted} ({'exact' if counted == reports else 'MISMATCH'})")
    print(f"intake throughput         {intake_rate:,.0f} reports/s ({intake.seconds:.2f} s)")
    print(f"bare endpoint throughput  {bare_rate:,.0f} reports/s ({bare.seconds:.2f} s)")
    print(f"intake / bare             {intake_rate / bare_rate:.2f}")
    print(f"retries, closed conn.     intake {intake.retries}, bare {bare.retries}")
    print(f"told to retry (429/503)   intake {intake.told_to_retry}, bare {bare.told_to_retry}")
    print(f"occurrences lag describe  {lags['describe'].summary()}")
    print(f"occurrences lag list      {lags['list'].summary()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slice", type=int, default=1000, help="reports per alternating slice")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.reports, arguments.concurrency, arguments.slice))
