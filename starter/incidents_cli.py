"""`remedy incidents list|show|diff`: what is open, and what an approver is asked to approve."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from starter.cli_common import (
    DEFAULT_CONFIG,
    ConfigOption,
    JsonOption,
    WholeHelpGroup,
    fail,
    load_or_exit,
    run_with_temporal,
)

if TYPE_CHECKING:
    from remedy.config import RemedyConfig
    from remedy.models import IncidentStatus

incidents_app = typer.Typer(
    cls=WholeHelpGroup,
    help="Inspect incidents (Temporal visibility + the status query).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@incidents_app.command("list")
def incidents_list(
    config: ConfigOption = DEFAULT_CONFIG,
    service: Annotated[str | None, typer.Option(help="Only this service")] = None,
    phase: Annotated[
        str | None, typer.Option(help="Only this phase, e.g. awaiting_approval")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="Only this severity, e.g. high")] = None,
    limit: Annotated[int, typer.Option(help="At most this many", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List incidents, newest first: id and phase, then error, service, severity, count."""
    import shutil

    from remedy.models import Phase
    from remedy.render.terminal import render_incident_list
    from remedy.service_policy import Severity
    from starter.incidents import list_incidents

    loaded = load_or_exit(config)
    _one_of("--service", service, list(loaded.services))
    _one_of("--phase", phase, [p.value for p in Phase])
    _one_of("--severity", severity, [s.value for s in Severity])
    found = run_with_temporal(
        loaded,
        lambda client: list_incidents(
            client, service=service, phase=phase, severity=severity, limit=limit
        ),
    )
    if as_json:
        typer.echo(json.dumps([item.model_dump(mode="json") for item in found], indent=2))
        return
    typer.echo(render_incident_list(found, width=shutil.get_terminal_size().columns))


def _one_of(option: str, value: str | None, accepted: list[str]) -> None:
    """A filter value nothing can match is a usage error, not an empty list."""
    if value is not None and value not in accepted:
        raise fail(
            f"{option} {value!r} is not one of: {', '.join(accepted) or '(none configured)'}", 2
        )


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[str, typer.Argument(help="Incident id (from list or the 202 reply)")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Show one incident and the change it proposes: the code around the failing frame, the
    diff, the regression test and the end of the verification output."""
    from remedy.artifacts import ArtifactStore
    from remedy.render.terminal import render_status
    from remedy.review import incident_json, review_of

    loaded = load_or_exit(config)
    status = _status_or_exit(loaded, incident_id)
    store = ArtifactStore(loaded.artifacts_dir)
    if as_json:
        # ASCII only: a bidi override or escape in the error text stays an escape here too.
        typer.echo(json.dumps(incident_json(status, store), indent=2))
    else:
        typer.echo(render_status(status, review_of(status, store)))


@incidents_app.command("diff")
def incidents_diff(
    incident_id: Annotated[str, typer.Argument(help="Incident id (from list or the 202 reply)")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print the proposed patch alone, as a unified diff (`| git apply --check`)."""
    from remedy.artifacts import ArtifactStore
    from remedy.render.sanitize import visible
    from remedy.review import review_of

    loaded = load_or_exit(config)
    status = _status_or_exit(loaded, incident_id)
    diff = review_of(status, ArtifactStore(loaded.artifacts_dir)).diff
    if diff.text is None:
        raise fail(f"incident {incident_id}: {diff.missing}")
    # Into a pipe as stored; onto a terminal with its invisible characters shown.
    typer.echo(visible(diff.text) if sys.stdout.isatty() else diff.text, nl=False)


def _status_or_exit(loaded: RemedyConfig, incident_id: str) -> IncidentStatus:
    from starter.incidents import IncidentNotFound, incident_status

    try:
        return run_with_temporal(loaded, lambda client: incident_status(client, incident_id))
    except IncidentNotFound as exc:
        raise fail(str(exc)) from None
