"""`remedy`: the command line. Each command loads remedy.toml (`--config`) first."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

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
from starter.incidents_cli import incidents_app

# Help text is plain: rich markup would swallow the bracketed words it quotes from
# remedy.toml ([temporal], [services.<name>.cli_approvers]).
app = typer.Typer(
    cls=WholeHelpGroup,
    name="remedy",
    help="Turn production errors into reviewed pull requests, durably (Temporal).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(incidents_app, name="incidents")


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"remedy {version('remedy')}")
    except PackageNotFoundError:
        raise fail("the remedy distribution is not installed (pip install -e .)") from None
    raise typer.Exit()


@app.callback()
def _remedy(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """Turn production errors into reviewed pull requests, durably (Temporal)."""


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# ---------------------------------------------------------------------------- processes


@app.command()
def dev(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run everything embedded: Temporal dev server + UI, a worker and the intake."""
    from starter.dev import run_dev

    loaded = load_or_exit(config)
    raise typer.Exit(run_dev(loaded, config))


@app.command()
def worker(
    config: ConfigOption = DEFAULT_CONFIG,
    role: Annotated[
        str,
        typer.Option(
            help="all: every workflow and activity; main: all but the code index; "
            "index: only the code index ([temporal] index_task_queue)"
        ),
    ] = "all",
) -> None:
    """Run a worker until SIGTERM/SIGINT (running activities get time to finish)."""
    import worker as worker_module

    loaded = load_or_exit(config)
    if role not in worker_module.ROLES:
        raise fail(f"--role must be one of {', '.join(worker_module.ROLES)}, not {role!r}", 2)
    if role != "all" and not loaded.temporal.index_task_queue:
        raise fail(
            f"--role {role} needs [temporal] index_task_queue (or "
            "REMEDY_TEMPORAL__INDEX_TASK_QUEUE): without it one worker serves everything",
            2,
        )
    _logging()
    worker_module.main(loaded, role)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Overrides [intake].host")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides [intake].port")] = None,
) -> None:
    """Run the HTTP intake (POST /v1/errors, /docs)."""
    import uvicorn

    from starter.app import create_app

    loaded = load_or_exit(config)
    _logging()
    uvicorn.run(
        create_app(loaded),
        host=host or loaded.intake.host,
        port=port or loaded.intake.port,
        log_level="info",
    )


# ---------------------------------------------------------------------------- reporting


@app.command()
def report(
    config: ConfigOption = DEFAULT_CONFIG,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A JSON error event ('-' for stdin)")
    ] = None,
    service: Annotated[str | None, typer.Option(help="Service name (remedy.toml)")] = None,
    error_type: Annotated[str | None, typer.Option("--type", help="Exception type")] = None,
    message: Annotated[str, typer.Option(help="Error message")] = "",
    traceback_file: Annotated[
        Path | None, typer.Option("--traceback", help="File with the traceback text ('-': stdin)")
    ] = None,
    release: Annotated[str | None, typer.Option(help="Deployed git commit")] = None,
    code: Annotated[str | None, typer.Option(help="Error code, e.g. DB5001")] = None,
    environment: Annotated[str | None, typer.Option(help="e.g. prod")] = None,
    url: Annotated[str | None, typer.Option(help="Intake URL (default from [intake])")] = None,
) -> None:
    """Send an error event to the intake, from a file or from flags."""
    from starter.client import IntakeClient, IntakeRejected

    loaded = load_or_exit(config)
    if file is not None:
        raw = sys.stdin.read() if str(file) == "-" else _read(file)
        try:
            event: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise fail(f"{file}: not valid JSON: {exc}", 2) from None
        if not isinstance(event, dict):
            raise fail(f"{file}: must hold a JSON object", 2)
    else:
        if not service or not error_type or traceback_file is None:
            raise fail("give --file EVENT.json, or --service, --type and --traceback", 2)
        event = {"service": service, "error": {"type": error_type, "message": message}}
        event["traceback"] = (
            sys.stdin.read() if str(traceback_file) == "-" else _read(traceback_file)
        )
        for key, value in {"release": release, "environment": environment}.items():
            if value:
                event[key] = value
        if code:
            event["error"]["code"] = code
    client = IntakeClient.from_config(loaded, url=url)
    try:
        response = client.report(event)
    except IntakeRejected as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(response, indent=2))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror}", 2) from None


