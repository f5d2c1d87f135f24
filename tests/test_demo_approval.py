"""`remedy demo` through diagnosis, sandboxed verification, CLI approval and a local push.

The model is the instant LLM double (a loopback Ollama speaking the real protocol); Slack and
GitHub are unset, so approval happens in the CLI and the change is pushed as a branch to the
demo repository's own remote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.fakes.llm_double import instant_llm
from tests.repos import git

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_demo_reaches_a_verified_fix_and_pushes_it_after_cli_approval(tmp_path: Path) -> None:
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
[services.demo]
repo = "demo/shop.git"
intake_token_env = "REMEDY_DEMO_TOKEN"
approvers = ["demo-reviewer"]
allowed_paths = ["shop/**"]
test_command = "python -m pytest -q -p no:cacheprovider"
"""
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("REMEDY_DEMO_TOKEN", None)
        demo = subprocess.run(
            [
                sys.executable,
                "-m",
                "starter.cli",
                "demo",
                "--approve-as",
                "demo-reviewer",
                "--json",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=240,
        )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    status = json.loads(demo.stdout)
    assert status["phase"] == "pr_opened", status["reason"]
    assert status["diagnosis"]["backend"].startswith("ollama")
    verification = status["verification"]
    assert verification["status"] == "passed", verification
    assert verification["reproduced"] is True
    assert status["approval"]["decision"]["approver"] == "demo-reviewer"
    proposal = status["proposal"]
    assert proposal["branch"] == f"remedy/{status['incident_id']}"
    origin = tmp_path / "demo" / "shop.git"
    fixed = git(origin, "show", f"{proposal['branch']}:shop/cart.py")
    assert "DISCOUNTS.get(code, 0.0)" in fixed
    assert "approved by demo-reviewer through the CLI" in demo.stderr
