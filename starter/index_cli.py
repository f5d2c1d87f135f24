"""`remedy index` and `remedy search`: build and ask the code index from the command line.

Both ask the running index worker, which has the embedding model loaded (starter/
index_worker.py); with no stack running, or with `--local`, the command loads the model
itself. Heavy libraries (torch, sentence-transformers, Qdrant) load only then, so
`remedy --help` and a search through the worker stay fast.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from starter.cli_common import DEFAULT_CONFIG, ConfigOption, JsonOption, fail, load_or_exit

if TYPE_CHECKING:
    from remedy.config import RemedyConfig
    from remedy.index.service import IndexJob, SearchAnswer, SearchRequest
    from remedy.index.store import VectorStore
    from remedy.models import IndexResult

# How long `remedy index` through the worker may run (a cold index of a big repository).
INDEX_RUN_TIMEOUT_S = 6 * 3600.0
SEARCH_RUN_TIMEOUT_S = 120.0

T = TypeVar("T")

LocalOption = Annotated[
    bool,
    typer.Option(
        "--local", help="Load the embedding model in this process instead of asking the worker"
    ),
]


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
    local: LocalOption = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Bring the code index up to a commit, embedding only chunks it has never seen."""
    if (service is None) == (repo is None):
        raise fail("pass exactly one of SERVICE or --repo PATH", code=2)
    loaded = load_or_exit(config)
    if service is not None and service not in loaded.services:
        raise fail(f"{loaded.source}: no service {service!r} in [services]", code=2)

    from remedy import names
    from remedy.index.service import IndexJob
    from remedy.models import IndexResult
    from starter.index_progress import IndexProgress

    job = IndexJob(
        service=service, repo=str(repo.resolve()) if repo else None, commit=commit
    )  # fmt: skip
    with IndexProgress(bar=False if as_json else None) as shown:
        result = None
        if not local:
            result = _on_worker(
                loaded,
                names.ACTIVITY_INDEX_ON_REQUEST,
                job,
                IndexResult,
                run_timeout_s=INDEX_RUN_TIMEOUT_S,
                attempts=3,
                on_details=shown.details,
            )
        if result is None:
            result = _index_here(loaded, job, shown.update)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(
        f"{result.repo} @ {result.commit[:12]}: {result.chunks} chunks in {result.files} files "
        f"({result.embedded} embedded, {result.reused} reused, {result.deleted} deleted) "
        f"in {result.seconds:.1f}s"
    )


def _on_worker(
    config: RemedyConfig, activity: str, arg: Any, result_type: type[T], **options: Any
) -> T | None:
    """The index worker's answer; None when no stack runs (the command then works here)."""
    from starter.index_worker import WorkerRefused, ask

    try:
        return ask(config, activity, arg, result_type, **options)
    except WorkerRefused as exc:
        raise fail(str(exc)) from None


def _index_here(
    config: RemedyConfig, job: IndexJob, progress: Callable[[str, int, int], None]
) -> IndexResult:
    from remedy.index.core import code_index
    from remedy.index.service import IndexRefused, run_index
    from remedy.index.store import StoreError

    what = f"`remedy index {job.service or job.repo}`"
    try:
        return run_index(
            lambda: code_index(config, _store_for(config, what)), config, job, progress
        )
    except (IndexRefused, StoreError) as exc:
        raise fail(str(exc)) from None


def _store_for(
    config: RemedyConfig, holder: str
) -> Callable[[], contextlib.AbstractContextManager[VectorStore]]:
    """The store, opened saying who holds it and closed after; while another process holds
    it, one line on stderr says who that is (then one every 10 s), instead of a silent wait."""
    from remedy.index.store import open_vector_store

    last_said = [-math.inf]

    def say(other: str) -> None:
        if time.monotonic() - last_said[0] >= 10:
            typer.echo(f"waiting for the code index: in use by {other}", err=True)
            last_said[0] = time.monotonic()

    return lambda: contextlib.closing(open_vector_store(config, holder=holder, on_wait=say))


def search(
    service: Annotated[str, typer.Argument(help="Service from remedy.toml")],
    query: Annotated[str, typer.Argument(help="A question or identifiers, in plain words")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100)] = 8,
    commit: Annotated[
        str | None, typer.Option("--commit", help="An indexed commit (default: the latest)")
    ] = None,
    local: LocalOption = False,
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Ask the code index of SERVICE: hybrid (meaning + identifiers) search."""
    loaded = load_or_exit(config)
    if service not in loaded.services:
        raise fail(f"{loaded.source}: no service {service!r} in [services]", code=2)

    from remedy import names
    from remedy.index.service import SearchAnswer, SearchRequest

    request = SearchRequest(service=service, query=query, limit=limit, commit=commit)
    answer = None
    if not local:
        answer = _on_worker(
            loaded,
            names.ACTIVITY_SEARCH_INDEX,
            request,
            SearchAnswer,
            run_timeout_s=SEARCH_RUN_TIMEOUT_S,
        )
    if answer is None:
        answer = _search_here(loaded, request)
    if as_json:
        typer.echo(answer.model_dump_json(indent=2))
        return
    if not answer.hits:
        typer.echo("no matches")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from remedy.render.sanitize import visible

    table = Table(title=Text(visible(f"{service} @ {answer.commit[:12]}: {query}")))
    table.add_column("score", justify="right")
    table.add_column("where")
    table.add_column("symbol")
    for hit in answer.hits:
        where = f"{hit['path']}:{hit['start_line']}-{hit['end_line']}"
        table.add_row(
            f"{hit['score']:.3f}", Text(visible(where)), Text(visible(hit["symbol"] or ""))
        )
    Console().print(table)


def _search_here(config: RemedyConfig, request: SearchRequest) -> SearchAnswer:
    from remedy.index.core import code_index
    from remedy.index.service import IndexRefused, search
    from remedy.index.store import StoreError

    try:
        with code_index(config, _store_for(config, f"`remedy search {request.service}`")) as code:
            return search(code, config, request)
    except (IndexRefused, StoreError) as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add `index` and `search` to the `remedy` command line."""
    app.command(name="index")(index)
    app.command(name="search")(search)