@app.command()
def dsn(
    service: Annotated[str, typer.Argument(help="Service name (remedy.toml)")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print the service's Sentry DSN: its Sentry SDK reports to Remedy with `dsn=` set to it."""
    from remedy.config import ConfigError
    from remedy.intake_formats.sentry_auth import dsn_for

    loaded = load_or_exit(config)
    try:
        typer.echo(dsn_for(loaded, service))
    except ConfigError as exc:
        raise fail(str(exc)) from None


@app.command()
def deployed(
    service: Annotated[str, typer.Argument(help="Service name (remedy.toml)")],
    release: Annotated[str, typer.Argument(help="The release that now runs (commit sha or tag)")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: JsonOption = False,
) -> None:
    """Say that a release of the service now runs: its incidents that follow a change check
    whether it holds their fix (what POST /v1/deploys does for a deploy pipeline)."""
    from pydantic import ValidationError

    from remedy.models import DeployRequest, DeployResponse
    from starter.deploys import announce_release

    loaded = load_or_exit(config)
    if service not in loaded.services:
        known = ", ".join(sorted(loaded.services)) or "none"
        raise fail(f"{loaded.source}: no service {service!r} in [services] (known: {known})", 2)
    try:
        DeployRequest(service=service, release=release)
    except ValidationError as exc:
        raise fail(f"RELEASE {release!r}: {exc.errors()[0]['msg']}", 2) from None
    told = run_with_temporal(
        loaded, lambda client: announce_release(client, service, release, "deploy")
    )
    if as_json:
        answer = DeployResponse(service=service, release=release, incidents=told)
        typer.echo(answer.model_dump_json())
    elif told:
        typer.echo(f"told {len(told)} incident(s) of {service} that {release} runs:")
        for incident in told:
            typer.echo(f"  {incident}")
    else:
        typer.echo(f"no incident of {service} follows a change; nobody to tell of {release}")


def _decide(
    config: Path, incident_id: str, decision: str, approver: str, reason: str | None
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from remedy.models import IncidentStatus
    from starter.cli_approval import ApprovalRefused, check_cli_approver
    from starter.incidents import IncidentNotFound, decide

    loaded = load_or_exit(config)

    def authorize(status: IncidentStatus) -> None:
        check_cli_approver(loaded, status.service, approver)

    try:
        result = run_with_temporal(
            loaded,
            lambda client: decide(
                client, incident_id, decision, approver, reason, authorize=authorize
            ),
        )
    except IncidentNotFound as exc:
        raise fail(str(exc)) from None
    except ApprovalRefused as exc:
        raise fail(f"refused: {exc}") from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise fail(f"refused: {getattr(cause, 'message', None) or cause}") from None
    done = {"approve": "approved", "reject": "rejected"}[result.decision.decision]
    typer.echo(f"{done} {result.incident_id} as {result.decision.approver}")


@app.command()
def approve(
    incident_id: Annotated[str, typer.Argument(help="Incident id")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id (services.*.approvers)")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Approve the proposed change; Remedy then opens the branch / pull request."""
    _decide(config, incident_id, "approve", approver, None)


@app.command()
def reject(
    incident_id: Annotated[str, typer.Argument(help="Incident id")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id (services.*.approvers)")],
    reason: Annotated[str, typer.Option(help="Why (kept with the incident)")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Reject the proposed change; nothing is pushed."""
    _decide(config, incident_id, "reject", approver, reason)


@app.command("approver-hash")
def approver_hash(
    approver: Annotated[str, typer.Argument(help="The approver id the line is for")],
    generate: Annotated[
        bool, typer.Option(help="Make a new random credential (printed once, on stderr)")
    ] = False,
) -> None:
    """Print the remedy.toml line holding the hash of an approver's CLI credential.

    The credential comes from REMEDY_APPROVER_TOKEN, a hidden prompt, or --generate; only its
    salted scrypt hash is printed, for [services.<name>.cli_approvers].
    """
    import secrets

    from remedy.config import secret
    from starter.cli_approval import APPROVER_TOKEN_ENV, hash_credential

    if generate:
        token = secrets.token_urlsafe(32)
        typer.echo(f"export {APPROVER_TOKEN_ENV}={token}", err=True)
    else:
        token = secret(APPROVER_TOKEN_ENV) or typer.prompt(
            f"{approver}'s credential", hide_input=True, confirmation_prompt=True, err=True
        )
    if len(token) < 12:
        raise fail("a credential needs at least 12 characters (--generate makes one)", 2)
    key = approver if re.fullmatch(r"[A-Za-z0-9_-]+", approver) else json.dumps(approver)
    typer.echo(f"{key} = {json.dumps(hash_credential(token))}")
    typer.echo(
        f"# under [services.<name>.cli_approvers]; `remedy approve` reads the credential "
        f"from {APPROVER_TOKEN_ENV}",
        err=True,
    )


# ---------------------------------------------------------------------------- demo


@app.command()
def demo(
    config: ConfigOption = DEFAULT_CONFIG,
    keep: Annotated[bool, typer.Option(help="Keep the stack running afterwards (Ctrl-C)")] = False,
    approve_as: Annotated[
        str | None,
        typer.Option("--approve-as", help="Approve the proposed fix as this approver (CLI path)"),
    ] = None,
    until_done: Annotated[
        bool, typer.Option(help="Wait past awaiting_approval (e.g. for a click in Slack)")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the incident")] = 180.0,
    as_json: JsonOption = False,
) -> None:
    """Make a sample service with a real bug, crash it, report it and show the incident."""
    from starter.demo import run_demo

    loaded = load_or_exit(config)
    raise typer.Exit(
        run_demo(
            loaded,
            config,
            keep=keep,
            as_json=as_json,
            approve_as=approve_as,
            until_done=until_done,
            timeout_s=timeout,
        )
    )


def _register_plugins() -> None:
    from starter.codec_server_cli import register as register_codec_server
    from starter.index_cli import register as register_index
    from starter.stats_cli import register as register_stats
    from starter.watch_cli import register as register_watch

    register_index(app)
    register_watch(app)
    register_stats(app)
    register_codec_server(app)


_register_plugins()


def main() -> None:
    """Run the command, then leave without interpreter finalization.

    The Temporal client's Rust runtime keeps threads that can crash CPython's finalization of
    a short-lived process (a segfault after the command's output, seen here on `remedy demo`;
    temporalio/sdk-python#300). Every command has finished its own shutdown by now, so only
    the standard streams and logging need flushing.
    """
    try:
        app()
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    if (tracing := sys.modules.get("remedy.tracing")) is not None:
        # Only a process that traced has spans to send; the others skip importing the SDK.
        tracing.flush_spans()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`remedy ... | head`): nobody is left to read it.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
