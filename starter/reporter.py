"""Turns accepted error reports into incidents, coalescing storms in-process.

The first report of a (service, fingerprint) in this process starts the IncidentWorkflow
(or finds the one already open); every later report only bumps an in-memory counter, and
one `occurrence` signal carries the whole batch: at most one per `coalesce_interval_s`, and,
while a batch holds fewer than BATCH_REPORTS, only once it has waited
MAX_WAIT_INTERVALS intervals. Signals per incident are thus bounded in time (two a second
at the default interval) and in share (1 % of reports from 40 reports/s up), and the
workflow's count trails the accepted one by little more than that wait (2.5 s). It stays
exact: a batch whose signal fails is kept and sent again, and a batch that finds the
incident closed opens the next incident with that count. A batch also says how many of its
reports named each release (`OccurrenceSignal.releases`), and the first report of a release
this process sees tells the service's incidents that follow a change that it runs
(starter/deploys.py), in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from remedy import names
from remedy.models import (
    FIX_OUTCOMES,
    IncidentStart,
    IntakeResponse,
    OccurrenceSignal,
    Phase,
    Recurrence,
)
from remedy.render import temporal_ui
from starter.deploys import announce_release
from workflows.incident import IncidentWorkflow

log = logging.getLogger(__name__)

_IDLE_EVICT_S = 600.0
# A look-up at a server that accepts the connection but does not answer gives up after this
# (an unreachable one is retried by the client library: the intake bounds the whole report).
_RPC_TIMEOUT = timedelta(seconds=3)
_RETRY_DELAY_MAX_S = 10.0
# A signal waits for this many reports, or for this many intervals since the last one.
BATCH_REPORTS = 100
MAX_WAIT_INTERVALS = 5
# Distinct releases one batch counts; reports of further ones count only in `count` (a service
# that names a new release per report must not grow the signal without bound).
MAX_RELEASES_PER_BATCH = 50
# (service, release) pairs this process has seen, oldest forgotten first: one forgotten and
# seen again is announced again, which the incidents take as news they already had.
RELEASES_REMEMBERED = 4096
# Announcements in flight; a release first seen while this many are is announced by a later
# report of it.
MAX_ANNOUNCING = 8


class Reporter(Protocol):
    async def report(self, start: IncidentStart) -> IntakeResponse: ...


@dataclass
class _OpenIncident:
    workflow_id: str
    run_id: str
    incident_id: str
    start: IncidentStart
    confirmed: int
    pending: int = 0
    # How many of the pending reports named each release (reports without one are not in it).
    releases: dict[str, int] = field(default_factory=dict)
    last_report: float = field(default_factory=time.monotonic)
    # When Temporal last took this incident's count (the start, or a signal).
    last_delivered: float = field(default_factory=time.monotonic)
    flusher: asyncio.Task[None] | None = None
    # The signal in flight, if any: cancelling the flusher must not cancel it, since a
    # signal cancelled on our side may still have reached the workflow.
    delivery: asyncio.Task[None] | None = None


class TemporalReporter:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        coalesce_interval_s: float,
        ui_url: str,
        index_task_queue: str | None = None,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._index_task_queue = index_task_queue
        self._interval = coalesce_interval_s
        self._ui_url = ui_url.rstrip("/")
        self._open: dict[str, _OpenIncident] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.temporal_calls = 0
        self.workflows_started = 0
        self._releases_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._announcing: set[asyncio.Task[None]] = set()
        self.releases_announced = 0

    async def report(self, start: IncidentStart) -> IntakeResponse:
        release = start.event.release
        if release is not None and (start.service, release) not in self._releases_seen:
            self._first_sight(start.service, release)
        workflow_id = names.workflow_id_for(start.service, start.fingerprint)
        incident = self._open.get(workflow_id)
        if incident is None:
            lock = self._locks.setdefault(workflow_id, asyncio.Lock())
            async with lock:
                incident = self._open.get(workflow_id)
                if incident is None:
                    incident, started = await self._open_incident(workflow_id, start, count=1)
                    if started:
                        # A recurrence run counts for the incident it follows.
                        recurring = incident.start.recurrence_of is not None
                        return self._response(incident, deduplicated=recurring)
                    _add_pending(incident, release)
                    self._schedule_flush(incident)
                    return self._response(incident, deduplicated=True)
        _add_pending(incident, release)
        incident.last_report = time.monotonic()
        self._schedule_flush(incident)
        return self._response(incident, deduplicated=True)

    async def close(self) -> None:
        """Flush every pending batch (graceful shutdown loses no occurrence it can deliver)."""
        for announcing in list(self._announcing):
            announcing.cancel()
        await asyncio.gather(*self._announcing, return_exceptions=True)
        for incident in list(self._open.values()):
            if incident.flusher is not None:
                incident.flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await incident.flusher
            if incident.delivery is not None:
                # Its failure leaves the batch pending, for the delivery below.
                with contextlib.suppress(Exception):
                    await incident.delivery
            if incident.pending:
                try:
                    await self._deliver(incident)
                except Exception:
                    log.exception(
                        "dropping %d occurrences for %s at shutdown",
                        incident.pending,
                        incident.workflow_id,
                    )

    # ------------------------------------------------------------------ internals

    def _first_sight(self, service: str, release: str) -> None:
        """Announce a release this process has not seen a report of, without the report
        waiting for it or failing with it."""
        if len(self._announcing) >= MAX_ANNOUNCING:
            return
        self._releases_seen[(service, release)] = None
        if len(self._releases_seen) > RELEASES_REMEMBERED:
            self._releases_seen.popitem(last=False)
        task = asyncio.create_task(self._announce(service, release))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, service: str, release: str) -> None:
        try:
            self.temporal_calls += 1
            told = await announce_release(self._client, service, release, "report")
        except Exception as exc:
            # The release also reaches the incidents in their batches' counts; the next
            # process to see it (or POST /v1/deploys) announces it again.
            log.warning("could not announce release %r of %s: %s", release, service, exc)
            return
        self.releases_announced += 1
        if told:
            log.info("release %r of %s first reported: told %s", release, service, told)

    def _response(self, incident: _OpenIncident, *, deduplicated: bool) -> IntakeResponse:
        return IntakeResponse(
            incident_id=incident.incident_id,
            workflow_id=incident.workflow_id,
            deduplicated=deduplicated,
            occurrences=incident.confirmed + incident.pending,
            ui_url=self._run_url(incident.workflow_id, incident.run_id),
        )

    def _run_url(self, workflow_id: str, run_id: str) -> str:
        return names.ui_run_url(self._ui_url, workflow_id, run_id)

    async def _open_incident(
        self, workflow_id: str, start: IncidentStart, *, count: int
    ) -> tuple[_OpenIncident, bool]:
        """Start the incident, or adopt the one already open. Returns (incident, started):
        `started` when the run began with `count` in it.

        A fingerprint Temporal already holds a run for is looked at first: a running one is
        adopted; one that closed at its outcome less than a quiet window ago gets a
        recurrence run that counts the new reports (the report is a duplicate of it); an
        older one is followed by a new incident.
        """
        start = start.model_copy(
            update={
                "occurrences": count,
                "ui_base_url": self._ui_url,
                "index_task_queue": self._index_task_queue,
            }
        )
        try:
            return await self._start(workflow_id, start, WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            pass
        existing = self._client.get_workflow_handle(workflow_id)
        self.temporal_calls += 1
        description = await existing.describe(rpc_timeout=_RPC_TIMEOUT)
        if description.status != WorkflowExecutionStatus.RUNNING:
            recurrence = await _recurrence(description, start)
            if recurrence is not None:
                start = start.model_copy(
                    update={
                        "recurrence_of": recurrence,
                        "occurrences": recurrence.occurrences + count,
                    }
                )
            try:
                return await self._start(workflow_id, start, WorkflowIDReusePolicy.ALLOW_DUPLICATE)
            except WorkflowAlreadyStartedError:  # another intake started it first
                self.temporal_calls += 1
                description = await existing.describe(rpc_timeout=_RPC_TIMEOUT)
        known = description.typed_search_attributes.get(names.SA_OCCURRENCES) or 0
        # A recurrence run's memo names the incident it counts for, and so does a run
        # continued as new while following its change: every intake replica that adopts the
        # run answers with that incident's id.
        counted_for = await description.memo_value(
            names.MEMO_RECURRENCE_OF, default=""
        ) or await description.memo_value(names.MEMO_INCIDENT_ID, default="")
        incident = self._track(
            workflow_id, description.run_id, start, confirmed=known, incident_id=counted_for
        )
        return incident, False

    async def _start(
        self, workflow_id: str, start: IncidentStart, reuse: WorkflowIDReusePolicy
    ) -> tuple[_OpenIncident, bool]:
        self.temporal_calls += 1
        handle = await self._client.start_workflow(
            IncidentWorkflow.run,
            start,
            id=workflow_id,
            task_queue=self._task_queue,
            id_reuse_policy=reuse,
            search_attributes=temporal_ui.initial_search_attributes(start),
            # What the Temporal UI's list and detail page show for the incident.
            static_summary=temporal_ui.incident_summary(start),
            static_details=temporal_ui.incident_details(start),
            memo={
                names.MEMO_RECURRENCE_OF: start.recurrence_of.incident_id
                if start.recurrence_of
                else ""
            },
        )
        self.workflows_started += 1
        assert handle.result_run_id is not None
        counted_for = start.recurrence_of.incident_id if start.recurrence_of else ""
        incident = self._track(
            workflow_id,
            handle.result_run_id,
            start,
            confirmed=start.occurrences,
            incident_id=counted_for,
        )
        return incident, True

    def _track(
        self,
        workflow_id: str,
        run_id: str,
        start: IncidentStart,
        *,
        confirmed: int,
        incident_id: str = "",
    ) -> _OpenIncident:
        """Remember the open run; `incident_id` when it counts for an earlier incident."""
        incident = _OpenIncident(
            workflow_id=workflow_id,
            run_id=run_id,
            incident_id=incident_id
            or names.incident_id_for(start.service, start.fingerprint, run_id),
            start=start,
            confirmed=confirmed,
        )
        self._open[workflow_id] = incident
        return incident

    def _schedule_flush(self, incident: _OpenIncident) -> None:
        if incident.flusher is None or incident.flusher.done():
            incident.flusher = asyncio.create_task(self._flush_loop(incident))

    def _until_due(self, incident: _OpenIncident) -> float:
        """How long the batch may still wait; 0: send it now."""
        if incident.pending >= BATCH_REPORTS:
            return 0.0
        due = incident.last_delivered + self._interval * MAX_WAIT_INTERVALS
        return max(0.0, due - time.monotonic())

    async def _flush_loop(self, incident: _OpenIncident) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            wait = self._until_due(incident)
            if incident.pending and wait > 0:
                delay = min(self._interval, wait)
                continue
            if incident.pending:
                incident.delivery = asyncio.ensure_future(self._deliver(incident))
                try:
                    await asyncio.shield(incident.delivery)
                    delay = self._interval
                except Exception:
                    log.exception(
                        "could not deliver %d occurrences to %s; will retry",
                        incident.pending,
                        incident.workflow_id,
                    )
                    delay = min(delay * 2, _RETRY_DELAY_MAX_S)
                    continue
            if not incident.pending:
                if time.monotonic() - incident.last_report > _IDLE_EVICT_S:
                    self._open.pop(incident.workflow_id, None)
                return

    async def _deliver(self, incident: _OpenIncident) -> None:
        count = incident.pending
        releases = dict(incident.releases)
        handle = self._client.get_workflow_handle_for(
            IncidentWorkflow.run, incident.workflow_id, run_id=incident.run_id
        )
        try:
            self.temporal_calls += 1
            # No short deadline here: a signal that timed out on our side may still have been
            # delivered, and sending the batch again would count it twice.
            await handle.signal(
                IncidentWorkflow.occurrence, OccurrenceSignal(count=count, releases=releases)
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await self._reopen(incident)
            return
        incident.pending -= count
        _take_releases(incident, releases)
        incident.confirmed += count
        incident.last_delivered = time.monotonic()

    async def _reopen(self, closed: _OpenIncident) -> None:
        """The run a batch was meant for has completed: the batch opens the next incident."""
        async with self._locks.setdefault(closed.workflow_id, asyncio.Lock()):
            if self._open.get(closed.workflow_id) is closed:
                del self._open[closed.workflow_id]
            successor = self._open.get(closed.workflow_id)
            count = closed.pending
            releases = dict(closed.releases)
            if successor is None:
                successor, started = await self._open_incident(
                    closed.workflow_id, closed.start, count=count
                )
                closed.pending -= count
                if started:
                    # The new run's start holds these reports' count (and its own release).
                    count = 0
                    _take_releases(closed, releases)
            else:
                closed.pending -= count
            # Reports that reached the closed incident while this ran move over too.
            successor.pending += count + closed.pending
            for release, reports in closed.releases.items():
                _count_release(successor, release, reports)
            closed.pending = 0
            closed.releases = {}
            if successor.pending:
                self._schedule_flush(successor)


def _add_pending(incident: _OpenIncident, release: str | None) -> None:
    incident.pending += 1
    if release is not None:
        _count_release(incident, release, 1)


def _count_release(incident: _OpenIncident, release: str, reports: int) -> None:
    releases = incident.releases
    if release in releases:
        releases[release] += reports
    elif len(releases) < MAX_RELEASES_PER_BATCH:
        releases[release] = reports


def _take_releases(incident: _OpenIncident, delivered: dict[str, int]) -> None:
    """Take what a delivered batch counted per release off what is pending."""
    for release, reports in delivered.items():
        left = incident.releases.get(release, 0) - reports
        if left > 0:
            incident.releases[release] = left
        else:
            incident.releases.pop(release, None)


async def _recurrence(
    description: WorkflowExecutionDescription, start: IncidentStart
) -> Recurrence | None:
    """The closed run the new reports recur after, if it closed at its outcome less than the
    service's quiet window ago. A recurrence run closes only once a quiet window has passed,
    so what follows it is a new incident."""
    if await description.memo_value(names.MEMO_RECURRENCE_OF, default=""):
        return None
    attributes = description.typed_search_attributes
    phase = Phase(attributes.get(names.SA_PHASE) or Phase.FAILED.value)
    if phase in FIX_OUTCOMES:
        # The fix held, failed (a new incident took over) or was dropped: what comes now is
        # a new incident, not more of that one.
        return None
    closed = description.close_time
    quiet = timedelta(seconds=start.policy.quiet_window_s)
    if closed is None or datetime.now(UTC) - closed >= quiet:
        return None
    continued = await description.memo_value(names.MEMO_INCIDENT_ID, default="")
    return Recurrence(
        incident_id=str(continued)
        or names.incident_id_for(start.service, start.fingerprint, description.run_id),
        phase=phase,
        occurrences=attributes.get(names.SA_OCCURRENCES) or 0,
    )
