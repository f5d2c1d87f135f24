"""Sentry envelope intake throughput against POST /v1/errors, in one run.

The real intake (uvicorn + FastAPI + the coalescing reporter, the Temporal dev server behind
it) takes four blasts from an httpx client (64 concurrent connections, in this process as in
bench/intake_storm.py): N reports of one error and M reports of M different errors, each as
POST /v1/errors (JSON with the traceback) and as Sentry envelopes, which are sentry-sdk's own
envelope of the same exception, brotli-compressed as the SDK sends them. No worker runs during
the blasts, so the figures are the intake's; afterwards a workflow-only worker answers the
status query of the storms' incidents to check their counts are exact.

    .venv/bin/python bench/sentry_storm.py [--reports 5000] [--distinct 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import string
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brotli
import httpx
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from remedy import names
from remedy.config import RemedyConfig, ServiceConfig
from remedy.intake_formats.sentry_auth import project_id_for
from remedy.temporal import data_converter
from starter.app import create_app
from starter.reporter import TemporalReporter
from tests.apps.sentry_capture import sdk_envelope
from workflows.incident import IncidentWorkflow

DIRECT_TOKEN = "bench-direct-token"
SENTRY_TOKEN = "bench-sentry-token"


def apply_discount(order: dict[str, Any]) -> float:
    return float(order["price"]) * (1 - order["coupon"]["percent"] / 100)


def _crash() -> BaseException:
    try:
        apply_discount({"price": 3, "coupon": None})
    except TypeError as exc:
        return exc
    raise AssertionError("the bug went away")


def _sentry_event(error: BaseException) -> tuple[dict[str, Any], dict[str, Any]]:
    """sentry-sdk's envelope header and event for `error`, as its transport would send them."""
    envelope = sdk_envelope(error)
    event = envelope.get_event()
    assert event is not None
    return dict(envelope.headers), json.loads(json.dumps(event, default=str))


def _word(n: int) -> str:
    """Letters only: numbers are normalized away by the fingerprint, words are not."""
    letters = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = string.ascii_lowercase[rest] + letters
    return letters


def _envelope(header: dict[str, Any], event: dict[str, Any]) -> bytes:
    payload = json.dumps(event).encode()
    items = b'{"type":"event","content_type":"application/json","length":%d}\n' % len(payload)
    return brotli.compress(json.dumps(header).encode() + b"\n" + items + payload, quality=4)


def _distinct_event(event: dict[str, Any], n: int) -> dict[str, Any]:
    changed = json.loads(json.dumps(event))
    changed["event_id"] = uuid.uuid4().hex
    changed["exception"]["values"][-1]["value"] = f"coupon {_word(n)} is not subscriptable"
    return changed


@dataclass
class Blast:
    name: str
    url: str
    bodies: Sequence[bytes]
    headers: dict[str, str]
    seconds: float = 0.0
    workflow_id: str = ""  # of the last answer


