"""Options and helpers every `remedy` sub-command shares."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from remedy.config import DEFAULT_CONFIG_PATH, ConfigError, RemedyConfig, load_config

if TYPE_CHECKING:
    from temporalio.client import Client

T = TypeVar("T")

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Path to remedy.toml", envvar="REMEDY_CONFIG"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]

DEFAULT_CONFIG = DEFAULT_CONFIG_PATH


def load_or_exit(path: Path) -> RemedyConfig:
    """Load the config or print the one clear problem and exit 2 (usage error)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_with_temporal(config: RemedyConfig, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work` with a client; no Temporal, or an RPC it refuses, is one line and exit 1."""
    from temporalio.service import RPCError

    from remedy.temporal import TemporalUnreachable, address_of
    from starter.temporal_client import cli_message, with_client

    try:
        return asyncio.run(with_client(config, work))
    except TemporalUnreachable as exc:
        raise fail(cli_message(exc)) from None
    except RPCError as exc:
        raise fail(f"Temporal at {address_of(config)} refused the call: {exc.message}") from None


class WholeHelpGroup(TyperGroup):
    """Lists each command with its whole first sentence, wrapped, never cut to '...'."""

    # Any: typer vendors click (typer._click) and keeps its types private.
    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [
            (name, command.get_short_help_str(limit=sys.maxsize))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
