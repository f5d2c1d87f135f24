"""Scale-out on one machine: two `remedy serve` replicas and two `remedy worker --role main`
processes, as deploy/ runs them, against one Temporal server. A storm of identical reports
split across both replicas is one incident whose occurrence count is exact: in the
workflow's status and in the RemedyOccurrences search attribute SREs filter on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from remedy import names
from tests.conftest import free_port
from tests.repos import make_service_repo
from tests.workflow_harness import eventually
from workflows.incident import IncidentWorkflow

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN_ENV = "SCALE_OUT_SHOP_TOKEN"
# A service of its own: incidents are per (service, fingerprint) in the session's
# namespace, so no other test's open or recently closed "shop" incident is joined.
SERVICE = "scale-out-shop"
TOKEN = "scale-out-shop-token-0123456789"
REPORTS_PER_REPLICA = 150
IN_FLIGHT_PER_REPLICA = 16
# Four Python processes start cold; on a busy 2-core machine that alone can take a minute.
STARTUP_S = 180.0
EVENT = {
    "service": SERVICE,
    "error": {"type": "KeyError", "message": "'sku'"},
    "traceback": "Traceback (most recent call last):\n"
    '  File "/srv/shop/app/cart.py", line 2, in total\n'
    "    return order['sku']\n"
    "KeyError: 'sku'\n",
}


def _config(tmp_path: Path, temporal_address: str) -> Path:
    repo = make_service_repo(tmp_path, service=SERVICE)
    repo.commit(
        {"app/__init__.py": "", "app/cart.py": "def total(order):\n    return order['sku']\n"},
        "Add cart",
    )
    queue = f"scale-out-{uuid.uuid4()}"
    path = tmp_path / "remedy.toml"
    path.write_text(
        'home = "state"\n'
        f'[temporal]\naddress = "{temporal_address}"\ntask_queue = "{queue}"\n'
        # Main workers only, as deploy/ runs them; the index queue has no worker here, so the
        # incident stays open (indexing) while the storm lasts.
        f'index_task_queue = "{queue}-index"\n'
        "[limits]\nquiet_window_s = 3600\n"
        '[llm]\nmode = "none"\n'
        f'[services.{SERVICE}]\nrepo = "{repo.origin}"\nintake_token_env = "{TOKEN_ENV}"\n'
        'approvers = ["U1"]\n'
    )
    return path


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(
    started: list[subprocess.Popen[bytes]], tmp_path: Path, log: str, *args: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), TOKEN_ENV: TOKEN}
    with (tmp_path / log).open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "starter.cli", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
    started.append(process)
    return process


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / name).read_text(errors="replace")


@pytest.mark.timeout(420)
async def test_a_storm_split_across_two_replicas_is_one_incident_with_an_exact_count(
    client: Client, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = _config(tmp_path, client.service_client.config.target_host)
    ports = [free_port(), free_port()]
    for number, port in enumerate(ports):
        _spawn(
            processes,
            tmp_path,
            f"serve-{number}.log",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        )
    for number in range(2):
        _spawn(
            processes,
            tmp_path,
            f"worker-{number}.log",
            "worker",
            "--config",
            str(config),
            "--role",
            "main",
        )
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    async with httpx.AsyncClient(timeout=30) as http:

        async def all_up() -> bool:
            for process in processes:
                assert process.poll() is None, f"a process exited early: {process.args}"
            for url in urls:
                try:
                    if (await http.get(f"{url}/readyz")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
            polling = (
                "worker polling task queue" in _log(tmp_path, f"worker-{n}.log") for n in range(2)
            )
            return all(polling)

        await eventually(all_up, timeout_s=STARTUP_S)

        async def send(url: str, gate: asyncio.Semaphore) -> httpx.Response:
            async with gate:
                return await http.post(
                    f"{url}/v1/errors", json=EVENT, headers={"Authorization": f"Bearer {TOKEN}"}
                )

        gates = {url: asyncio.Semaphore(IN_FLIGHT_PER_REPLICA) for url in urls}
        # Interleaved: both replicas meet the fingerprint first at about the same moment.
        targets = itertools.islice(itertools.cycle(urls), 2 * REPORTS_PER_REPLICA)
        replies = await asyncio.gather(*(send(url, gates[url]) for url in targets))

    assert [reply.status_code for reply in replies] == [202] * len(replies), {
        reply.status_code: reply.text for reply in replies if reply.status_code != 202
    }
    bodies = [reply.json() for reply in replies]
    assert len({body["incident_id"] for body in bodies}) == 1, "the replicas opened two incidents"
    assert sum(not body["deduplicated"] for body in bodies) == 1
    total = len(replies)
    workflow_id = bodies[0]["workflow_id"]
    handle = client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)

    async def counted() -> bool:
        status = await handle.query(IncidentWorkflow.status)
        assert status.occurrences <= total, f"{status.occurrences} counted for {total} reports"
        return status.occurrences == total

    async def visible() -> bool:
        description = await handle.describe()
        return description.typed_search_attributes.get(names.SA_OCCURRENCES) == total

    try:
        await eventually(counted, timeout_s=60)
        await eventually(visible, timeout_s=60)
    finally:
        await client.get_workflow_handle(workflow_id).terminate("scale-out test done")
