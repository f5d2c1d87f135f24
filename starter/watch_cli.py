"""`remedy watch`: the command around starter.watch.Watcher."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from remedy.watch.tail import WatchError
from starter.cli_common import DEFAULT_CONFIG, ConfigOption, fail, load_or_exit
from starter.watch import Watcher

OnceOption = Annotated[
    bool,
    typer.Option(
        "--once",
        help="Read what the log files hold now, report it, and exit (cron, tests); "
        "exits 1 if the intake could not take a record, which the next run sends again",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    def watch(config: ConfigOption = DEFAULT_CONFIG, once: OnceOption = False) -> None:
        """Tail the log files in each service's log_paths and report their errors."""
        loaded = load_or_exit(config)
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request
        try:
            watcher = Watcher(loaded, once=once)
        except WatchError as exc:
            raise fail(str(exc), 2) from None

        def stop(signum: int, _: FrameType | None) -> None:
            watcher.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        code = watcher.run()
        totals = watcher.totals
        typer.echo(f"reported {totals.reported} error(s), skipped {totals.skipped}", err=True)
        raise typer.Exit(code)
