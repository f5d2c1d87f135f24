"""Every committed history still replays against the current workflow code.

A change to IncidentWorkflow's commands that is not guarded by `workflow.patched()` breaks
incidents that are running while a worker is upgraded; this is where it shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from remedy.temporal import data_converter
from workflows.incident import IncidentWorkflow

HISTORIES = {
    path.stem: path.read_text()
    for path in sorted((Path(__file__).parent / "histories").glob("*.json"))
}


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 3


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(f"replay-{name}", json.loads(HISTORIES[name]))
    replayer = Replayer(workflows=[IncidentWorkflow], data_converter=data_converter())
    await replayer.replay_workflow(history)
