"""Intake under hostile input: latency of normal reports while large ones arrive alongside.

One run, three phases against the real intake app (create_app, its lifespan and parse pool)
served by uvicorn in a child process, so the load generator does not share its event loop:

1. normal reports only (a real ~2 KB Python traceback, a steady stream from a few senders);
2. the same stream while hostile senders post valid reports with 200 KB tracebacks, the
   costliest text for redaction (about 0.4 s of CPU each), as fast as they are answered;
3. as 2, on an intake that builds every report on its event loop (`inline_parse_bytes`
   above the body limit): what the intake did before the parse pool.

The reporter records nothing and answers at once, so the figures are the intake's own.

    .venv/bin/python bench/intake_fuzz.py [--seconds 10] [--hostile 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from remedy.config import RemedyConfig, ServiceConfig
from remedy.models import IncidentStart, IntakeResponse
from starter.app import create_app

TOKEN = "bench-fuzz-token"
NORMAL_SENDERS = 4
NORMAL_PAUSE_S = 0.02


class _AnsweringReporter:
    async def report(self, start: IncidentStart) -> IntakeResponse:
        return IntakeResponse(
            incident_id=f"{start.service}-{start.fingerprint}-00000000",
            workflow_id=f"incident-{start.service}-{start.fingerprint}",
            deduplicated=False,
            occurrences=1,
            ui_url="",
        )


def _serve(port: int, inline_parse_bytes: int | None) -> None:
    """The child process: the intake on 127.0.0.1:`port`."""
    os.environ["REMEDY_BENCH_TOKEN"] = TOKEN
    config = RemedyConfig(
        services={"shop": ServiceConfig(repo="/nonexistent", intake_token_env="REMEDY_BENCH_TOKEN")}
    )
    if inline_parse_bytes is not None:
        config.intake.inline_parse_bytes = inline_parse_bytes
    app = create_app(config, reporter=_AnsweringReporter())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _python_traceback() -> str:
    """A real traceback of a few frames, as a service sends it."""
    folder = Path(tempfile.mkdtemp(prefix="remedy-bench-fuzz-"))
    script = folder / "app" / "cart.py"
    script.parent.mkdir()
    script.write_text(
        "def price(item):\n    return item['sku'] * 2\n\n"
        "def total(order):\n    return sum(price(i) for i in order)\n\n"
        "def checkout(cart):\n    return total(cart['items'])\n\n"
        "checkout({'items': [{'price': 3}]})\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    return done.stderr


def _bodies() -> tuple[list[bytes], bytes]:
    traceback_text = _python_traceback()
    normal = [
        json.dumps(
            {
                "service": "shop",
                "release": "abc1234",
                "error": {"type": "KeyError", "message": f"'sku' in order {n}"},
                "traceback": traceback_text,
                "tags": {"region": "eu"},
            }
        ).encode()
        for n in range(100)
    ]
    hostile = json.dumps(
        {
            "service": "shop",
            "error": {"type": "KeyError", "message": "a=b " * 4_000},
            "traceback": "a=b " * 49_000,
        }
    ).encode()
    return normal, hostile


async def _phase(
    port: int, normal: list[bytes], hostile: bytes, hostile_senders: int, seconds: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    hostile_answers: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=NORMAL_SENDERS + hostile_senders)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=60
    ) as http:

        async def normal_sender(offset: int) -> None:
            n = offset
            while time.monotonic() < deadline:
                started = time.perf_counter()
                reply = await http.post("/v1/errors", content=normal[n % len(normal)])
                latencies.append(time.perf_counter() - started)
                if reply.status_code != 202:
                    raise SystemExit(f"a normal report got {reply.status_code}: {reply.text}")
                n += NORMAL_SENDERS
                await asyncio.sleep(NORMAL_PAUSE_S)

        async def hostile_sender() -> None:
            while time.monotonic() < deadline:
                reply = await http.post("/v1/errors", content=hostile)
                hostile_answers[reply.status_code] = hostile_answers.get(reply.status_code, 0) + 1
                if reply.status_code == 429:
                    await asyncio.sleep(float(reply.headers.get("retry-after", "1")))

        await asyncio.gather(
            *(normal_sender(n) for n in range(NORMAL_SENDERS)),
            *(hostile_sender() for _ in range(hostile_senders)),
        )
    ordered = sorted(latencies)
    return {
        "reports": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
        "hostile": dict(sorted(hostile_answers.items())),
    }


async def _wait_until_up(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(300):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("the intake did not start")


def _run_phase(
    inline_parse_bytes: int | None, hostile_senders: int, seconds: float
) -> dict[str, Any]:
    normal, hostile = _bodies()
    port = _free_port()
    # Spawned, not forked: the child builds its own app, pool and event loop.
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, inline_parse_bytes)
    )
    server.start()
    try:
        asyncio.run(_wait_until_up(port))
        # One warm-up round, so that the parse workers have started before timing.
        asyncio.run(_phase(port, normal, hostile, min(hostile_senders, 1), 1.0))
        return asyncio.run(_phase(port, normal, hostile, hostile_senders, seconds))
    finally:
        server.terminate()
        server.join(10)


def main(seconds: float, hostile_senders: int) -> None:
    rows = [
        ("normal reports only", _run_phase(None, 0, seconds)),
        (
            f"+ {hostile_senders} hostile senders, parse pool",
            _run_phase(None, hostile_senders, seconds),
        ),
        (
            f"+ {hostile_senders} hostile senders, all on the event loop",
            _run_phase(10**9, hostile_senders, seconds),
        ),
    ]
    print(f"{'phase':48} {'normal':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  hostile answers")
    for name, row in rows:
        print(
            f"{name:48} {row['reports']:>7} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f}  {row['hostile']}"
        )
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} python={sys.version.split()[0]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--hostile", type=int, default=4, help="hostile senders")
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.hostile)
