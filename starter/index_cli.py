"""`remedy index` and `remedy search`: build and ask the code index from the command line.

Heavy libraries (torch, sentence-transformers, Qdrant) load inside the commands, so
`remedy --help` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from starter.cli_common import DEFAULT_CONFIG, ConfigOption, JsonOption, fail, load_or_exit

if TYPE_CHECKING:
    from remedy.config import RemedyConfig
    from remedy.index.core import CodeIndex
    from remedy.index.store import VectorStore
    from remedy.models import IndexResult


def _checkout_for_service(
    config: RemedyConfig, service: str, commit: str | None
) -> tuple[Path, str]:
    """The service's mirror (fetched now) and the commit to index: `commit` or the branch head."""
    from remedy.git.mirror import locked, mirror_for, update_mirror
    from remedy.git.runner import GitError, resolve_commit

    branch = config.service(service).branch
    mirror = mirror_for(config, service)
    try:
        with locked(mirror):
            update_mirror(mirror, float(config.limits.sync_timeout_s))
    except GitError as exc:
        raise fail(f"fetching {service} from {mirror.public_location}: {exc}") from None
    rev = commit or f"refs/heads/{branch}"
    sha = resolve_commit(mirror.path, rev)
    if sha is None:
        what = f"commit {commit!r}" if commit else f"branch {branch!r}"
        raise fail(
            f"{what} is not in {mirror.public_location} (pass an existing --commit, or fix "
            f"services.{service}.branch)"
        )
    return mirror.path, sha


def _checkout_for_path(repo: Path, commit: str | None) -> tuple[Path, str]:
    from remedy.git.runner import resolve_commit

    if not repo.is_dir():
        raise fail(f"--repo {repo}: no such directory (pass a local git checkout)")
    sha = resolve_commit(repo, commit or "HEAD")
    if sha is None:
        raise fail(
            f"--repo {repo}: {commit or 'HEAD'!r} names no commit there (pass a git checkout "
            f"with at least one commit, or an existing --commit)"
        )
    return repo.resolve(), sha


def index(
    service: Annotated[
        str | None, typer.Argument(help="Service from remedy.toml (its branch head)")
    ] = None,
    repo: Annotated[
        Path | None, typer.Option("--repo", help="Index a local git checkout instead")
    ] = None,
    commit: Annotated[
        str | None, typer.Option("--commit", help="Commit to index (default: head)")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Bring the code index up to a commit, embedding only chunks it has never seen."""
    if (service is None) == (repo is None):
        raise fail("pass exactly one of SERVICE or --repo PATH", code=2)
    loaded = load_or_exit(config)
    if service is not None and service not in loaded.services:
        raise fail(f"{loaded.source}: no service {service!r} in [services]", code=2)

    from remedy.index.core import code_index, repo_key
    from remedy.index.store import StoreError

    if service is not None:
        checkout, sha = _checkout_for_service(loaded, service, commit)
        key = repo_key(loaded, service, str(checkout))
    elif repo is not None:
        checkout, sha = _checkout_for_path(repo, commit)
        key = repo_key(loaded, None, str(checkout))
    try:
        with code_index(loaded, _store_for(loaded, f"`remedy index {service or repo}`")) as code:
            if as_json or not sys.stderr.isatty():
                result = code.index(key, checkout, sha)
            else:
                result = _index_with_bar(code, key, checkout, sha)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(
        f"{result.repo} @ {result.commit[:12]}: {result.chunks} chunks in {result.files} files "
        f"({result.embedded} embedded, {result.reused} reused, {result.deleted} deleted) "
        f"in {result.seconds:.1f}s"
    )


def _store_for(config: RemedyConfig, holder: str) -> Callable[[], VectorStore]:
    """The store, opened saying who holds it; while another process holds it, one line on
    stderr says who that is (then one every 10 s), instead of a silent wait."""
    from remedy.index.store import open_vector_store

    last_said = [-math.inf]

    def say(other: str) -> None:
        if time.monotonic() - last_said[0] >= 10:
            typer.echo(f"waiting for the code index: in use by {other}", err=True)
            last_said[0] = time.monotonic()

    return lambda: open_vector_store(config, holder=holder, on_wait=say)


def _index_with_bar(code: CodeIndex, key: str, checkout: Path, sha: str) -> IndexResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("listing files", total=None)

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total or None)

        return code.index(key, checkout, sha, progress=update)


def search(
    service: Annotated[str, typer.Argument(help="Service from remedy.toml")],
    query: Annotated[str, typer.Argument(help="A question or identifiers, in plain words")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100)] = 8,
    commit: Annotated[
        str | None, typer.Option("--commit", help="An indexed commit (default: the latest)")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Ask the code index of SERVICE: hybrid (meaning + identifiers) search."""
    loaded = load_or_exit(config)
    if service not in loaded.services:
        raise fail(f"{loaded.source}: no service {service!r} in [services]", code=2)

    from remedy.index.core import code_index, repo_key
    from remedy.index.store import StoreError

    key = repo_key(loaded, service, "")
    try:
        with code_index(loaded, _store_for(loaded, f"`remedy search {service}`")) as code:
            indexed = code.indexed_commits(key)
            if not indexed:
                raise fail(f"{service} is not indexed yet (run `remedy index {service}` first)")
            target = indexed[-1]
            if commit:
                matches = [c for c in indexed if c.startswith(commit)]
                if len(matches) != 1:
                    raise fail(
                        f"--commit {commit}: not one of the indexed commits of {service} "
                        f"({', '.join(c[:12] for c in indexed)}; `remedy index {service} "
                        f"--commit SHA` adds one)"
                    )
                target = matches[0]
            hits = code.search(key, target, [query], limit)[:limit]
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        payload = {"service": service, "commit": target, "query": query,
                   "hits": [h.as_json() for h in hits]}  # fmt: skip
        typer.echo(json.dumps(payload, indent=2))
        return
    if not hits:
        typer.echo("no matches")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{service} @ {target[:12]}: {query}")
    table.add_column("score", justify="right")
    table.add_column("where")
    table.add_column("symbol")
    for hit in hits:
        where = f"{hit.path}:{hit.start_line}-{hit.end_line}"
        table.add_row(f"{hit.score:.3f}", where, hit.symbol or "")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add `index` and `search` to the `remedy` command line."""
    app.command(name="index")(index)
    app.command(name="search")(search)
