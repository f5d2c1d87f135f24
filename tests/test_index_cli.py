"""`remedy index` then `remedy search` on Remedy's own code: plain questions find the function,
through the running index worker (no model in the CLI) and, with no stack, in the CLI itself."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import typer
from temporalio.client import Client
from typer.testing import CliRunner

from activities.index_service import IndexService
from remedy.config import load_config
from remedy.index.core import code_index
from remedy.index.service import SearchRequest, search
from starter.index_cli import register
from tests.conftest import free_port
from tests.repos import git
from tests.test_index import store_held_by_another_process
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
# The CLI as `remedy` runs it (main() leaves through os._exit); on the way out it says
# whether the model's library was ever imported.
CLI = """
import os, sys
from starter.cli import main
leave = os._exit
def say_and_leave(code):
    loaded = 'sentence_transformers' in sys.modules
    print('model library loaded:', loaded, file=sys.stderr, flush=True)
    leave(code)
os._exit = say_and_leave
sys.argv[0] = 'remedy'
main()
"""
FALLBACK = "loading the embedding model in this process"

SUBTREE = ("__init__.py", "artifacts.py", "index/chunking.py", "config.py", "names.py")
QUESTIONS = {
    "read a secret from the environment when it is needed": "secret",
    "write an artifact file atomically": "ArtifactStore.put_bytes",
    "workflow id for a service and fingerprint": "workflow_id_for",
    "split a source file into chunks": "chunk_file",
    "should this path be skipped as vendored or generated": "skip_reason_for_path",
}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _no_stack() -> str:
    """A [temporal] section where nothing answers, whatever else runs on this machine."""
    return f'\n[temporal]\naddress = "127.0.0.1:{free_port()}"\n\n'


def _remedy_subtree(tmp_path: Path, files: tuple[str, ...] = SUBTREE) -> Path:
    # Part of Remedy's domain package as a repository of its own keeps the test to seconds.
    repo = tmp_path / "self"
    for name in files:
        (repo / "remedy" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "remedy" / name, repo / "remedy" / name)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "import")
    return repo


def test_index_then_search_remedy_itself(tmp_path: Path, app: typer.Typer) -> None:
    repo = _remedy_subtree(tmp_path)
    config = tmp_path / "remedy.toml"
    config.write_text(f'home = "home"\n{_no_stack()}[services.self]\nrepo = "{repo}"\n')
    runner = CliRunner()

    indexed = runner.invoke(app, ["index", "self", "--json", "--config", str(config)])
    assert indexed.exit_code == 0, indexed.output
    # No stack: the command says so in one line and does the work itself.
    assert indexed.stderr.count(FALLBACK) == 1 and "no stack running" in indexed.stderr
    assert "chunking 5 new or changed files" in indexed.stderr
    first = json.loads(indexed.stdout)
    assert first["chunks"] > 30 and first["embedded"] == first["chunks"]
    assert {"reused", "deleted", "seconds"} <= set(first)

    again = json.loads(
        runner.invoke(app, ["index", "self", "--json", "--config", str(config)]).stdout
    )
    assert (again["embedded"], again["reused"]) == (0, first["chunks"])

    for question, expected in QUESTIONS.items():
        found = runner.invoke(app, ["search", "self", question, "--json", "--config", str(config)])
        assert found.exit_code == 0, found.output
        assert FALLBACK in found.stderr
        top = [hit["symbol"] for hit in json.loads(found.stdout)["hits"][:3]]
        assert expected in top, f"{question!r}: {top}"


def test_index_and_search_explain_what_is_wrong(tmp_path: Path, app: typer.Typer) -> None:
    config = tmp_path / "remedy.toml"
    config.write_text(
        f'home = "home"\n{_no_stack()}[services.shop]\nrepo = "{tmp_path / "shop"}"\n'
    )
    runner = CliRunner()
    both = runner.invoke(app, ["index", "shop", "--repo", str(tmp_path), "--config", str(config)])
    assert both.exit_code == 2 and "exactly one of SERVICE or --repo" in both.output
    not_git = runner.invoke(app, ["index", "--repo", str(tmp_path), "--config", str(config)])
    assert not_git.exit_code == 1 and "names no commit there" in not_git.output
    unknown = runner.invoke(app, ["search", "nope", "q", "--config", str(config)])
    assert unknown.exit_code == 2 and "no service 'nope'" in unknown.output
    unindexed = runner.invoke(app, ["search", "shop", "q", "--config", str(config)])
    assert unindexed.exit_code == 1 and "run `remedy index shop` first" in unindexed.output


def test_index_says_whom_it_waits_for(tmp_path: Path, app: typer.Typer) -> None:
    repo = tmp_path / "small"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "cart.py").write_text("def total(lines):\n    return sum(lines)\n")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "import")
    config = tmp_path / "remedy.toml"
    config.write_text(f'home = "home"\n{_no_stack()}[services.small]\nrepo = "{repo}"\n')

    with store_held_by_another_process(tmp_path / "home" / "index", 3):
        indexed = CliRunner().invoke(app, ["index", "small", "--json", "--config", str(config)])

    assert indexed.exit_code == 0, indexed.output
    assert "waiting for the code index: in use by `remedy index big` (pid " in indexed.stderr
    assert json.loads(indexed.stdout)["chunks"] >= 1


async def _remedy(*args: str) -> tuple[int, str, str]:
    """`remedy ARGS` in a child process, awaited (the worker serving it runs on this loop)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 240)
    return child.returncode or 0, out.decode(), err.decode()


