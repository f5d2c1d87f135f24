"""`remedy demo`: a sample service with a real bug, a real crash, a real incident.

It builds a small git repository (three commits by three people; the second one introduces
the bug), pushes it to a bare "origin", runs the service so Python prints a genuine
traceback, reports it through the intake and follows the incident until it settles. When no
intake is running it starts the embedded stack itself (and stops it afterwards, unless
--keep).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client, WorkflowUpdateFailedError

from remedy import names
from remedy.config import RemedyConfig, secret
from remedy.models import TERMINAL_PHASES, IncidentStatus, Phase
from remedy.render.terminal import render_status
from remedy.temporal import TemporalUnreachable
from starter.cli_approval import (
    APPROVER_TOKEN_ENV,
    ApprovalRefused,
    check_cli_approver,
    hash_credential,
)
from starter.client import IntakeClient, IntakeRejected, intake_url
from starter.dev import DevError, DevStack, default_demo_token
from starter.incidents import decide, incident_status
from starter.index_progress import IndexProgress, index_heartbeat
from starter.temporal_client import cli_message, with_client

DEMO_SERVICE = "demo"

_CART_V1 = '''"""Cart arithmetic for the demo shop."""


def subtotal(items):
    return sum(item["price"] * item["qty"] for item in items)
'''

_CART_V2 = '''"""Cart arithmetic for the demo shop."""

DISCOUNTS = {"WELCOME10": 0.10, "VIP20": 0.20}


def subtotal(items):
    return sum(item["price"] * item["qty"] for item in items)


def apply_discount(amount, code):
    rate = DISCOUNTS[code]
    return round(amount * (1 - rate), 2)


def total(items, code=None):
    amount = subtotal(items)
    if code is not None:
        amount = apply_discount(amount, code)
    return amount
'''

_APP = '''"""The demo shop's checkout entry point."""

import sys

from shop.cart import total


def checkout(order):
    return total(order["items"], order.get("code"))


if __name__ == "__main__":
    code = sys.argv[1] if len(sys.argv) > 1 else None
    order = {"items": [{"price": 12.5, "qty": 2}], "code": code}
    print(checkout(order))
