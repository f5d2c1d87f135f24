"""How far incidents get, per service and error type: `remedy stats` and the intake's gauges.

A pure function from the incident runs visibility lists (`IncidentRun`, read in
starter/stats.py) to the table (`IncidentStats`), and the table as text. One incident is not
always one run: a recurrence run only counts duplicates of an earlier incident (not an
incident), and an incident following its change continues as new in fresh runs of the same
workflow id (one incident, whose latest run says how far it got). A run that continued as
new at `fix_failed` ended its incident: the run after it is a new incident, reopened.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from remedy import names
from remedy.models import FOLLOWING_PHASES, Phase
from remedy.render.sanitize import one_line, visible

# A run's close status, as visibility says it (temporalio's WorkflowExecutionStatus, lower case).
RUNNING = "running"
CONTINUED_AS_NEW = "continued_as_new"

_FIXED = frozenset(
    {Phase.FIX_MERGED, Phase.FIX_DEPLOYED, Phase.FIX_HELD, Phase.FIX_FAILED, Phase.FIX_ABANDONED}
)
APPROVED_PHASES = frozenset({Phase.OPENING_PR, Phase.PR_OPENED} | _FIXED)
PROPOSED_PHASES = frozenset({Phase.AWAITING_APPROVAL, Phase.REJECTED, Phase.EXPIRED}) | (
    APPROVED_PHASES
)
MERGED_PHASES = frozenset({Phase.FIX_MERGED, Phase.FIX_DEPLOYED, Phase.FIX_HELD, Phase.FIX_FAILED})
# The stages of a fix, in order, with the phases an incident is in once it has passed each one
# (the `stage` label of the remedy_fixes gauge, the columns of the table).
STAGES: dict[str, frozenset[Phase]] = {
    "proposed": PROPOSED_PHASES,
    "approved": APPROVED_PHASES,
    "merged": MERGED_PHASES,
    "held": frozenset({Phase.FIX_HELD}),
    "failed": frozenset({Phase.FIX_FAILED}),
}
_FOLLOWING = frozenset(phase.value for phase in FOLLOWING_PHASES)


@dataclass(frozen=True)
class IncidentRun:
    """One run of IncidentWorkflow as visibility lists it."""

    workflow_id: str
    run_id: str
    service: str
    error_type: str
    phase: str
    started: datetime
    closed: datetime | None = None
    status: str = RUNNING
    fingerprint: str = ""
    first_run_id: str = ""
    pr_opened_at: datetime | None = None
    recurrence_of: str = ""
    """Memo `recurrence_of`: this run only counts duplicates of that incident."""
    continues: str = ""
    """Memo `incident_id`: the incident this run continues (a fresh run of a long follow-up)."""

    @property
    def incident_id(self) -> str:
        return names.incident_id_for(self.service, self.fingerprint, self.run_id)


@dataclass(frozen=True)
class Incident:
    """One incident: its runs, oldest first."""

    runs: tuple[IncidentRun, ...]

    @property
    def first(self) -> IncidentRun:
        return self.runs[0]

    @property
    def latest(self) -> IncidentRun:
        return self.runs[-1]

    @property
    def phase(self) -> str:
        return self.latest.phase

    @property
    def service(self) -> str:
        return self.latest.service or self.first.service

    @property
    def error_type(self) -> str:
        return self.latest.error_type or self.first.error_type

    def seconds_to_pr(self) -> float | None:
        # A PR from before the first report is an earlier incident's: search attributes carry
        # over into the run a failed fix continues as, a new incident.
        started = self.first.started
        opened = [
            run.pr_opened_at
            for run in self.runs
            if run.pr_opened_at is not None and run.pr_opened_at >= started
        ]
        return _seconds(started, min(opened)) if opened else None

    def seconds_to_held(self) -> float | None:
        latest = self.latest
        if latest.phase != Phase.FIX_HELD or latest.closed is None:
            return None
        return _seconds(self.first.started, latest.closed)


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def incidents_of(runs: Iterable[IncidentRun]) -> list[Incident]:
    """The incidents behind the runs: recurrence runs left out, a follow-up's runs joined."""
    by_workflow: dict[str, list[IncidentRun]] = defaultdict(list)
    for run in runs:
        if not run.recurrence_of:
            by_workflow[run.workflow_id].append(run)
    chains: list[list[IncidentRun]] = []
    by_id: dict[str, list[IncidentRun]] = {}
    orphans: list[IncidentRun] = []
    for workflow_runs in by_workflow.values():
        workflow_runs.sort(key=lambda run: run.started)
        previous: IncidentRun | None = None
        for run in workflow_runs:
            if previous is not None and _continues(previous, run):
                chains[-1].append(run)
            elif previous is None and run.continues:
                # Its earlier runs were not listed with it (a narrower query): the memo says
                # which incident it belongs to, if that one was.
                orphans.append(run)
            else:
                chains.append([run])
                by_id[run.incident_id] = chains[-1]
            previous = run
    for run in orphans:
        if (chain := by_id.get(run.continues)) is not None:
            chain.append(run)
            chain.sort(key=lambda item: item.started)
        else:
            chains.append([run])
    return [Incident(tuple(chain)) for chain in chains]


