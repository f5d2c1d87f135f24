"""`remedy watch`: the command around starter.watch.Watcher.

The watcher (httpx, tenacity, the log formats) loads when the command runs, not when any
`remedy` command starts.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from starter.cli_common import DEFAULT_CONFIG, ConfigOption, fail, load_or_exit

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
        from remedy.watch.tail import WatchError
        from starter.watch import Watcher

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