'''

_TEST = """from shop.cart import total


def test_total_without_code():
    assert total([{"price": 10, "qty": 3}]) == 30


def test_total_with_known_code():
    assert total([{"price": 10, "qty": 1}], "WELCOME10") == 9.0
"""


def _git(cwd: Path, *args: str, author: tuple[str, str] | None = None, date: str = "") -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if author:
        env.update(
            GIT_AUTHOR_NAME=author[0],
            GIT_AUTHOR_EMAIL=author[1],
            GIT_COMMITTER_NAME=author[0],
            GIT_COMMITTER_EMAIL=author[1],
        )
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def build_demo_repository(origin: Path) -> Path:
    """Create (once) the demo shop's bare origin and a working copy beside it; return the copy."""
    work = origin.parent / f"{origin.name.removesuffix('.git')}-work"
    if (work / ".git").exists() and origin.exists():
        return work
    origin.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work.mkdir(exist_ok=True)
    _git(work, "init", "-q", "-b", "main")
    (work / "shop").mkdir(exist_ok=True)
    (work / "tests").mkdir(exist_ok=True)
    (work / "shop" / "__init__.py").write_text("")
    (work / "shop" / "cart.py").write_text(_CART_V1)
    (work / "shop" / "app.py").write_text(_APP)
    (work / "README.md").write_text("# demo shop\n")
    _git(work, "add", "-A")
    _git(
        work,
        "commit",
        "-q",
        "-m",
        "Add cart subtotal and checkout",
        author=("Alice Archer", "alice@example.com"),
        date="2026-11-02T10:00:00Z",
    )
    (work / "shop" / "cart.py").write_text(_CART_V2)
    (work / "tests" / "test_cart.py").write_text(_TEST)
    _git(work, "add", "-A")
    _git(
        work,
        "commit",
        "-q",
        "-m",
        "Support discount codes at checkout",
        author=("Bob Builder", "bob@example.com"),
        date="2026-11-18T15:30:00Z",
    )
    (work / "README.md").write_text("# demo shop\n\nRun `python -m shop.app CODE`.\n")
    _git(
        work,
        "commit",
        "-q",
        "-am",
        "Document the checkout command",
        author=("Carol Chen", "carol@example.com"),
        date="2026-11-19T09:00:00Z",
    )
    _git(work, "remote", "add", "origin", str(origin))
    _git(work, "push", "-q", "origin", "main")
    return work


def crash_demo_service(work: Path) -> str:
    """Run the shop with a discount code it does not know; return the real traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "shop.app", "SPRING24"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(work)},
    )
    if done.returncode == 0 or "Traceback" not in done.stderr:
        raise RuntimeError(f"the demo service did not crash as expected: {done.stderr!r}")
    return done.stderr


def _intake_up(config: RemedyConfig) -> bool:
    try:
        return httpx.get(f"{intake_url(config)}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


async def follow_incident(
    client: Client, incident_id: str, *, stop_at_approval: bool, timeout_s: float
) -> IncidentStatus:
    """Poll the status query until the incident is terminal (or awaits approval, if asked),
    saying each phase as it starts and, while indexing, the index's stages and bar."""
    deadline = time.monotonic() + timeout_s
    phase: Phase | None = None
    with IndexProgress() as shown:
        while True:
            status = await incident_status(client, incident_id)
            if status.phase != phase:
                phase = status.phase
                shown.say(f"incident {phase.value}")
            if status.phase in TERMINAL_PHASES:
                return status
            if stop_at_approval and status.phase == Phase.AWAITING_APPROVAL:
                return status
            if time.monotonic() > deadline:
                return status
            if status.phase == Phase.INDEXING:
                shown.details(await index_heartbeat(client, status.workflow_id))
            await asyncio.sleep(0.3)


def _demo_approver_credential(config: RemedyConfig, approver: str) -> str | None:
    """`--approve-as` goes through the CLI's credential check like `remedy approve`. Unless
    remedy.toml holds a hash for this approver (then REMEDY_APPROVER_TOKEN must match it), the
    demo gives itself a one-off credential for its own sample service, for this run only."""
    service = config.service(DEMO_SERVICE)
    if approver in service.cli_approvers:
        return secret(APPROVER_TOKEN_ENV)
    token = secrets.token_urlsafe(24)
    service.cli_approvers[approver] = hash_credential(token)
    return token


async def _drive(
    client: Client,
    config: RemedyConfig,
    incident_id: str,
    *,
    approve_as: str | None,
    until_done: bool,
    timeout_s: float,
) -> IncidentStatus:
    status = await follow_incident(
        client, incident_id, stop_at_approval=not until_done, timeout_s=timeout_s
    )
    if status.phase == Phase.AWAITING_APPROVAL and approve_as:
        _progress(render_status(status))
        token = _demo_approver_credential(config, approve_as)
        result = await decide(
            client,
            incident_id,
            "approve",
            approve_as,
            None,
            authorize=lambda status: check_cli_approver(config, status.service, approve_as, token),
        )
        _progress(f"approved by {result.decision.approver} through the CLI")
        status = await follow_incident(
            client, incident_id, stop_at_approval=False, timeout_s=timeout_s
        )
    if status.phase in TERMINAL_PHASES:
        await _settle(client, status.workflow_id)
    return status


_WATCHES = frozenset({names.ACTIVITY_WATCH_BRANCH, names.ACTIVITY_WATCH_PULL_REQUEST})


async def _settle(client: Client, workflow_id: str, timeout_s: float = 10.0) -> None:
    """Let the outcome's last side effects (the Slack edit, the past-incident record) finish
    before a stack this demo started is stopped under them."""
    deadline = time.monotonic() + timeout_s
    handle = client.get_workflow_handle(workflow_id)
    while time.monotonic() < deadline:
        description = await handle.describe()
        pending = description.raw_description.pending_activities
        # The forge's watch runs for as long as the change stays open.
        if all(activity.activity_type.name in _WATCHES for activity in pending):
            return
        await asyncio.sleep(0.2)


def _after_the_push(config: RemedyConfig, work: Path, status: IncidentStatus) -> str:
    """What a person does next with the pushed branch: merge it, deploy the merge; the
    incident follows both (docs/slack-and-github.md)."""
    assert status.proposal is not None
    limits = config.limits
    return (
        "next: the incident follows the branch; merge it and say the merge runs:\n"
        f"  git -C {work} pull -q --ff-only origin {status.proposal.branch} && "
        f"git -C {work} push -q origin HEAD:main\n"
        f'  remedy deployed {DEMO_SERVICE} "$(git -C {work} rev-parse HEAD)"\n'
        f"it is seen merged within [limits] change_poll_s ({limits.change_poll_s} s) and holds "
        f"after hold_window_s ({limits.hold_window_s} s) without the error: "
        f"remedy incidents show {status.incident_id}"
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_demo(
    config: RemedyConfig,
    config_path: Path,
    *,
    keep: bool = False,
    as_json: bool = False,
    approve_as: str | None = None,
    until_done: bool = False,
    timeout_s: float = 180.0,
) -> int:
    if DEMO_SERVICE not in config.services:
        print(
            f"error: {config.source}: no [services.{DEMO_SERVICE}]; the demo needs it "
            "(see remedy.toml in the repository)",
            file=sys.stderr,
        )
        return 2
    service = config.service(DEMO_SERVICE)
    location = config.repo_location(DEMO_SERVICE)
    if "://" in location:
        print(
            f"error: services.{DEMO_SERVICE}.repo must be a local path for the demo, "
            f"not {location!r}",
            file=sys.stderr,
        )
        return 2
    work = build_demo_repository(Path(location))
    traceback_text = crash_demo_service(work)
    release = _git(work, "rev-parse", "HEAD")

    default_demo_token(config)
    stack: DevStack | None = None
    if not _intake_up(config):
        env_name = service.intake_token_env or ""
        if env_name and not secret(env_name):
            # A throw-away token for the stack this demo starts and talks to itself.
            os.environ[env_name] = secrets.token_urlsafe(24)
        stack = DevStack(config, config_path)
        _progress("starting Temporal, a worker and the intake ...")
        try:
            stack.start()
        except DevError as exc:
            print(f"error: {exc}", file=sys.stderr)
            stack.stop()
            return 1
    try:
        event = {
            "service": DEMO_SERVICE,
            "environment": "demo",
            "release": release,
            "error": {"type": "KeyError", "message": "'SPRING24'"},
            "traceback": traceback_text,
        }
        try:
            reply = IntakeClient.from_config(config).report(event)
        except IntakeRejected as exc:
            hint = ""
            if stack is None and "answered 401" in str(exc):
                hint = (
                    f" (the running intake holds another {service.intake_token_env}: "
                    "give `remedy dev` and `remedy demo` the same one, or unset it in both)"
                )
            print(f"error: {exc}{hint}", file=sys.stderr)
            return 1
        _progress(f"reported: {json.dumps(reply)}")
        try:
            status = asyncio.run(
                with_client(
                    config,
                    lambda client: _drive(
                        client,
                        config,
                        reply["incident_id"],
                        approve_as=approve_as,
                        until_done=until_done,
                        timeout_s=timeout_s,
                    ),
                )
            )
        except TemporalUnreachable as exc:
            print(f"error: {cli_message(exc)}", file=sys.stderr)
            return 1
        except ApprovalRefused as exc:
            print(f"error: approval refused: {exc}", file=sys.stderr)
            return 1
        except WorkflowUpdateFailedError as exc:
            print(
                f"error: approval refused: {getattr(exc.cause, 'message', exc.cause)}",
                file=sys.stderr,
            )
            return 1
        print(status.model_dump_json(indent=2) if as_json else render_status(status))
        if status.phase == Phase.AWAITING_APPROVAL and status.approval:
            approvers = " | ".join(status.approval.approvers) or "<approver>"
            _progress(
                f"next: remedy approve {status.incident_id} --as {approvers} "
                f"(with {APPROVER_TOKEN_ENV} set: docs/approvals.md)"
            )
        if status.phase == Phase.PR_OPENED and status.proposal and not status.proposal.pr_url:
            _progress(_after_the_push(config, work, status))
        if keep and stack is not None:
            print(stack.banner(), flush=True)
            try:
                while True:
                    stack.check_alive()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0 if status.phase != Phase.FAILED else 1
    finally:
        if stack is not None:
            stack.stop()
