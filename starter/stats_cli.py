"""`remedy stats`: incidents per service and error type, and how far their fixes got."""

from __future__ import annotations

import json
import shutil
from typing import Annotated

import typer

from starter.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    JsonOption,
    load_or_exit,
    run_with_temporal,
)


def stats(
    config: ConfigOption = DEFAULT_CONFIG,
    service: Annotated[str | None, typer.Option(help="Only this service's incidents")] = None,
    as_json: JsonOption = False,
) -> None:
    """Count incidents and their fixes (proposed, approved, merged, held, failed) per service
    and error type, with the median time from the first report to the PR and to a held fix."""
    from remedy.stats import render_stats
    from starter.stats import stats as incident_stats

    loaded = load_or_exit(config)
    figures = run_with_temporal(loaded, lambda client: incident_stats(client, service=service))
    if as_json:
        typer.echo(json.dumps(figures.model_dump(mode="json"), indent=2))
        return
    typer.echo(render_stats(figures, width=min(shutil.get_terminal_size().columns, 80)))


def register(app: typer.Typer) -> None:
    """Add `stats` to the `remedy` command line."""
    app.command(name="stats")(stats)
