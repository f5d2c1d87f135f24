"""`remedy stats`: the counting as a pure function of incident runs, its text, and the same
figures from a real dev server through the CLI and the intake's GET /metrics.

The Temporal tests run a test-only workflow under the type name IncidentWorkflow that sets
the search attributes and phases it is given: the stats read visibility, not the pipeline."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from remedy import names
from remedy.config import RemedyConfig
from remedy.models import Phase
from remedy.stats import (
    CONTINUED_AS_NEW,
    IncidentRun,
    IncidentStats,
    StatsRow,
    duration,
    incident_stats,
    render_stats,
)
from remedy.temporal import data_converter
from starter.app import create_app
from starter.cli import app as cli
from tests.conftest import free_port
from tests.workflow_harness import eventually

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def run(
    phase: Phase | str,
    *,
    workflow: str = "w1",
    run_id: str = "",
    service: str = "shop",
    error_type: str = "KeyError",
    started_s: float = 0,
    closed_s: float | None = None,
    status: str = "completed",
    first_run_id: str = "",
    pr_s: float | None = None,
    recurrence_of: str = "",
    continues: str = "",
) -> IncidentRun:
    """A run that started `started_s` after T0 (a PR `pr_s` after T0)."""
    return IncidentRun(
        workflow_id=workflow,
        run_id=run_id or f"{workflow}-{started_s}",
        service=service,
        error_type=error_type,
        phase=str(phase),
        fingerprint="0" * 16,
        started=T0 + timedelta(seconds=started_s),
        closed=None if closed_s is None else T0 + timedelta(seconds=closed_s),
        status="running" if closed_s is None and status == "completed" else status,
        first_run_id=first_run_id,
        pr_opened_at=None if pr_s is None else T0 + timedelta(seconds=pr_s),
        recurrence_of=recurrence_of,
        continues=continues,
    )


def counts(row: StatsRow) -> tuple[int, ...]:
    return (row.incidents, row.proposed, row.approved, row.merged, row.held, row.failed)


# ---------------------------------------------------------------------------- the counting


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.RECEIVED, (1, 0, 0, 0, 0, 0)),
        (Phase.TRIAGED, (1, 0, 0, 0, 0, 0)),
        (Phase.FAILED, (1, 0, 0, 0, 0, 0)),
        (Phase.AWAITING_APPROVAL, (1, 1, 0, 0, 0, 0)),
        (Phase.REJECTED, (1, 1, 0, 0, 0, 0)),
        (Phase.EXPIRED, (1, 1, 0, 0, 0, 0)),
        (Phase.OPENING_PR, (1, 1, 1, 0, 0, 0)),
        (Phase.PR_OPENED, (1, 1, 1, 0, 0, 0)),
        (Phase.FIX_ABANDONED, (1, 1, 1, 0, 0, 0)),
        (Phase.FIX_MERGED, (1, 1, 1, 1, 0, 0)),
        (Phase.FIX_DEPLOYED, (1, 1, 1, 1, 0, 0)),
        (Phase.FIX_HELD, (1, 1, 1, 1, 1, 0)),
        (Phase.FIX_FAILED, (1, 1, 1, 1, 0, 1)),
    ],
)
def test_each_stage_counts_the_incidents_that_reached_it_or_went_beyond(
    phase: Phase, expected: tuple[int, ...]
) -> None:
    stats = incident_stats([run(phase, closed_s=10)])
    assert [counts(row) for row in stats.rows] == [expected]
    assert counts(stats.total) == expected


def test_a_recurrence_run_is_no_incident() -> None:
    stats = incident_stats(
        [
            run(Phase.PR_OPENED, workflow="w1", closed_s=60, pr_s=30),
            run(Phase.PR_OPENED, workflow="w1", started_s=100, recurrence_of="shop-x-1"),
        ]
    )
    assert counts(stats.total) == (1, 1, 1, 0, 0, 0)


def test_a_follow_up_continued_as_new_is_one_incident_at_its_latest_run() -> None:
    """pr_opened -> (new run) fix_merged -> (new run) fix_held: one held incident, timed from
    the first run's start."""
    first = run(
        Phase.PR_OPENED, run_id="r1", first_run_id="r1", closed_s=3600, pr_s=600,
        status=CONTINUED_AS_NEW,
    )  # fmt: skip
    second = run(
        Phase.FIX_DEPLOYED, run_id="r2", first_run_id="r1", started_s=3600, closed_s=7200,
        pr_s=600, status=CONTINUED_AS_NEW, continues=first.incident_id,
    )  # fmt: skip
    third = run(
        Phase.FIX_HELD, run_id="r3", first_run_id="r1", started_s=7200, closed_s=86400,
        pr_s=600, continues=first.incident_id,
    )  # fmt: skip
    for order in ([first, second, third], [third, first, second]):
        stats = incident_stats(order)
        assert counts(stats.total) == (1, 1, 1, 1, 1, 0)
        assert stats.total.median_s_to_pr == 600
        assert stats.total.median_s_to_held == 86400


