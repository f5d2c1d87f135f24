"""One way to reach Temporal for every process: intake, CLI and worker.

Connection settings come from remedy.toml's [temporal], overridden by whatever
`temporalio.envconfig` finds (temporal.toml profiles, TEMPORAL_ADDRESS, TEMPORAL_API_KEY ...),
so Temporal Cloud needs no new code.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from remedy.config import RemedyConfig, secret


def connect_options(config: RemedyConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "target_host": config.temporal.address,
        "namespace": config.temporal.namespace,
    }
    # Only what a profile or TEMPORAL_* variable actually sets overrides remedy.toml.
    loaded = ClientConfig.load_client_connect_config(profile=config.temporal.profile)
    options.update({key: value for key, value in loaded.items() if value})
    api_key = secret(config.temporal.api_key_env)
    if api_key:
        options["api_key"] = api_key
        options.setdefault("tls", True)
    return options


async def connect(config: RemedyConfig) -> Client:
    return await Client.connect(**connect_options(config), data_converter=pydantic_data_converter)
