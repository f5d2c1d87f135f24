"""End to end: POST an error -> the Slack message awaiting approval, over N distinct incidents.

Everything is the product except the outside world: the Temporal dev server, the worker with
the worker's own activities (worker.build_worker), the intake app (starter.app, in-process over
httpx's ASGI transport), real git repositories, the code index (MiniLM + embedded Qdrant), the
sandboxed test runs. The model is an instant LLM double (a loopback Ollama answering every
chat at once with the fix of the bug it is asked about) and Slack a loopback Slack spoken to by
the real slack_sdk, so a real message with Approve / Reject buttons is posted.

A generated service has one bug per handler (KeyError, ZeroDivisionError, IndexError,
AttributeError, TypeError in turn), each crashed for a real traceback, so every incident has
its own fingerprint. The index is warmed once at the service's commit, one incident runs
unmeasured (the first after start imports and connects what later ones reuse), then N
incidents run one after the other, each timed from the POST to the moment the loopback Slack
holds its message with an Approve button. Printed: p50/p95, the share of that time spent
inside the model's responses (server side of the double) and outside them, the sandboxed
test runs each verification started or reused, and the phases from each incident's status
history.

    .venv/bin/python bench/e2e.py [--incidents 20] [--no-tests]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiohttp import web
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.git import GitActivities
from activities.index import IndexActivities
from remedy import names
from remedy.artifacts import ArtifactStore
from remedy.config import LLMConfig, RemedyConfig, ServiceConfig, SlackConfig
from remedy.models import IncidentStatus, IndexRequest, IndexResult, Phase, SyncRequest, Worktree
from remedy.render.slack import APPROVE_ACTION_ID
from remedy.temporal import data_converter
from tests.fakes.ollama_server import OllamaReply, OllamaServer, answer
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, SlackServer
from tests.intake_harness import running_intake
from workflows.incident import IncidentWorkflow

TOKEN = "bench-e2e-token"
SERVICE = "shop"
CHANNEL = "shop-incidents"
APPROVER = "U0REVIEWER"
FILLER_MODULES = 120
INCIDENT_TIMEOUT_S = 120.0

# (error type, buggy line, fixed line, payload that crashes, payload that works); {f} is the
# handler's own field, so every bug reads a different key.
KINDS = [
    ("KeyError", 'value = payload["{f}"]', 'value = payload.get("{f}", 0)', "{{}}",
     '{{"{f}": 2}}'),
    ("ZeroDivisionError", 'value = payload["amount"] / payload["{f}"]',
     'value = payload["amount"] / (payload["{f}"] or 1)', '{{"amount": 6, "{f}": 0}}',
     '{{"amount": 6, "{f}": 3}}'),
    ("IndexError", 'value = payload["{f}"][0]', 'value = (payload["{f}"] or [0])[0]',
     '{{"{f}": []}}', '{{"{f}": [2]}}'),
    ("AttributeError", 'value = payload.get("{f}").upper()',
     'value = (payload.get("{f}") or "").upper()', "{{}}", '{{"{f}": "a"}}'),
    ("TypeError", 'value = payload["amount"] + payload["{f}"]',
     'value = payload["amount"] + (payload["{f}"] or 0)', '{{"amount": 1, "{f}": None}}',
     '{{"amount": 1, "{f}": 2}}'),
]  # fmt: skip
TOPICS = ["orders", "refunds", "invoices", "coupons", "shipments", "returns", "payouts",
          "taxes", "carts", "reviews", "loyalty", "gift_cards", "stock", "suppliers",
          "wishlists", "subscriptions", "bundles", "prices", "receipts", "vouchers",
          "disputes"]  # fmt: skip


@dataclass(frozen=True)
class Bug:
    number: int
    error_type: str
    buggy: str
    fixed: str
    trigger: str
    happy: str

    @property
    def module(self) -> str:
        return f"shop/handlers/h{self.number:02d}.py"

    @property
    def function(self) -> str:
        return f"handle_{TOPICS[self.number]}"

    def source(self) -> str:
        topic = TOPICS[self.number]
        return (
            f'"""Events about {topic.replace("_", " ")}."""\n\n'
            f"from shop.util.m{self.number % FILLER_MODULES:02d} import clamp\n\n\n"
            f"def normalise(payload):\n"
            f'    """Drop the keys no {topic} handler reads."""\n'
            f'    return {{k: v for k, v in payload.items() if not k.startswith("_")}}\n\n\n'
            f"def {self.function}(payload):\n"
            f'    """Process one {topic.replace("_", " ")} event."""\n'
            f"    payload = normalise(payload)\n"
            f"    {self.buggy}\n"
            f'    return {{"handled": {self.number}, "value": clamp(value)}}\n\n\n'
            f"def summarise(results):\n"
            f'    """How many {topic} events were handled."""\n'
            f"    return sum(1 for result in results if result)\n"
        )

    @property
    def buggy_line(self) -> int:
        return self.source().splitlines().index(f"    {self.buggy}") + 1


def make_bugs(count: int) -> list[Bug]:
    bugs = []
    for number in range(count):
        error_type, buggy, fixed, trigger, happy = KINDS[number % len(KINDS)]
        field = f"{TOPICS[number].rstrip('s')}_id"
        bugs.append(
            Bug(number, error_type, *(t.format(f=field) for t in (buggy, fixed, trigger, happy)))
        )
    return bugs


def filler(number: int) -> str:
    """Ordinary service code the index holds besides the handlers."""
    return (
        f'"""Shared helpers, part {number}."""\n\n\n'
        f"def clamp(value, low=-(10**6), high=10**6):\n"
        f'    """Keep a computed value within the range reports can show."""\n'
        f"    if isinstance(value, str):\n        return value\n"
        f"    return max(low, min(high, value))\n\n\n"
        f"def percent(part, whole):\n"
        f'    """Share of `whole` that `part` is, in percent ({number})."""\n'
        f"    return 100.0 * part / whole if whole else 0.0\n\n\n"
        f"def chunked(items, size={number + 2}):\n"
        f'    """Split a list into batches of `size` for the downstream API."""\n'
        f"    return [items[i : i + size] for i in range(0, len(items), size)]\n"
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def build_service(root: Path, bugs: list[Bug], tests: bool) -> tuple[Path, Path]:
    """A bare origin and a work clone holding the service at one commit."""
    origin, work = root / "shop.git", root / "shop-work"
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True
    )
    files: dict[str, str] = {"shop/__init__.py": "", "shop/handlers/__init__.py": "",
                             "shop/util/__init__.py": ""}  # fmt: skip
    for number in range(FILLER_MODULES):
        files[f"shop/util/m{number:02d}.py"] = filler(number)
    for bug in bugs:
        files[bug.module] = bug.source()
    files["shop/dispatch.py"] = (
        '"""Route an event to the handler of its topic."""\n\n'
        + "".join(f"from shop.handlers.h{b.number:02d} import {b.function}\n" for b in bugs)
        + "\nHANDLERS = {\n"
        + "".join(f"    {b.number}: {b.function},\n" for b in bugs)
        + "}\n\n\ndef dispatch(topic, payload):\n"
        + '    """Hand the event to its handler."""\n'
        + "    return HANDLERS[topic](payload)\n"
    )
    if tests:
        files["tests/__init__.py"] = ""
        files["tests/test_handlers.py"] = "from shop.dispatch import dispatch\n" + "".join(
            f"\n\ndef test_{b.function}():\n"
            f"    assert dispatch({b.number}, {b.happy})['handled'] == {b.number}\n"
            for b in bugs
        )
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git(work, "init", "-q", "--initial-branch=main")
    git(work, "add", "--all")
    git(work, "-c", "user.name=Dana", "-c", "user.email=dana@example.com",
        "commit", "-q", "-m", "Handlers for every topic")  # fmt: skip
    git(work, "push", "-q", str(origin), "HEAD:refs/heads/main")
    return origin, work


def crash_all(work: Path, bugs: list[Bug]) -> list[dict[str, str]]:
    """Run every buggy handler once: (error type, message, traceback) as Python printed them."""
    script = (
        "import json, sys, traceback\nfrom shop.dispatch import dispatch\ncrashes = []\n"
        + "".join(
            f"try:\n    dispatch({b.number}, {b.trigger})\nexcept Exception as exc:\n"
            "    crashes.append({'type': type(exc).__name__, 'message': str(exc),"
            " 'traceback': traceback.format_exc()})\n"
            for b in bugs
        )
        + "json.dump(crashes, sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=work, check=True, capture_output=True, text=True
    )
    crashes: list[dict[str, str]] = json.loads(done.stdout)
    if [c["type"] for c in crashes] != [b.error_type for b in bugs]:
        raise SystemExit(f"the generated bugs did not all crash as planned: {crashes}")
    return crashes


# ---------------------------------------------------------------------------- the doubles


class InstantLLM(OllamaServer):
    """Answers each chat at once with the fix (or the regression test) of the bug it names,
    and keeps when each answer started and ended, as the server saw it."""

    def __init__(self, bugs: list[Bug]) -> None:
        super().__init__(responder=self._respond)
        self.bugs = {bug.number: bug for bug in bugs}
        self.spans: list[tuple[float, float]] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await super()._chat(request)
        finally:
            self.spans.append((started, time.perf_counter()))

    def _respond(self, body: dict[str, Any]) -> OllamaReply:
        # The handler's module path appears in the frames and edits, never in other code.
        named = re.search(r"shop/handlers/h(\d\d)\.py", json.dumps(body.get("messages", [])))
        bug = self.bugs.get(int(named.group(1))) if named else None
        if bug is None:
            return answer({"summary": "?", "root_cause": "?", "confidence": 0.1, "edits": []})
        schema = body.get("format")
        if isinstance(schema, dict) and "root_cause" in schema.get("properties", {}):
            return answer(
                {
                    "summary": f"{bug.function} crashes with {bug.error_type}",
                    "root_cause": f"{bug.module} line {bug.buggy_line} assumes the field is set",
                    "confidence": 0.9,
                    "evidence": [{"path": bug.module, "line": bug.buggy_line}],
                    "edits": [{"path": bug.module, "search": bug.buggy, "replace": bug.fixed}],
                }
            )
        return answer(
            {
                "path": f"tests/test_regression_{bug.number:02d}.py",
                "content": f"from shop.dispatch import dispatch\n\n\ndef test_{bug.function}"
                f"_survives_the_crash():\n    assert dispatch({bug.number}, {bug.trigger})"
                f"['handled'] == {bug.number}\n",
                "explanation": f"the payload that raised {bug.error_type}",
            }
        )


class TimedSlack(SlackServer):
    """Notes the moment each incident's message first carries the Approve button."""

    def __init__(self) -> None:
        super().__init__(channels={"C0SHOP": CHANNEL})
        self.buttons_at: dict[str, tuple[float, float]] = {}  # incident -> (perf, wall)

    def _chat_postMessage(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        body = super()._chat_postMessage(args, request)
        self._note_buttons()
        return body

    def _chat_update(self, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        body = super()._chat_update(args, request)
        self._note_buttons()
        return body

    def _note_buttons(self) -> None:
        for message in self.messages:
            incident = (message.get("metadata") or {}).get("event_payload", {}).get("incident_id")
            if not incident or incident in self.buttons_at:
                continue
            actions = [
                element.get("action_id")
                for block in message.get("blocks", [])
                if block.get("type") == "actions"
                for element in block.get("elements", [])
            ]
            if APPROVE_ACTION_ID in actions:
                self.buttons_at[incident] = (time.perf_counter(), time.time())


# ---------------------------------------------------------------------------- one incident


@dataclass
class Measured:
    incident_id: str
    seconds: float
    llm_seconds: float
    phases: dict[str, float]
    fingerprint: str
    ran: list[float]  # seconds of each sandboxed run verify_patch started
    reused: int  # runs it took from an identical earlier one instead


async def run_incident(
    http: httpx.AsyncClient,
    env: WorkflowEnvironment,
    slack: TimedSlack,
    llm: InstantLLM,
    crash: dict[str, str],
) -> Measured:
    event = {
        "service": SERVICE,
        "error": {"type": crash["type"], "message": crash["message"]},
        "traceback": crash["traceback"],
    }
    posted_wall, posted = time.time(), time.perf_counter()
    reply = await http.post("/v1/errors", json=event, headers={"Authorization": f"Bearer {TOKEN}"})
    if reply.status_code != 202:
        raise SystemExit(f"the intake refused the report: {reply.status_code} {reply.text}")
    incident_id, workflow_id = reply.json()["incident_id"], reply.json()["workflow_id"]
    handle = env.client.get_workflow_handle_for(IncidentWorkflow.run, workflow_id)
    checked = posted
    while incident_id not in slack.buttons_at:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        if now - checked > 0.5:  # a failed incident never gets buttons: say why
            checked = now
            status = await handle.query(IncidentWorkflow.status)
            if status.phase in {Phase.FAILED, Phase.TRIAGED, Phase.RATE_LIMITED}:
                raise SystemExit(f"{incident_id} ended {status.phase}: {status.reason}")
            if now - posted > INCIDENT_TIMEOUT_S:
                raise SystemExit(f"{incident_id} still {status.phase} after {INCIDENT_TIMEOUT_S}s")
    done, done_wall = slack.buttons_at[incident_id]
    status = await handle.query(IncidentWorkflow.status)
    runs = status.verification.runs if status.verification else []
    return Measured(
        incident_id=incident_id,
        seconds=done - posted,
        llm_seconds=sum(end - start for start, end in llm.spans if posted <= start <= done),
        phases=phase_seconds(status, posted_wall, done_wall),
        fingerprint=status.fingerprint,
        ran=[run.duration_s for run in runs if not (run.cached_from or run.ran_with)],
        reused=sum(1 for run in runs if run.cached_from),
    )


def phase_seconds(status: IncidentStatus, posted: float, done: float) -> dict[str, float]:
    """Seconds per phase from the status history (workflow time); before the first entry is
    the intake and the workflow's start, after `awaiting_approval` the Slack message."""
    history = status.history
    marks: list[tuple[str, float]] = [("POST -> workflow running", posted)]
    marks += [(change.phase.value, change.at.timestamp()) for change in history]
    marks.append(("end", done))
    seconds = {name: end - start for (name, start), (_, end) in itertools.pairwise(marks)}
    seconds["awaiting_approval -> Slack message"] = seconds.pop(Phase.AWAITING_APPROVAL.value)
    return seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------- the run


def warm_index(config: RemedyConfig) -> IndexResult:
    store = ArtifactStore(config.artifacts_dir)
    env = ActivityEnvironment()
    worktree: Worktree = env.run(
        GitActivities(config, store).sync_repo,
        SyncRequest(incident_id="bench-warm-index", service=SERVICE),
    )
    indexed: IndexResult = env.run(
        IndexActivities(config, store).index_repo, IndexRequest(worktree=worktree)
    )
    return indexed


async def main(count: int, tests: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="remedy-e2e-") as scratch:
        first, measured = await run(Path(scratch), count, tests)
    report(first, measured, tests)


async def run(home: Path, count: int, tests: bool) -> tuple[Measured, list[Measured]]:
    os.environ.update(
        {"REMEDY_E2E_TOKEN": TOKEN, "SLACK_BOT_TOKEN": BOT_TOKEN,
         "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    )  # fmt: skip
    bugs = make_bugs(count + 1)
    origin, work = build_service(home, bugs, tests)
    crashes = crash_all(work, bugs)
    config = RemedyConfig(
        home=str(home / "state"),
        services={
            SERVICE: ServiceConfig(
                repo=str(origin),
                intake_token_env="REMEDY_E2E_TOKEN",
                slack_channel=f"#{CHANNEL}",
                approvers=[APPROVER],
                allowed_paths=["shop/**"],
                test_command=f"{sys.executable} -m pytest -q -p no:cacheprovider"
                if tests
                else None,
                llm="local",
            )
        },
    )
    config.temporal.task_queue = "bench-e2e"

    with InstantLLM(bugs) as llm, TimedSlack() as slack:
        config.llm = LLMConfig(mode="local", ollama_host=llm.url)
        config.slack = SlackConfig(api_url=slack.api_url)
        started = time.perf_counter()
        indexed = await asyncio.to_thread(warm_index, config)
        print(
            f"index warmed: {indexed.files} files, {indexed.chunks} chunks in "
            f"{time.perf_counter() - started:.1f} s ({indexed.backend})",
            flush=True,
        )
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            search_attributes=names.SEARCH_ATTRIBUTES,
            data_converter=data_converter(),
            dev_server_log_level="error",
        )
        try:
            # The intake app and a worker with the worker's own activities, as the e2e tests run.
            async with running_intake(env.client, config, doubles={}) as http:
                first = await run_incident(http, env, slack, llm, crashes[0])
                measured = []
                for crash in crashes[1:]:
                    measured.append(await run_incident(http, env, slack, llm, crash))
                    print(f"  {measured[-1].incident_id}  {measured[-1].seconds:.2f} s", flush=True)
        finally:
            await env.shutdown()
    return first, measured


def report(first: Measured, measured: list[Measured], tests: bool) -> None:
    seconds = [m.seconds for m in measured]
    total = sum(seconds)
    llm = sum(m.llm_seconds for m in measured)
    fingerprints = len({m.fingerprint for m in measured})
    rows = [
        f"incidents                  {len(measured)} ({fingerprints} distinct fingerprints), "
        f"service tests {'on' if tests else 'off'}",
        f"POST -> Slack buttons      p50 {statistics.median(seconds):.2f} s   "
        f"p95 {percentile(seconds, 0.95):.2f} s   min {min(seconds):.2f} s   "
        f"max {max(seconds):.2f} s",
        f"first incident after start {first.seconds:.2f} s (not counted)",
        f"inside the LLM double      {100 * llm / total:.1f}% "
        f"({1000 * llm / len(measured):.0f} ms per incident); "
        f"outside it {100 * (total - llm) / total:.1f}%",
    ]
    ran = [seconds for m in measured for seconds in m.ran]
    if ran or any(m.reused for m in measured):
        rows.append(
            f"sandboxed runs per incident {len(ran) / len(measured):.1f} ran "
            f"(mean {statistics.mean(ran) if ran else 0:.2f} s each), "
            f"{sum(m.reused for m in measured) / len(measured):.1f} reused"
        )
    rows.append("where the time goes (mean per incident, share of the total):")
    by_phase: dict[str, list[float]] = defaultdict(list)
    for m in measured:
        for phase, spent in m.phases.items():
            by_phase[phase].append(spent)
    for phase, spans in sorted(by_phase.items(), key=lambda item: -sum(item[1])):
        rows.append(
            f"  {phase:<36} {sum(spans) / len(measured):6.3f} s  {100 * sum(spans) / total:5.1f}%"
        )
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=20, choices=range(1, len(TOPICS)))
    parser.add_argument(
        "--no-tests",
        dest="tests",
        action="store_false",
        help="the service has no test_command: verification is skipped",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.incidents, arguments.tests))
