"""`remedy demo` as a new user runs it beside `remedy dev`: diagnosis, sandboxed verification,
CLI approval and a local push; then the user merges the branch, says the merge is deployed
(`remedy deployed`) and sees the fix hold after the (shortened) hold window.

The model is the instant LLM double (a loopback Ollama speaking the real protocol); Slack and
GitHub are unset, so approval happens in the CLI and the change is pushed as a branch to the
demo repository's own remote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.fakes.llm_double import instant_llm
from tests.repos import git
from tests.test_dev_and_demo import start_dev, stop_dev

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
REMEDY = [sys.executable, "-m", "starter.cli"]


def test_demo_fix_is_approved_pushed_merged_deployed_and_held(tmp_path: Path) -> None:
    with instant_llm() as ollama:
        config = tmp_path / "remedy.toml"
        config.write_text(
            f"""
home = "state"
[temporal]
address = "127.0.0.1:{free_port()}"
dev_ui_port = {free_port()}
[intake]
port = {free_port()}
[llm]
mode = "local"
ollama_host = "{ollama.url}"
[limits]
change_poll_s = 1
hold_window_s = 3
[services.demo]
repo = "demo/shop.git"
intake_token_env = "REMEDY_DEMO_TOKEN"
approvers = ["demo-reviewer"]
allowed_paths = ["shop/**"]
test_command = "python -m pytest -q -p no:cacheprovider"
"""
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REMEDY_DEMO_TOKEN": "demo-test-token"}

        def remedy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*REMEDY, *args, "--config", str(config)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=timeout,
            )

        dev = start_dev(config, env)
        try:
            demo = remedy("demo", "--approve-as", "demo-reviewer", "--json", timeout=240)
            assert demo.returncode == 0, demo.stdout + demo.stderr
            status = json.loads(demo.stdout)
            assert status["phase"] == "pr_opened", status["reason"]
            assert status["diagnosis"]["backend"].startswith("ollama")
            verification = status["verification"]
            assert verification["status"] == "passed", verification
            assert verification["reproduced"] is True
            assert status["approval"]["decision"]["approver"] == "demo-reviewer"
            proposal = status["proposal"]
            incident_id = status["incident_id"]
            assert proposal["branch"] == f"remedy/{incident_id}"
            origin = tmp_path / "demo" / "shop.git"
            fixed = git(origin, "show", f"{proposal['branch']}:shop/cart.py")
            assert "DISCOUNTS.get(code, 0.0)" in fixed
            assert "approved by demo-reviewer through the CLI" in demo.stderr
            # What to do next is printed, with the commands a person types.
            assert f"git -C {origin.parent / 'shop-work'} pull" in demo.stderr
            assert "remedy deployed demo" in demo.stderr

            # The person merges the branch as the demo says, and deploys the merge.
            work = origin.parent / "shop-work"
            git(work, "pull", "-q", "--ff-only", "origin", proposal["branch"])
            git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
            merged = wait_for_phase(remedy, incident_id, "fix_merged")
            assert merged["fix"]["merged_by"] == "poll"
            release = git(work, "rev-parse", "HEAD")
            told = remedy("deployed", "demo", release)
            assert told.returncode == 0, told.stderr
            assert told.stdout.splitlines() == [
                f"told 1 incident(s) of demo that {release} runs:",
                f"  {incident_id}",
            ]
            held = wait_for_phase(remedy, incident_id, "fix_held")
            assert held["fix"]["deployed_release"] == release
            assert "for 3 s" in held["reason"]
            shown = remedy("incidents", "show", incident_id)
            assert "phase fix_held" in shown.stdout and f"deployed   {release}" in shown.stdout

            stats = remedy("stats", "--json")
            assert stats.returncode == 0, stats.stderr
            [row] = [r for r in json.loads(stats.stdout)["rows"] if r["service"] == "demo"]
            assert (row["incidents"], row["merged"], row["held"], row["failed"]) == (1, 1, 1, 0)
        finally:
            stop_dev(dev)


def wait_for_phase(remedy: Any, incident_id: str, phase: str, timeout_s: float = 60) -> Any:
    """`remedy incidents show --json` until the incident is at `phase`."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = remedy("incidents", "show", incident_id, "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        if status["phase"] == phase:
            return status
        assert time.monotonic() < deadline, f"still {status['phase']}: {status['reason']}"
        time.sleep(0.5)