def _continues(previous: IncidentRun, run: IncidentRun) -> bool:
    """Whether `run` is the same incident as the run before it: that one continued as new
    while following its change (at fix_failed it continued as a new, reopened incident)."""
    chain = previous.first_run_id, run.first_run_id
    same_chain = not all(chain) or chain[0] == chain[1]
    return previous.status == CONTINUED_AS_NEW and previous.phase in _FOLLOWING and same_chain


class StatsRow(BaseModel):
    """Incidents of one service and error type (both empty: the total) and how far their
    fixes got; each stage counts the incidents that reached it or went beyond."""

    service: str
    error_type: str
    incidents: int = 0
    proposed: int = Field(default=0, description="Reached awaiting_approval or beyond")
    approved: int = Field(default=0, description="Reached opening_pr or beyond")
    merged: int = Field(default=0, description="fix_merged, fix_deployed, fix_held, fix_failed")
    held: int = Field(default=0, description="fix_held")
    failed: int = Field(default=0, description="fix_failed")
    median_s_to_pr: float | None = Field(
        default=None, description="Median seconds from the first report to the PR opening"
    )
    median_s_to_held: float | None = Field(
        default=None, description="Median seconds from the first report to fix_held"
    )

    def stage(self, name: str) -> int:
        count: int = getattr(self, name)
        return count


class IncidentStats(BaseModel):
    """`remedy stats --json`: one row per (service, error type), sorted, and the total."""

    rows: list[StatsRow]
    total: StatsRow


def incident_stats(runs: Iterable[IncidentRun]) -> IncidentStats:
    grouped: dict[tuple[str, str], list[Incident]] = defaultdict(list)
    everything: list[Incident] = []
    for incident in incidents_of(runs):
        grouped[(incident.service, incident.error_type)].append(incident)
        everything.append(incident)
    rows = [_row(service, error, grouped[(service, error)]) for service, error in sorted(grouped)]
    return IncidentStats(rows=rows, total=_row("", "", everything))


def _row(service: str, error_type: str, incidents: Sequence[Incident]) -> StatsRow:
    counts = {
        stage: sum(1 for incident in incidents if incident.phase in phases)
        for stage, phases in STAGES.items()
    }
    return StatsRow(
        service=service,
        error_type=error_type,
        incidents=len(incidents),
        **counts,
        median_s_to_pr=_median(incident.seconds_to_pr() for incident in incidents),
        median_s_to_held=_median(incident.seconds_to_held() for incident in incidents),
    )


def _median(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 3) if known else None


# ---------------------------------------------------------------------------- as text

# Right-aligned figure columns: counts one space apart, the two medians two.
_COUNTS = ("incidents", "proposed", "approved", "merged", "held", "failed")
_MEDIANS = (("median_s_to_pr", "to PR"), ("median_s_to_held", "to held"))
_DURATION_WIDTH = 6
LEGEND = "proposed: reached approval or beyond; to PR, to held: medians from first report"


def duration(seconds: float | None) -> str:
    """At most six characters: 45s, 12m05s, 3h20m, 2d04h; '-' for none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    days, rest = divmod(whole, 86400)
    return f"{days}d{rest // 3600:02d}h" if days < 100 else f"{days}d"


def render_stats(stats: IncidentStats, width: int = 80) -> str:
    """A service's name on a line, its error types below it with their figures, the total
    last; a name too long for its column gets a line of its own, so nothing is cut."""
    if not stats.rows:
        return "no incidents"
    rows = [*stats.rows, stats.total]
    count_widths = [max(len(h), *(len(str(row.stage(h))) for row in rows)) for h in _COUNTS]
    median_widths = [max(_DURATION_WIDTH, len(header)) for _, header in _MEDIANS]
    figures_width = sum(count_widths) + len(count_widths) - 1 + sum(2 + w for w in median_widths)
    name_width = max(width - figures_width - 1, 12)

    def figures(counts: Sequence[object], medians: Sequence[str]) -> str:
        cells = [f"{value:>{w}}" for value, w in zip(counts, count_widths, strict=True)]
        ends = [f"  {value:>{w}}" for value, w in zip(medians, median_widths, strict=True)]
        return " ".join(cells) + "".join(ends)

    def line(name: str, row: StatsRow) -> list[str]:
        text = figures(
            [row.stage(h) for h in _COUNTS], [duration(getattr(row, key)) for key, _ in _MEDIANS]
        )
        if len(name) > name_width:
            return [name, f"{'':<{name_width}} {text}"]
        return [f"{name:<{name_width}} {text}"]

    out = [f"{'':<{name_width}} {figures(_COUNTS, [header for _, header in _MEDIANS])}"]
    service: str | None = None
    for row in stats.rows:
        if row.service != service:
            service = row.service
            out.append(_text(service) or "(no service)")
        out += line("  " + (_text(row.error_type) or "(no error type)"), row)
    out += line("total", stats.total)
    out.append(LEGEND)
    return "\n".join(text.rstrip() for text in out)


def _text(value: str) -> str:
    """Someone else's words (error types come from the services' reports) on one line."""
    return one_line(visible(value))
