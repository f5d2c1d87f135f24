"""`remedy index` then `remedy search` on Remedy's own code: plain questions find the function."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from starter.index_cli import register
from tests.repos import git
from tests.test_index import store_held_by_another_process

ROOT = Path(__file__).resolve().parent.parent

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


def test_index_then_search_remedy_itself(tmp_path: Path, app: typer.Typer) -> None:
    # Part of Remedy's domain package as a repository of its own keeps the test to seconds.
    repo = tmp_path / "self"
    for name in SUBTREE:
        (repo / "remedy" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "remedy" / name, repo / "remedy" / name)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "import")
    config = tmp_path / "remedy.toml"
    config.write_text(f'home = "home"\n\n[services.self]\nrepo = "{repo}"\n')
    runner = CliRunner()

    indexed = runner.invoke(app, ["index", "self", "--json", "--config", str(config)])
    assert indexed.exit_code == 0, indexed.output
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
        top = [hit["symbol"] for hit in json.loads(found.stdout)["hits"][:3]]
        assert expected in top, f"{question!r}: {top}"


def test_index_and_search_explain_what_is_wrong(tmp_path: Path, app: typer.Typer) -> None:
    config = tmp_path / "remedy.toml"
    config.write_text(f'home = "home"\n\n[services.shop]\nrepo = "{tmp_path / "shop"}"\n')
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
    config.write_text(f'home = "home"\n\n[services.small]\nrepo = "{repo}"\n')

    with store_held_by_another_process(tmp_path / "home" / "index", 3):
        indexed = CliRunner().invoke(app, ["index", "small", "--json", "--config", str(config)])

    assert indexed.exit_code == 0, indexed.output
    assert "waiting for the code index: in use by `remedy index big` (pid " in indexed.stderr
    assert json.loads(indexed.stdout)["chunks"] >= 1