def test_a_fix_that_failed_ends_its_incident_and_the_next_run_is_a_new_one() -> None:
    failed = run(
        Phase.FIX_FAILED, run_id="r1", first_run_id="r1", closed_s=500, pr_s=100,
        status=CONTINUED_AS_NEW,
    )  # fmt: skip
    # Even with a memo carried over from the run before, the reopened run is an incident.
    reopened = run(
        Phase.AWAITING_APPROVAL, run_id="r2", first_run_id="r1", started_s=500,
        continues=failed.incident_id,
    )  # fmt: skip
    stats = incident_stats([reopened, failed])
    assert counts(stats.total) == (2, 2, 1, 1, 0, 1)
    assert stats.total.median_s_to_pr == 100


def test_a_pr_opened_before_the_incident_began_is_an_earlier_incidents() -> None:
    """Search attributes carry over into a run continued as new: a reopened incident may
    still hold the failed one's RemedyPrOpenedAt, from before its own first report."""
    failed = run(
        Phase.FIX_FAILED, run_id="r1", first_run_id="r1", closed_s=500, pr_s=100,
        status=CONTINUED_AS_NEW,
    )  # fmt: skip
    reopened = run(Phase.TRIAGED, run_id="r2", first_run_id="r1", started_s=500, pr_s=100)
    stats = incident_stats([failed, reopened])
    assert stats.total.incidents == 2 and stats.total.median_s_to_pr == 100


def test_a_continued_run_listed_without_its_earlier_runs_still_counts_once() -> None:
    """A run whose predecessors are not listed: its memo joins it to a listed incident of
    that id, or it stands for the incident alone."""
    alone = run(Phase.FIX_MERGED, workflow="w2", started_s=50, continues="shop-gone-1")
    stats = incident_stats([alone])
    assert counts(stats.total) == (1, 1, 1, 1, 0, 0)


def test_runs_of_separate_incidents_of_one_workflow_id_stay_apart() -> None:
    """A new incident of the same fingerprint after the last one closed (its own first run)."""
    stats = incident_stats(
        [
            run(Phase.TRIAGED, run_id="r1", first_run_id="r1", closed_s=10),
            run(Phase.PR_OPENED, run_id="r2", first_run_id="r2", started_s=20, pr_s=80),
        ]
    )
    assert counts(stats.total) == (2, 1, 1, 0, 0, 0)
    assert stats.total.median_s_to_pr == 60


def test_rows_per_service_and_error_type_and_medians() -> None:
    runs = [
        run(Phase.PR_OPENED, workflow="a", pr_s=100, closed_s=200),
        run(Phase.PR_OPENED, workflow="b", pr_s=300, closed_s=400),
        run(Phase.FIX_HELD, workflow="c", pr_s=50, closed_s=1000),
        run(Phase.REJECTED, workflow="d", error_type="ValueError", closed_s=5),
        run(Phase.RECEIVED, workflow="e", service="billing"),
    ]
    stats = incident_stats(runs)
    assert [(row.service, row.error_type) for row in stats.rows] == [
        ("billing", "KeyError"),
        ("shop", "KeyError"),
        ("shop", "ValueError"),
    ]
    shop = stats.rows[1]
    assert counts(shop) == (3, 3, 3, 1, 1, 0)
    assert shop.median_s_to_pr == 100  # of 100, 300, 50
    assert shop.median_s_to_held == 1000
    assert stats.rows[2].median_s_to_pr is None
    assert counts(stats.total) == (5, 4, 3, 1, 1, 0)
    even = incident_stats(runs[:2])
    assert even.total.median_s_to_pr == 200


