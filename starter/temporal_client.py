"""The starter's Temporal client: one per process (intake, CLI), built from remedy.temporal.

Temporal may be down, or not up yet: long-running processes wait for it (`connect_retrying`,
`connect_in_background`), a CLI command says so in one line (`TemporalUnreachable`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from remedy.config import RemedyConfig
from remedy.temporal import connect_options

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 10.0


class TemporalUnreachable(ConnectionError):
    """No Temporal server answers at the configured address."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"Temporal at {address} unreachable ({reason})")
        self.address = address
        self.reason = reason

    def cli_message(self) -> str:
        return f"{self}; is `remedy dev` running?"


def _reason(exc: BaseException) -> str:
    """The OS's words from the Rust client's error chain ('Connection refused'), else its text."""
    text = exc.message if isinstance(exc, RPCError) else str(exc)
    found = re.findall(r'(?:message|error): "([^"]+)"', text)
    if found:
        return found[-1]
    return text.removeprefix("Failed client connect: ").splitlines()[0][:200] or type(exc).__name__


def address_of(config: RemedyConfig) -> str:
    return str(connect_options(config)["target_host"])


async def connect(config: RemedyConfig, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    options = connect_options(config)
    address = str(options["target_host"])
    try:
        return await asyncio.wait_for(Client.connect(**options), timeout_s)
    except TimeoutError:
        raise TemporalUnreachable(address, f"no answer within {timeout_s:.0f} s") from None
    except (RuntimeError, RPCError) as exc:
        raise TemporalUnreachable(address, _reason(exc)) from None


async def connect_retrying(
    config: RemedyConfig,
    *,
    first_delay_s: float = RETRY_FIRST_DELAY_S,
    max_delay_s: float = RETRY_MAX_DELAY_S,
) -> Client:
    """Connect, waiting as long as it takes: a log line per failed try, the delay doubling."""
    delay = first_delay_s
    waited = False
    while True:
        try:
            client = await connect(config)
        except TemporalUnreachable as exc:
            log.warning("%s, retrying in %.0fs", exc, delay)
            waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if waited:
            log.info("connected to Temporal at %s", address_of(config))
        return client


def connect_in_background(
    config: RemedyConfig, connected: Callable[[Client], None]
) -> asyncio.Task[None]:
    """Keep trying in a task (cancel it to give up); `connected` gets the client once it is up."""

    async def _connect() -> None:
        connected(await connect_retrying(config))

    return asyncio.create_task(_connect(), name="connect-temporal")


async def with_client(config: RemedyConfig, work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect and run `work`; Temporal going away at any point is TemporalUnreachable."""
    client = await connect(config)
    try:
        return await work(client)
    except RPCError as exc:
        if exc.status == RPCStatusCode.UNAVAILABLE:
            raise TemporalUnreachable(address_of(config), _reason(exc)) from None
        raise
