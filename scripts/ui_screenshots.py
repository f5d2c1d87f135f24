"""Screenshots of the Temporal UI as an SRE sees Remedy's incidents (docs/temporal-ui.md).

Not a test: a documented run that regenerates docs/images/temporal-ui-*.png. It starts an
isolated `remedy dev` (a scratch remedy.toml whose `home` is a temporary directory, free
ports, [codec] enabled so the UI decodes through `remedy codec-server`), runs `remedy demo
--approve-as demo-reviewer` (the CLI approval path, docs/approvals.md), reports four more
errors through the intake, waits until each incident reaches its phase, and then drives
headless Chromium through the UI: the workflow list filtered to IncidentWorkflow with the
RemedyPhase/RemedyService/RemedySeverity/RemedyOccurrences columns, saved as a view through
the UI's own "Save as New" (temporal-ui-list.png); the approved incident's timeline
(temporal-ui-incident.png) and its User Metadata tab (temporal-ui-metadata.png); the failed
incident's page (temporal-ui-failed.png).

The incidents, one per outcome (the model is the repository's loopback Ollama double,
tests/fakes/llm_double.py, so the run needs no model):
  demo      KeyError 'SPRING24'     approved through the CLI -> pr_opened (a pushed branch)
  checkout  KeyError 'VIP30'        -> awaiting_approval
  checkout  ZeroDivisionError       the model proposes no edit -> triaged
  demo      TimeoutError            a release the repository lacks -> failed
  checkout  SlowQuery (DB2001, low) below the severity bar -> notified

Needs Chromium and the Playwright driver (never its browser download):

    apt-get install -y chromium                 # provides /usr/bin/chromium
    .venv/bin/pip install playwright==1.65.2    # not a dependency of remedy
    .venv/bin/python scripts/ui_screenshots.py [--out docs/images] [--chromium PATH]

Exits non-zero, naming what was missing, when an incident misses its phase or a page never
shows the incidents; everything it started is stopped either way.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from temporalio.client import Client  # noqa: E402

from remedy import names  # noqa: E402
from remedy.config import RemedyConfig, load_config  # noqa: E402
from starter.client import IntakeClient  # noqa: E402
from starter.demo import DEMO_SERVICE, build_demo_repository  # noqa: E402
from starter.dev import DEMO_LOCAL_TOKEN, DEMO_TOKEN_ENV  # noqa: E402
from starter.incidents import incident_status  # noqa: E402
from starter.temporal_client import with_client  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.fakes.llm_double import DEMO_DIAGNOSIS, DEMO_REGRESSION_TEST  # noqa: E402
from tests.fakes.ollama_server import OllamaReply, OllamaServer, answer  # noqa: E402

LIST_COLUMNS = ["RemedyPhase", "RemedyService", "RemedySeverity", "RemedyOccurrences"]
INCIDENT_QUERY = 'WorkflowType="IncidentWorkflow"'
VIEW_NAME = "Remedy incidents"
CHECKOUT_TOKEN_ENV = "REMEDY_SCREENSHOT_CHECKOUT_TOKEN"
PHASE_TIMEOUT_S = 240.0
PAGE_TIMEOUT_MS = 45_000

# The model has nothing safe to propose for this error type: the incident is triaged.
NO_FIX_ERROR = "ZeroDivisionError"
NO_FIX_DIAGNOSIS = {
    "summary": "an empty cart reaches the average-price report",
    "root_cause": "the caller divides by subtotal() without checking for an empty cart",
    "confidence": 0.4,
    "evidence": [{"path": "shop/cart.py", "line": 7}],
    "edits": [],
}


class ScreenshotError(RuntimeError):
    """Something the screenshots depend on did not happen; the message says what."""


@dataclass
class Incident:
    incident_id: str
    workflow_id: str
    expected_phase: str


def _respond(body: dict[str, Any]) -> OllamaReply:
    schema = body.get("format")
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    if "root_cause" not in properties:
        return answer(DEMO_REGRESSION_TEST)
    prompt = json.dumps(body.get("messages", []))
    return answer(NO_FIX_DIAGNOSIS if NO_FIX_ERROR in prompt else DEMO_DIAGNOSIS)


def write_config(folder: Path, ollama_url: str) -> Path:
    ui_port = free_port()
    path = folder / "remedy.toml"
    path.write_text(
        f"""home = "state"
