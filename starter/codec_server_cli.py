"""`remedy codec-server`: the command around starter.codec_server.

Starlette, protobuf and the codec load when the command runs, not when any `remedy`
command starts.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from starter.cli_common import DEFAULT_CONFIG, ConfigOption, fail, load_or_exit

log = logging.getLogger("starter.codec_server")


def register(app: typer.Typer) -> None:
    @app.command("codec-server")
    def codec_server(
        config: ConfigOption = DEFAULT_CONFIG,
        host: Annotated[str | None, typer.Option(help="Overrides [codec] server_host")] = None,
        port: Annotated[int | None, typer.Option(help="Overrides [codec] server_port")] = None,
    ) -> None:
        """Serve Temporal's remote codec endpoint (/encode, /decode) for the UI and CLI."""
        import uvicorn

        from remedy.temporal import payload_codec
        from starter.codec_server import cors_origins, create_codec_app, server_settings

        loaded = load_or_exit(config)
        try:
            listen, token = server_settings(loaded, host)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
        codec = payload_codec(loaded.codec)
        assert codec is not None  # enabled, checked above
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        details: dict[str, Any] = {
            "origins": cors_origins(loaded),
            "token": "required" if token else "none (loopback only)",
            "encrypts_with": codec.key_id,
        }
        log.info("codec server for namespace %r: %s", loaded.temporal.namespace, details)
        uvicorn.run(
            create_codec_app(loaded, codec, token),
            host=listen,
            port=port or loaded.codec.server_port,
            log_level="info",
        )
