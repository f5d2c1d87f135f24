"""Options and helpers every `remedy` sub-command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from remedy.config import DEFAULT_CONFIG_PATH, ConfigError, RemedyConfig, load_config

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