def test_the_json_document_is_stable() -> None:
    stats = incident_stats([run(Phase.FIX_HELD, pr_s=60, closed_s=120)])
    document = stats.model_dump(mode="json")
    assert list(document) == ["rows", "total"]
    assert document["total"] == {
        "service": "",
        "error_type": "",
        "incidents": 1,
        "proposed": 1,
        "approved": 1,
        "merged": 1,
        "held": 1,
        "failed": 0,
        "median_s_to_pr": 60.0,
        "median_s_to_held": 120.0,
    }
    assert IncidentStats.model_validate(document) == stats


# ---------------------------------------------------------------------------- as text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.4, "0s"),
        (59, "59s"),
        (60, "1m00s"),
        (3599, "59m59s"),
        (3600 + 5 * 60, "1h05m"),
        (86400 * 2 + 4 * 3600, "2d04h"),
        (86400 * 150, "150d"),
    ],
)
def test_durations_fit_six_characters(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text and len(text) <= 6


GOLDEN = """\
                 incidents proposed approved merged held failed   to PR  to held
billing
  KeyError               1        0        0      0    0      0       -        -
shop
  ConnectionResetError
                         1        0        0      0    0      0       -        -
  KeyError               3        3        3      1    1      0   1m40s   16m40s
total                    5        3        3      1    1      0   1m40s   16m40s
proposed: reached approval or beyond; to PR, to held: medians from first report"""


def test_the_table_fits_80_columns_and_never_cuts_a_name() -> None:
    runs = [
        run(Phase.PR_OPENED, workflow="a", pr_s=100, closed_s=200),
        run(Phase.PR_OPENED, workflow="b", pr_s=300, closed_s=400),
        run(Phase.FIX_HELD, workflow="c", pr_s=50, closed_s=1000),
        run(Phase.FAILED, workflow="d", error_type="ConnectionResetError", closed_s=5),
        run(Phase.RECEIVED, workflow="e", service="billing"),
    ]
    text = render_stats(incident_stats(runs))
    assert text == GOLDEN
    assert max(len(line) for line in text.splitlines()) <= 80
    assert render_stats(incident_stats([])) == "no incidents"


def test_error_types_are_shown_as_text_not_as_terminal_escapes() -> None:
    text = render_stats(incident_stats([run(Phase.RECEIVED, error_type="Boom\x1b[2J\nError")]))
    assert "\x1b" not in text and "Boom" in text


# ---------------------------------------------------------------------------- on a dev server


class Script(BaseModel):
    """What one run of the test workflow does: set these phases one after the other, the
    PR's time `pr_after_s` after its start, then continue as new with `then` (memo
    `incident_id`: the incident of the first run, `continues`), stay open (`hold`) or
    complete. `reopened`: a new incident after a failed fix, without the PR time the
    search attributes carried over."""

    phases: list[str]
    pr_after_s: float | None = None
    then: Script | None = None
    continues: str = ""
    hold: bool = False
    reopened: bool = False


@workflow.defn(name="IncidentWorkflow", sandboxed=False)
class ScriptedIncident:
    @workflow.run
    async def run(self, script: Script) -> str:
        info = workflow.info()
        if script.reopened:  # a new incident: the earlier one's PR is not its own
            workflow.upsert_search_attributes([names.SA_PR_OPENED_AT.value_unset()])
        for phase in script.phases:
            workflow.upsert_search_attributes([names.SA_PHASE.value_set(phase)])
        if script.pr_after_s is not None:
            opened = info.workflow_start_time + timedelta(seconds=script.pr_after_s)
            workflow.upsert_search_attributes([names.SA_PR_OPENED_AT.value_set(opened)])
        if script.then is not None:
            own = info.typed_search_attributes
            incident = script.continues or names.incident_id_for(
                own.get(names.SA_SERVICE) or "", own.get(names.SA_FINGERPRINT) or "", info.run_id
            )
            workflow.continue_as_new(
                script.then.model_copy(update={"continues": incident}),
                memo={"incident_id": incident},
            )
        if script.hold:
            await workflow.wait_condition(lambda: False)
        return script.phases[-1]


runner = CliRunner()


async def remedy(*args: str) -> Result:
    """Run a CLI command in a thread: it owns its own event loop, as in a shell."""
    return await asyncio.to_thread(runner.invoke, cli, list(args))


@pytest.fixture
def service() -> str:
    # A service of its own: the listing sees every test's incidents in the namespace.
    return f"stats-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def scripted(client: Client) -> AsyncIterator[tuple[Client, str]]:
    queue = f"stats-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[ScriptedIncident]):
        yield client, queue


async def _start(
    client: Client,
    queue: str,
    service: str,
    error_type: str,
    script: Script,
    *,
    recurrence_of: str = "",
) -> WorkflowHandle[Any, Any]:
    fingerprint = uuid.uuid4().hex[:16]
    return await client.start_workflow(
        "IncidentWorkflow",
        script,
        id=names.workflow_id_for(service, fingerprint),
        task_queue=queue,
        execution_timeout=timedelta(minutes=2),
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(names.SA_SERVICE, service),
                SearchAttributePair(names.SA_ERROR_TYPE, error_type),
                SearchAttributePair(names.SA_FINGERPRINT, fingerprint),
                SearchAttributePair(names.SA_PHASE, "received"),
                SearchAttributePair(names.SA_OCCURRENCES, 1),
            ]
        ),
        memo={"recurrence_of": recurrence_of},
    )