[temporal]
address = "127.0.0.1:{free_port()}"
dev_ui_port = {ui_port}
ui_url = "http://127.0.0.1:{ui_port}"
[intake]
port = {free_port()}
[codec]
enabled = true
server_port = {free_port()}
[llm]
mode = "local"
ollama_host = "{ollama_url}"
[services.demo]
repo = "demo/shop.git"
intake_token_env = "{DEMO_TOKEN_ENV}"
approvers = ["demo-reviewer"]
allowed_paths = ["shop/**", "tests/**"]
test_command = "python -m pytest -q -p no:cacheprovider"
[services.checkout]
repo = "demo/shop.git"
intake_token_env = "{CHECKOUT_TOKEN_ENV}"
approvers = ["demo-reviewer"]
allowed_paths = ["shop/**", "tests/**"]
test_command = "python -m pytest -q -p no:cacheprovider"
"""
    )
    return path


def scratch_environment() -> None:
    """This process and its children: no REMEDY_* from the caller, fresh tokens and key."""
    for key in [key for key in os.environ if key.startswith("REMEDY_")]:
        del os.environ[key]
    os.environ[DEMO_TOKEN_ENV] = DEMO_LOCAL_TOKEN
    os.environ[CHECKOUT_TOKEN_ENV] = secrets.token_urlsafe(24)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    os.environ["REMEDY_CODEC_KEYS"] = f"screenshots:{key}"
    os.environ["PYTHONPATH"] = str(ROOT)


@contextlib.contextmanager
def remedy_dev(config_path: Path, config: RemedyConfig) -> Iterator[None]:
    """`remedy dev` in its own session; stopped with SIGTERM (then killed) on the way out."""
    log = (config_path.parent / "remedy-dev.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "starter.cli", "dev", "--config", str(config_path)],
        cwd=config_path.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        ready = f"http://{config.intake.host}:{config.intake.port}/readyz"
        while not _answers(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ScreenshotError(f"remedy dev did not start:\n{_tail(log.name)}")
            time.sleep(0.5)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: str, chars: int = 3000) -> str:
    return Path(path).read_text(errors="replace")[-chars:]


def run_cli_demo(config_path: Path) -> Incident:
    demo = ["demo", "--approve-as", "demo-reviewer", "--json", "--config", str(config_path)]
    done = subprocess.run(
        [sys.executable, "-m", "starter.cli", *demo],
        cwd=config_path.parent,
        capture_output=True,
        text=True,
        timeout=PHASE_TIMEOUT_S + 60,
    )
    if done.returncode != 0:
        raise ScreenshotError(f"remedy demo exited {done.returncode}:\n{done.stderr[-3000:]}")
    status = json.loads(done.stdout)
    return Incident(status["incident_id"], status["workflow_id"], "pr_opened")


def crash_traceback(work: Path, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shop.app", code],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(work)},
    )
    if "Traceback" not in done.stderr:
        raise ScreenshotError(f"the demo shop did not crash on {code!r}: {done.stderr!r}")
    return done.stderr


def report_more(config: RemedyConfig) -> list[Incident]:
    """Four more incidents, one per remaining outcome, reported through the intake."""
    work = build_demo_repository(Path(config.repo_location(DEMO_SERVICE)))
    release = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
    ).stdout.strip()
    cart: dict[str, Any] = {"frames": [{"file": "shop/cart.py", "line": 7, "function": "subtotal"}]}
    app: dict[str, Any] = {"frames": [{"file": "shop/app.py", "line": 9, "function": "checkout"}]}
    crash = {"traceback": crash_traceback(work, "VIP30")}
    # (phase expected, service, release, error type, message, code, where)
    rows = [
        ("awaiting_approval", "checkout", release, "KeyError", "'VIP30'", "PAY4001", crash),
        ("triaged", "checkout", release, NO_FIX_ERROR, "division by zero", "DB5001", cart),
        ("failed", DEMO_SERVICE, "f" * 40, "TimeoutError", "gateway: no answer", None, app),
        ("notified", "checkout", release, "SlowQuery", "cart lookup 2.1 s", "DB2001", cart),
    ]
    intake = IntakeClient.from_config(config)
    incidents = []
    for phase, service, sha, kind, message, code, where in rows:
        error = {"type": kind, "message": message, "code": code}
        event: dict[str, Any] = {"service": service, "release": sha, "error": error, **where}
        reply = intake.report({**event, "environment": "prod"})
        incidents.append(Incident(reply["incident_id"], reply["workflow_id"], phase))
    return incidents


async def wait_for_phases(client: Client, incidents: list[Incident]) -> dict[str, str]:
    """Each incident's static summary, once its status and search attributes show its phase."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    summaries: dict[str, str] = {}
    for incident in incidents:
        while True:
            phase = (await incident_status(client, incident.incident_id)).phase.value
            description = await client.get_workflow_handle(incident.workflow_id).describe()
            indexed = description.typed_search_attributes.get(names.SA_PHASE)
            if phase == incident.expected_phase and indexed == phase:
                break
            if time.monotonic() > deadline:
                raise ScreenshotError(
                    f"{incident.incident_id}: phase {phase!r} (indexed {indexed!r}), "
                    f"expected {incident.expected_phase!r} within {PHASE_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(1.0)
        summary = await description.static_summary()
        if not summary:
            raise ScreenshotError(f"{incident.workflow_id} has no static summary for the UI")
        summaries[incident.workflow_id] = summary
    return summaries


def ui_columns(namespace: str) -> dict[str, Any]:
    """The list's columns as the UI keeps them in localStorage (what Configure Columns saves):
    status and id pinned, then Remedy's search attributes and the start time."""
    columns = [
        {"label": "Status", "pinned": True},
        {"label": "Workflow ID", "pinned": True},
        *({"label": label, "pinned": False} for label in LIST_COLUMNS),
        {"label": "Start", "pinned": False},
    ]
    return {"namespace-workflow-table-columns": {namespace: columns}}


def screenshot(
    config: RemedyConfig,
    incidents: dict[str, Incident],
    summaries: dict[str, str],
    out: Path,
    chromium: str,
) -> list[Path]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    namespace = config.temporal.namespace
    base = names.ui_namespace_url(config.temporal.ui_url, namespace)
    storage = json.dumps({key: json.dumps(value) for key, value in ui_columns(namespace).items()})
    approved, failed = incidents["pr_opened"], incidents["failed"]
    shots = [out / f"temporal-ui-{name}.png" for name in ("list", "incident", "metadata", "failed")]
    failure_shot = Path(tempfile.gettempdir()) / "remedy-ui-failure.png"
    with tempfile.TemporaryDirectory(prefix="remedy-chromium-") as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            viewport={"width": 1680, "height": 900},
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        # Once per tab, before the UI's own scripts: later changes made in the UI stay.
        browser.add_init_script(
            "if (!sessionStorage.getItem('remedy-seeded')) {"
            f" for (const [k, v] of Object.entries({storage})) localStorage.setItem(k, v);"
            " sessionStorage.setItem('remedy-seeded', '1'); }"
        )
        page = browser.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            page.goto(f"{base}/workflows?query={quote(INCIDENT_QUERY)}")
            for label in LIST_COLUMNS:
                _must_show(page.get_by_role("columnheader", name=label), f"the {label} column")
            for incident in incidents.values():
                _must_show(page.get_by_text(incident.workflow_id, exact=True), incident.workflow_id)
            # Save the query as a view, as an SRE does once.
            page.get_by_role("button", name="Save as New").click()
            page.get_by_placeholder("Name of view").filter(visible=True).fill(VIEW_NAME)
            page.get_by_role("button", name="Save", exact=True).filter(visible=True).click()
            _must_show(page.get_by_text(VIEW_NAME).first, f"the saved view {VIEW_NAME!r}")
            _settle(page)
            page.screenshot(path=str(shots[0]))

            page.set_viewport_size({"width": 1600, "height": 1500})
            page.goto(f"{base}/workflows/{approved.workflow_id}")
            _must_show(page.get_by_role("heading", name=approved.workflow_id), "the incident")
            _settle(page)
            page.screenshot(path=str(shots[1]))
            page.set_viewport_size({"width": 1600, "height": 900})
            page.get_by_role("tab", name="User Metadata").click()
            summary = summaries[approved.workflow_id]
            _must_show_in_a_frame(page, _as_rendered(summary), f"the summary {summary!r}")
            _settle(page)
            page.screenshot(path=str(shots[2]))

            page.goto(f"{base}/workflows/{failed.workflow_id}")
            _must_show(page.get_by_role("heading", name=failed.workflow_id), "the failed incident")
            _settle(page)
            page.screenshot(path=str(shots[3]))
        except (PlaywrightError, ScreenshotError) as exc:
            with contextlib.suppress(PlaywrightError):
                page.screenshot(path=str(failure_shot))
            raise ScreenshotError(
                f"{page.url}: {exc} (the page as it was: {failure_shot})"
            ) from None
        finally:
            browser.close()
    return shots


def _as_rendered(text: str) -> re.Pattern[str]:
    """`text` as the UI's Markdown shows it: straight quotes may turn typographic."""
    quotes = {"'": "['\u2018\u2019]", '"': '["\u201c\u201d]'}
    return re.compile("".join(quotes.get(char, re.escape(char)) for char in text))


def _must_show(locator: Any, what: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(state="visible")
    except PlaywrightTimeout:
        raise ScreenshotError(
            f"never showed {what} within {PAGE_TIMEOUT_MS / 1000:.0f} s"
        ) from None


def _must_show_in_a_frame(page: Any, text: re.Pattern[str], what: str) -> None:
    """The UI renders Markdown (summary, details) in sandboxed iframes: look in every frame."""
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while not any(frame.get_by_text(text).count() for frame in page.frames):
        if time.monotonic() > deadline:
            raise ScreenshotError(f"never showed {what} within {PAGE_TIMEOUT_MS / 1000:.0f} s")
        time.sleep(0.5)


def _settle(page: Any) -> None:
    """Requests done (codec decodes included) and the pointer off any tooltip."""
    page.wait_for_load_state("networkidle")
    page.mouse.move(0, 0)
    time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        print(
            f"error: no Chromium at {args.chromium} (apt-get install -y chromium)", file=sys.stderr
        )
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print(
            "error: playwright is not installed (pip install playwright==1.65.2)", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    scratch_environment()
    with tempfile.TemporaryDirectory(prefix="remedy-screenshots-") as scratch:
        try:
            with OllamaServer(responder=_respond) as ollama:
                config_path = write_config(Path(scratch), ollama.url)
                config = load_config(config_path)
                with remedy_dev(config_path, config):
                    print(f"remedy dev is up; UI {config.temporal.ui_url}", file=sys.stderr)
                    incidents = [run_cli_demo(config_path), *report_more(config)]
                    summaries = asyncio.run(
                        with_client(config, lambda client: wait_for_phases(client, incidents))
                    )
                    by_phase = {incident.expected_phase: incident for incident in incidents}
                    shots = screenshot(config, by_phase, summaries, args.out, args.chromium)
        except (ScreenshotError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for shot in shots:
        print(f"wrote {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