async def _send(blast: Blast, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    remaining = iter(blast.bodies)
    failures: list[str] = []
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as http:

        async def sender() -> None:
            for body in remaining:
                reply = await http.post(blast.url, content=body, headers=blast.headers)
                if reply.status_code not in (200, 202):
                    failures.append(f"{reply.status_code} {reply.text[:200]}")
                else:
                    blast.workflow_id = reply.json()["workflow_id"]

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        blast.seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{blast.name}: {len(failures)} refused, first: {failures[0]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _exact_counts(client: Client, queue: str, storms: dict[str, int]) -> dict[str, int]:
    """Occurrences of each storm's incident, read by a worker that runs only the workflow (the
    distinct errors' incidents are ended first, so it replays nothing else)."""
    async for found in client.list_workflows(
        "WorkflowType = 'IncidentWorkflow' AND ExecutionStatus = 'Running'"
    ):
        if found.id not in storms:
            await client.get_workflow_handle(found.id).terminate("benchmark done")
    counts: dict[str, int] = {}
    async with Worker(client, task_queue=queue, workflows=[IncidentWorkflow]):
        for workflow_id, expected in storms.items():
            handle = client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts[workflow_id] = (await handle.query(IncidentWorkflow.status)).occurrences
                if counts[workflow_id] == expected:
                    break
                await asyncio.sleep(0.5)
            await handle.terminate("benchmark done")
    return counts


async def main(reports: int, distinct: int, concurrency: int) -> None:
    os.environ["REMEDY_BENCH_DIRECT_TOKEN"] = DIRECT_TOKEN
    os.environ["REMEDY_BENCH_SENTRY_TOKEN"] = SENTRY_TOKEN
    config = RemedyConfig(
        services={
            "direct": ServiceConfig(
                repo="/nonexistent", intake_token_env="REMEDY_BENCH_DIRECT_TOKEN"
            ),
            "sentry": ServiceConfig(
                repo="/nonexistent", intake_token_env="REMEDY_BENCH_SENTRY_TOKEN"
            ),
        }
    )
    config.temporal.task_queue = f"bench-sentry-{uuid.uuid4().hex[:8]}"
    error = _crash()
    text = "".join(traceback.format_exception(error))
    header, event = _sentry_event(error)
    direct = {"service": "direct", "release": "4f2a9c1e", "traceback": text}
    one_direct = json.dumps({**direct, "error": {"type": "TypeError", "message": str(error)}})
    many_direct = [
        json.dumps({**direct, "error": {"type": "TypeError", "message": f"coupon {_word(n)}"}})
        for n in range(distinct)
    ]
    one_envelope = _envelope(header, event)
    many_envelopes = [_envelope(header, _distinct_event(event, n)) for n in range(distinct)]

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=names.SEARCH_ATTRIBUTES,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    try:
        reporter = TemporalReporter(
            env.client,
            task_queue=config.temporal.task_queue,
            coalesce_interval_s=config.intake.coalesce_interval_s,
            ui_url="http://127.0.0.1:8233/namespaces/default",
        )
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, reporter=reporter),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                timeout_keep_alive=60,  # a busy loop must not close connections mid-blast
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        envelope_url = f"{base}/api/{project_id_for(config, 'sentry')}/envelope/"
        json_headers = {
            "Authorization": f"Bearer {DIRECT_TOKEN}",
            "Content-Type": "application/json",
        }
        sentry_headers = {
            "X-Sentry-Auth": f"Sentry sentry_key={SENTRY_TOKEN}, sentry_version=7",
            "Content-Type": "application/x-sentry-envelope",
            "Content-Encoding": "br",
        }
        blasts = [
            Blast("one error, POST /v1/errors", f"{base}/v1/errors",
                  [one_direct.encode()] * reports, json_headers),
            Blast("one error, envelope", envelope_url, [one_envelope] * reports, sentry_headers),
            Blast("distinct errors, POST /v1/errors", f"{base}/v1/errors",
                  [body.encode() for body in many_direct], json_headers),
            Blast("distinct errors, envelope", envelope_url, many_envelopes, sentry_headers),
        ]  # fmt: skip
        calls: list[tuple[int, int]] = []
        for blast in blasts:
            before = (reporter.temporal_calls, reporter.workflows_started)
            await _send(blast, concurrency)
            await reporter.close()
            calls.append(
                (reporter.temporal_calls - before[0], reporter.workflows_started - before[1])
            )
        server.should_exit = True
        await serving
        storms = {blast.workflow_id: reports for blast in blasts[:2]}
        counts = await _exact_counts(env.client, config.temporal.task_queue, storms)
    finally:
        await env.shutdown()

    print(f"{'blast':36} {'reports':>8} {'workflows':>9} {'Temporal calls':>14} {'reports/s':>10}")
    for blast, (temporal, workflows) in zip(blasts, calls, strict=True):
        rate = len(blast.bodies) / blast.seconds
        print(
            f"{blast.name:36} {len(blast.bodies):>8} {workflows:>9} {temporal:>14} {rate:>10,.0f}"
        )
    for kind, (direct_blast, sentry_blast) in (
        ("one error", blasts[:2]),
        ("distinct errors", blasts[2:]),
    ):
        ratio = direct_blast.seconds / sentry_blast.seconds
        print(f"{kind}: envelope / POST /v1/errors throughput = {ratio:.2f}")
    for blast in blasts[:2]:
        counted = counts[blast.workflow_id]
        verdict = "exact" if counted == reports else "MISMATCH"
        print(f"storm occurrences counted, {blast.name}: {counted} of {reports} ({verdict})")
    print(f"envelope {len(one_envelope)} bytes (br), /v1/errors body {len(one_direct)} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.reports, arguments.distinct, arguments.concurrency))