def _incident_id(handle: WorkflowHandle[Any, Any], service: str) -> str:
    fingerprint = handle.id.removeprefix(f"{names.WORKFLOW_ID_PREFIX}{service}-")
    assert handle.first_execution_run_id is not None
    return names.incident_id_for(service, fingerprint, handle.first_execution_run_id)


def _config_file(tmp_path: Path, address: str) -> Path:
    path = tmp_path / "remedy.toml"
    path.write_text(f'home = "{tmp_path / "state"}"\n[temporal]\naddress = "{address}"\n')
    return path


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(scraped: Samples, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


async def test_stats_from_visibility_in_the_cli_and_on_metrics(
    scripted: tuple[Client, str], service: str, tmp_path: Path
) -> None:
    client, queue = scripted
    to_pr = ["received", "awaiting_approval", "opening_pr", "pr_opened"]
    # Held: three runs of one incident (it continued as new while following its change).
    held = await _start(
        client, queue, service, "KeyError",
        Script(phases=to_pr, pr_after_s=100, then=Script(
            phases=["fix_merged", "fix_deployed"], then=Script(phases=["fix_held"]),
        )),
    )  # fmt: skip
    # Failed: its fix did not hold; the run after it is a new incident, reopened (with the
    # memo of the run before: the stats must not take it for the same incident).
    failed = await _start(
        client, queue, service, "KeyError",
        Script(phases=to_pr, pr_after_s=300, then=Script(
            phases=["fix_merged", "fix_deployed", "fix_failed"],
            then=Script(phases=["received", "triaged"], reopened=True),
        )),
    )  # fmt: skip
    recurrence = await _start(
        client, queue, service, "KeyError", Script(phases=["pr_opened"]),
        recurrence_of=_incident_id(held, service),
    )  # fmt: skip
    rejected = await _start(
        client, queue, service, "ValueError",
        Script(phases=["received", "awaiting_approval", "rejected"]),
    )  # fmt: skip
    running = await _start(
        client, queue, service, "ValueError", Script(phases=["received", "diagnosing"], hold=True)
    )
    try:
        for handle in (held, failed, recurrence, rejected):
            await asyncio.wait_for(handle.result(), 60)
        config = ["--config", str(_config_file(tmp_path, client.service_client.config.target_host))]

        async def listed() -> dict[str, Any] | None:
            result = await remedy("stats", "--service", service, "--json", *config)
            assert result.exit_code == 0, result.output
            document: dict[str, Any] = json.loads(result.output)
            total = document["total"]
            settled = (total["incidents"], total["held"], total["failed"]) == (5, 1, 1)
            return document if settled and total["median_s_to_held"] is not None else None

        document = await eventually(listed, timeout_s=30)
        rows = {row["error_type"]: row for row in document["rows"]}
        assert list(rows) == ["KeyError", "ValueError"]
        key_error = StatsRow.model_validate(rows["KeyError"])
        assert counts(key_error) == (3, 2, 2, 2, 1, 1)
        # Visibility keeps the start time to the microsecond; the JSON rounds to the ms.
        assert key_error.median_s_to_pr == pytest.approx(200, abs=0.002)
        assert key_error.median_s_to_held is not None and 0 <= key_error.median_s_to_held < 60
        value_error = StatsRow.model_validate(rows["ValueError"])
        assert counts(value_error) == (2, 1, 0, 0, 0, 0)
        assert value_error.median_s_to_pr is None
        assert counts(StatsRow.model_validate(document["total"])) == (5, 3, 2, 2, 1, 1)

        text = await remedy("stats", "--service", service, *config)
        assert text.exit_code == 0, text.output
        lines = text.output.splitlines()
        assert lines[1] == service and max(len(line) for line in lines) <= 80
        assert lines[2].split()[:7] == ["KeyError", "3", "2", "2", "2", "1", "1"]
        assert lines[2].split()[7] == "3m20s"

        # The same figures on the intake's /metrics; one listing however many scrapes.
        app = create_app(RemedyConfig(), client=client)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake"
        ) as http:
            scraped = await http.get("/metrics")
            again = await http.get("/metrics")
        assert scraped.status_code == again.status_code == 200
        assert app.state.incident_stats.listings == 1
        got = samples(scraped.text)
        labels = {"service": service, "error_type": "KeyError"}
        assert sample(got, "remedy_stats_up") == 1
        assert sample(got, "remedy_incidents", **labels) == 3
        for stage, expected in zip(
            ("proposed", "approved", "merged", "held", "failed"), (2, 2, 2, 1, 1), strict=True
        ):
            assert sample(got, "remedy_fixes", stage=stage, **labels) == expected, stage
        assert sample(got, "remedy_time_to_pr_median_seconds", **labels) == pytest.approx(
            200, abs=1
        )
        assert sample(got, "remedy_time_to_held_median_seconds", **labels) is not None
        value_labels = {"service": service, "error_type": "ValueError"}
        assert sample(got, "remedy_incidents", **value_labels) == 2
        assert sample(got, "remedy_time_to_pr_median_seconds", **value_labels) is None
    finally:
        await running.terminate()


async def test_temporal_down_is_one_line_for_the_cli_and_no_failed_scrape(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = await remedy("stats", "--config", str(_config_file(tmp_path, address)))
    assert result.exit_code == 1
    assert result.output.startswith(f"error: Temporal at {address} unreachable")
    assert result.output.count("\n") == 1

    # Not connected yet, then a client whose server has gone: the scrape still answers.
    app = create_app(RemedyConfig())
    gone = await Client.connect(address, lazy=True, data_converter=data_converter())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://intake"
    ) as http:
        before = await http.get("/metrics")
        app.state.client = gone
        after = await http.get("/metrics")
        cached = await http.get("/metrics")
    assert before.status_code == after.status_code == cached.status_code == 200
    for scraped in (before, after, cached):
        assert sample(samples(scraped.text), "remedy_stats_up") == 0
    # Once per interval, failed or not: a scrape does not hammer a Temporal that is down.
    assert app.state.incident_stats.listings == 1
    assert time.monotonic() - started < 30
