"""What a person sees while the code index works: a line per stage, then a bar per batch.

`IndexProgress` takes the index's progress calls (stage, done, total; remedy.index.core),
whether they come from this process or from the index worker's heartbeat details. Each
stage before embedding (fetching, scanning, chunking) gets one line on stderr when it
starts; embedding gets a bar with rate and ETA on a terminal, elsewhere a line every few
seconds. `remedy index` and `remedy demo` (from the incident's index_repo heartbeats) use it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from temporalio.client import Client

from remedy import names
from remedy.render.sanitize import visible

WAITING = "waiting for the code index"
LINE_EVERY_S = 5.0
SAY_WAITING_EVERY_S = 10.0

_STAGE_LINES = {
    "fetching": "fetching the repository",
    "scanning": "scanning its files and the index",
    "chunking": "chunking {total} new or changed files",
    "embedding": "embedding {total} new chunks",
    "recording": "recording the commit",
}


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} chunks/s" if speed else "", style="progress.data.speed")


class IndexProgress:
    """A context manager; `update` is an index progress callback, `details` takes a
    heartbeat's details ({"stage", "embedded", "total"} or {"stage": WAITING, "holder"})."""

    def __init__(self, *, bar: bool | None = None, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = sys.stderr.isatty() if bar is None else bar
        self._started = time.monotonic()
        self._stage = ""
        self._last_line = 0.0
        self._said_waiting = -SAY_WAITING_EVERY_S
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> IndexProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_bar()

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._stop_bar()
            self._stage = stage
            template = _STAGE_LINES.get(stage, "{stage}")
            self.say(template.format(stage=stage, total=f"{total:,}"))
            if stage == "embedding" and total and self.bar:
                self._start_bar(total)
        if stage != "embedding" or not total:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)
        elif time.monotonic() - self._last_line >= LINE_EVERY_S:
            self.say(f"embedded {done:,}/{total:,}")

    def waiting(self, holder: str) -> None:
        if time.monotonic() - self._said_waiting >= SAY_WAITING_EVERY_S:
            self._said_waiting = time.monotonic()
            self.console.print(f"{WAITING}: in use by {visible(holder)}", markup=False)

    def details(self, details: Any) -> None:
        """Show one heartbeat's details; anything else (a plain note) is ignored."""
        if not isinstance(details, dict) or not isinstance(details.get("stage"), str):
            return
        if details["stage"] == WAITING:
            self.waiting(str(details.get("holder", "another process")))
            return
        self.update(details["stage"], int(details.get("embedded", 0)), int(details.get("total", 0)))

    def say(self, line: str) -> None:
        self._last_line = time.monotonic()
        elapsed = self._last_line - self._started
        self.console.print(f"{elapsed:6.1f}s  {visible(line)}", markup=False, highlight=False)

    def _start_bar(self, total: int) -> None:
        self._progress = Progress(
            TextColumn("embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("embedding", total=total)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = self._task = None


async def index_heartbeat(client: Client, workflow_id: str) -> Any:
    """The last heartbeat details of the incident's running index_repo, if one runs."""
    description = await client.get_workflow_handle(workflow_id).describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == names.ACTIVITY_INDEX_REPO and pending.HasField(
            "heartbeat_details"
        ):
            decoded = await client.data_converter.decode(pending.heartbeat_details.payloads)
            return decoded[0] if decoded else None
    return None