@pytest.mark.timeout(600)
async def test_search_and_index_through_the_running_index_worker(
    tmp_path: Path, client: Client
) -> None:
    repo = _remedy_subtree(tmp_path, ("artifacts.py", "names.py"))
    queue = f"index-{uuid.uuid4().hex[:8]}"
    address = client.service_client.config.target_host
    config_path = tmp_path / "remedy.toml"
    config_path.write_text(
        f'home = "home"\n\n[temporal]\naddress = "{address}"\nindex_task_queue = "{queue}"\n\n'
        f'[services.self]\nrepo = "{repo}"\n'
    )
    config = load_config(config_path)
    service = IndexService(config)
    worker = build_worker(
        client, config, activities=[service.search_index, service.index_on_request],
        task_queue=queue, with_workflows=False,
    )  # fmt: skip
    question = "write an artifact file atomically"
    async with worker:
        code, out, err = await _remedy("index", "self", "--json", "--config", str(config_path))
        assert code == 0, err
        assert FALLBACK not in err and "model library loaded: False" in err, err
        indexed = json.loads(out)
        assert indexed["chunks"] > 20 and indexed["embedded"] == indexed["chunks"]
        # Which stage lines show depends on how long each stage lasted against the 0.5 s
        # poll (on a quiet machine the whole index takes less), so none is required here;
        # test_index_progress_moves_per_model_batch checks the progress itself.

        code, out, err = await _remedy(
            "search", "self", question, "--json", "--config", str(config_path)
        )
        assert code == 0, err
        assert FALLBACK not in err and "model library loaded: False" in err, err
        through_worker = json.loads(out)

        # The worker's refusal is the command's one-line error.
        code, out, err = await _remedy(
            "search", "self", "q", "--commit", "0000", "--config", str(config_path)
        )
        assert code == 1 and "--commit 0000: not one of the indexed commits" in err, err

    # The direct path, in this process, answers the same.
    with code_index(config) as index:
        direct = search(index, config, SearchRequest(service="self", query=question))
    assert through_worker == direct.model_dump(mode="json")
    assert "ArtifactStore.put_bytes" in [hit["symbol"] for hit in through_worker["hits"][:3]]


def test_index_progress_moves_per_model_batch(tmp_path: Path) -> None:
    repo = _remedy_subtree(tmp_path, ("artifacts.py", "names.py", "index/chunking.py"))
    config_path = tmp_path / "remedy.toml"
    config_path.write_text(f'home = "home"\n\n[services.self]\nrepo = "{repo}"\n')
    config = load_config(config_path)
    calls: list[tuple[str, int, int]] = []
    with code_index(config) as index:
        result = index.index(
            str(repo), repo, git(repo, "rev-parse", "HEAD"), progress=lambda *c: calls.append(c)
        )
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["scanning", "chunking", "embedding", "recording"]
    embedded = [done for stage, done, _ in calls if stage == "embedding"]
    size = config.embeddings.batch_size
    batches = math.ceil(result.embedded / size)
    assert batches > 1
    assert embedded == [min(result.embedded, n * size) for n in range(batches + 1)]
