"""How every process reaches Temporal: connection settings and the data converter.

Connection settings come from remedy.toml's [temporal], overridden by whatever
`temporalio.envconfig` finds (temporal.toml profiles, TEMPORAL_ADDRESS, TEMPORAL_API_KEY ...),
so Temporal Cloud needs no new code. The intake, the CLI and the worker each pass these to
`Client.connect`; this module holds no client itself.
"""

from __future__ import annotations

from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig

from remedy.config import RemedyConfig, secret


def connect_options(config: RemedyConfig) -> dict[str, Any]:
    """Keyword arguments for `temporalio.client.Client.connect`."""
    options: dict[str, Any] = {
        "target_host": config.temporal.address,
        "namespace": config.temporal.namespace,
        "data_converter": data_converter(config),
    }
    # Only what a profile or TEMPORAL_* variable actually sets overrides remedy.toml.
    loaded = ClientConfig.load_client_connect_config(profile=config.temporal.profile)
    options.update({key: value for key, value in loaded.items() if value})
    api_key = secret(config.temporal.api_key_env)
    if api_key:
        options["api_key"] = api_key
        options.setdefault("tls", True)
    return options


def data_converter(config: RemedyConfig) -> DataConverter:
    """The converter every client, worker and replayer uses: pydantic models as JSON."""
    return pydantic_data_converter
