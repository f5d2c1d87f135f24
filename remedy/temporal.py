"""How every process reaches Temporal: connection settings and the data converter.

`data_converter` is the one converter of every client, worker, replayer and test: pydantic
models as JSON, and with [codec] enabled every payload (failure messages and stack traces
included) encrypted by remedy.codec, so Temporal's database holds only ciphertext.

Connection settings come from remedy.toml's [temporal], overridden by whatever
`temporalio.envconfig` finds (temporal.toml profiles, TEMPORAL_ADDRESS, TEMPORAL_API_KEY ...),
so Temporal Cloud needs no new code. The intake, the CLI and the worker each pass these to
`Client.connect` (through `reach`, which turns "nobody answers" into TemporalUnreachable, or
`reach_retrying`, which waits for Temporal to come up); this module holds no client itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError

from remedy.codec import EncryptionCodec, keys_from_environment
from remedy.config import CodecConfig, RemedyConfig, secret


def payload_codec(codec: CodecConfig) -> EncryptionCodec | None:
    """The codec [codec] asks for, its keys read from the environment now; None when off."""
    if not codec.enabled:
        return None
    return EncryptionCodec(keys_from_environment(codec.keys_env), codec.keys_env)


def data_converter(config: RemedyConfig | None = None) -> DataConverter:
    """Pydantic models as JSON, encrypted when [codec] is enabled. Without a config (tests,
    benchmarks, replayers) the defaults and REMEDY_* variables decide, so
    `REMEDY_CODEC__ENABLED=true` runs them encrypted too."""
    codec = payload_codec((config or RemedyConfig()).codec)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        # Failure messages and stack traces are not payloads unless moved into one.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


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
    # The OpenTelemetry SDK and Prometheus load only where they are enabled: every CLI
    # command connects through here, and a person waits for its start.
    if config.tracing.enabled:  # [tracing]: one trace per incident
        from remedy.tracing import client_interceptors

        options["interceptors"] = client_interceptors(config.tracing)
    if config.metrics.temporal_port is not None:  # the SDK's metrics
        from remedy.metrics import temporal_runtime

        options["runtime"] = temporal_runtime(config.metrics)
    api_key = secret(config.temporal.api_key_env)
    if api_key:
        options["api_key"] = api_key
        options.setdefault("tls", True)
    return options


log = logging.getLogger(__name__)

T = TypeVar("T")
Connect = Callable[..., Awaitable[T]]

CONNECT_TIMEOUT_S = 10.0
RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 10.0


class TemporalUnreachable(ConnectionError):
    """No Temporal server answers at the configured address."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"Temporal at {address} unreachable ({reason})")
        self.address = address
        self.reason = reason


def unreachable_reason(exc: BaseException) -> str:
    """The OS's words from the Rust client's error chain ('Connection refused'), else its text."""
    text = exc.message if isinstance(exc, RPCError) else str(exc)
    found = re.findall(r'(?:message|error): "([^"]+)"', text)
    if found:
        return found[-1]
    first_line = text.removeprefix("Failed client connect: ").partition("\n")[0]
    return first_line[:200] or type(exc).__name__


def address_of(config: RemedyConfig) -> str:
    return str(connect_options(config)["target_host"])


async def reach(
    connect: Connect[T], config: RemedyConfig, *, timeout_s: float = CONNECT_TIMEOUT_S
) -> T:
    """`connect(**connect_options(config))` (that is, `Client.connect`), or TemporalUnreachable."""
    options = connect_options(config)
    address = str(options["target_host"])
    try:
        return await asyncio.wait_for(connect(**options), timeout_s)
    except TimeoutError:
        raise TemporalUnreachable(address, f"no answer within {timeout_s:.0f} s") from None
    except (RuntimeError, RPCError) as exc:
        raise TemporalUnreachable(address, unreachable_reason(exc)) from None


async def reach_retrying(
    connect: Connect[T],
    config: RemedyConfig,
    *,
    first_delay_s: float = RETRY_FIRST_DELAY_S,
    max_delay_s: float = RETRY_MAX_DELAY_S,
) -> T:
    """`reach`, waiting as long as it takes: a log line per failed try, the delay doubling."""
    delay = first_delay_s
    waited = False
    while True:
        try:
            client = await reach(connect, config)
        except TemporalUnreachable as exc:
            log.warning("%s, retrying in %.0fs", exc, delay)
            waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if waited:
            log.info("connected to Temporal at %s", address_of(config))
        return client
